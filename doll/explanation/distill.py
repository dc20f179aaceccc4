"""Distillation: explanation maps of several classifiers -> one uint8 saliency per class.

Algorithm (parameters in brackets, stored in the label file's attributes):

1. keep the positive part of each signed attribution map [``sign=positive``, or
   ``absolute``];
2. smooth it with a Gaussian of sigma = ``smooth`` x image size [0.03];
3. normalise it robustly: divide by its 99th percentile and clip to [0, 1] (a map with
   no positive evidence stays 0);
4. average the normalised maps of the ensemble members; with ``--lung-model``, multiply
   by the lung field that model predicts for the image (dilated by ``--field-margin``, 1 % of the size);
5. quantise to uint8 (0-255): the ``saliency`` dataset.

It runs in torch on the device that explained the maps (``doll explain`` distils a block's
maps on its GPU, so the CPU only compresses and writes them; issue 37), batched over the
block's maps, and gives OpenCV's and NumPy's numbers: the Gaussian is OpenCV's kernel
(``cv2.getGaussianKernel``, 8 sigma + 1 taps, borders reflected as ``BORDER_REFLECT_101``)
applied as two matrix products, the percentile is NumPy's linear one from two exact order
statistics (``topk``). Against ``cv2.GaussianBlur`` + ``np.percentile`` (the code before
2026-12-06) on real IG maps, 16 of 3.2 million saliency values differ, each by 1 of 255, and
no otsu label (COVID-QU-Ex, 64 images, 2 ResNet-18 members, 224 px;
``benchmarks/distill_device.py``, docs/results.md).

The label rule that turns saliency into pixel labels is a property of the label file and
lives in :mod:`doll.labels.rule` (re-exported here for the code that imports it from here).
"""
from __future__ import annotations

import functools

import cv2
import numpy as np
import torch

from doll.errors import DollError
from doll.labels.rule import DEFAULT_RULE, apply_rule, check_rule  # noqa: F401 - re-exported (see above)

SIGNS = ("positive", "absolute")
PERCENTILE = 99.0
MAPS_PER_STEP = 256  # maps normalised at once: bounds the device memory a block's distillation takes


def reflected_index(n: int, pad: int) -> np.ndarray:
    """Indices of ``range(-pad, n + pad)`` folded back into ``range(n)`` as OpenCV's
    ``BORDER_REFLECT_101`` does (``gfedcb|abcdefgh|gfedcba``), for any ``pad``."""
    i = np.arange(-pad, n + pad)
    if n == 1:
        return np.zeros_like(i)
    period = 2 * (n - 1)
    i = np.abs(i) % period
    return np.where(i >= n, period - i, i)


@functools.lru_cache(maxsize=8)
def _gaussian_matrix(n: int, sigma: float) -> np.ndarray:
    taps = int(round(sigma * 8 + 1)) | 1  # cv2.GaussianBlur's kernel size for float images, ksize (0, 0)
    kernel = cv2.getGaussianKernel(taps, sigma, cv2.CV_64F)[:, 0]
    index = reflected_index(n, taps // 2)
    matrix = np.zeros((n, n))
    for out in range(n):  # output pixel `out` sums input pixels index[out:out + taps] with the kernel's weights
        np.add.at(matrix[out], index[out:out + taps], kernel)
    return matrix


def gaussian_matrix(n: int, sigma: float, device: torch.device, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(n, n) matrix G such that ``G @ a @ G.T`` blurs an (n, n) map ``a`` as
    ``cv2.GaussianBlur(a, (0, 0), sigma)`` does."""
    return torch.from_numpy(_gaussian_matrix(n, float(sigma))).to(device, dtype)


def percentile(flat: torch.Tensor, q: float = PERCENTILE) -> torch.Tensor:
    """Per row of ``flat`` (M, N), ``np.percentile(row, q)`` (linear interpolation, with
    NumPy's arithmetic), from the two order statistics around it."""
    n = flat.shape[1]
    pos = q / 100 * (n - 1)
    lo = int(np.floor(pos))
    t = pos - lo
    hi = min(lo + 1, n - 1)
    # the n - lo largest values hold both order statistics (cheaper than two selections)
    top = flat.topk(n - lo, dim=1, sorted=True).values
    a, b = top[:, -1], top[:, n - 1 - hi]
    return a + (b - a) * t if t < 0.5 else b - (b - a) * (1 - t)


def normalise_maps(maps: torch.Tensor, sign: str = "positive", smooth: float = 0.03) -> torch.Tensor:
    """Steps 1-3 for a batch of maps (M, H, W) -> float32 in [0, 1] (a new tensor)."""
    if sign == "positive":
        a = maps.float().clamp_min(0)
    elif sign == "absolute":
        a = maps.float().abs()
    else:
        raise DollError(f"unknown --sign {sign!r}; choose one of {', '.join(SIGNS)}")
    if smooth > 0:
        h, w = a.shape[-2:]
        # float64 on a GPU: float32 products there may run in TF32 (torch.set_float32_matmul_precision), 10 bits
        dtype = torch.float64 if a.is_cuda else torch.float32
        rows, cols = gaussian_matrix(h, smooth * w, a.device, dtype), gaussian_matrix(w, smooth * w, a.device, dtype)
        a = (rows @ a.to(dtype) @ cols.T).float()
    scale = percentile(a.flatten(1))
    a = a.div_(scale.clamp_min(torch.finfo(scale.dtype).tiny)[:, None, None]).clamp_(0, 1)
    a[scale <= 0] = 0  # no positive evidence: the map stays 0
    return a


def distill_maps(member_maps: list, sign: str = "positive", smooth: float = 0.03, fields=None,
                 device: torch.device | str = "cpu", names: list[str] | None = None,
                 members: list[str] | None = None) -> np.ndarray:
    """Steps 1-5 for many maps at once: ``member_maps`` holds one (M, H, W) float array (or
    tensor) per ensemble member, the same M maps in the same order; ``fields`` (M, H, W), one
    (H, W) for all, or None multiplies the average. Runs on ``device``; returns uint8 (M, H, W) on the CPU.
    A map with NaN or infinite values is refused (:func:`refuse_non_finite`; ``names[i]``
    names map i's image, ``members`` the members)."""
    device = torch.device(device)
    m = len(member_maps[0])
    total = None
    for k, maps in enumerate(member_maps):
        steps = []
        for lo in range(0, m, MAPS_PER_STEP):
            x = torch.as_tensor(maps[lo:lo + MAPS_PER_STEP]).to(device)
            finite = torch.isfinite(x).flatten(1).all(1)
            if not bool(finite.all()):
                refuse_non_finite(lo + int((~finite).nonzero()[0]), k, names, members)
            steps.append(normalise_maps(x, sign, smooth))
        normalised = torch.cat(steps) if len(steps) > 1 else steps[0]
        total = normalised if total is None else total.add_(normalised)
    total = total.div_(len(member_maps))  # the mean, then field and scale in NumPy's order
    if fields is not None:
        total = total.mul_(torch.as_tensor(fields, dtype=torch.float32).to(device))
    return total.mul_(255).round_().to(torch.uint8).cpu().numpy()


def refuse_non_finite(i: int, member: int, names: list[str] | None, members: list[str] | None) -> None:
    """Maps with NaN or infinite values would become labels of garbage (NaN quantises to 0)."""
    image = names[i] if names else f"map {i}"
    name = members[member] if members else f"#{member}"
    raise DollError(f"the explanation of {image} by classifier member {name} has NaN or infinite values; "
                    "its weights or inputs are broken: check the classifiers (retrain them) and rerun doll "
                    "explain with --resume")


def distill(member_maps: list[np.ndarray], sign: str = "positive", smooth: float = 0.03,
            field: np.ndarray | None = None, device: torch.device | str = "cpu") -> np.ndarray:
    """One image: ``member_maps`` holds one (T, H, W) float array per member -> uint8 (T, H, W).
    ``field`` (H, W) in [0, 1], e.g. a predicted lung field, multiplies the averaged map."""
    return distill_maps(member_maps, sign, smooth, field, device)
