"""Torch datasets over cached arrays, with chest-X-ray-safe augmentation.

Augmentation (training only): small rotation (+-7 deg), scale (0.9-1.1), translation
(+-6 %), brightness/contrast (+-10 %) and gamma (0.8-1.25). No horizontal flip: left
and right structures are labelled and the heart sits on the patient's left. The
random draw depends only on ``(seed, epoch, index)``, so a resumed run sees exactly
the same augmented images as an uninterrupted one.

Optional for classifiers, ``hide`` (Hide-and-Seek, Singh & Lee, ICCV 2017): the image is
cut into an 8 x 8 grid and each cell is blacked out (the IG baseline, and the fill
outside a lung field) with probability ``hide``, so that a classifier cannot rely on the
single most telling spot and has to learn from all of the evidence; its explanations
then cover more of the lesion.
"""
from __future__ import annotations

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from doll.data.images import NORMALISATION  # noqa: F401 - re-exported: what every model's config.json records
from doll.utils import MEAN, STD, to_tensor  # noqa: F401 - re-exported: the networks' input

HIDE_GRID = 8  # Hide-and-Seek cells per side


def hide_cells(img: np.ndarray, p: float, rng: np.random.Generator) -> np.ndarray:
    """Black out each cell of a HIDE_GRID x HIDE_GRID grid with probability ``p`` (a copy)."""
    h, w = img.shape[:2]
    keep = rng.random((HIDE_GRID, HIDE_GRID)) >= p
    rows = np.minimum(np.arange(h) * HIDE_GRID // h, HIDE_GRID - 1)
    cols = np.minimum(np.arange(w) * HIDE_GRID // w, HIDE_GRID - 1)
    return img * keep[rows][:, cols].astype(img.dtype)


def augment(img: np.ndarray, masks: np.ndarray | None, rng: np.random.Generator, hide: float = 0.0):
    """The augmented image (uint8) and masks (K, S, S): bool masks stay bool, float16 become
    float32 (as OpenCV has no float16), others keep their dtype. Nearest-neighbour warps
    only move mask values, so masks are warped as they are stored: bool masks as bit planes
    (16 per uint16 pixel, one ``warpAffine`` per 16 masks), float16 as their 16-bit patterns.
    The brightness, contrast and gamma of a uint8 image is a function of each pixel value
    alone: computed for the 256 values (the same float32 arithmetic) and looked up."""
    s = img.shape[0]
    angle = rng.uniform(-7, 7)
    scale = rng.uniform(0.9, 1.1)
    tx, ty = rng.uniform(-0.06, 0.06, size=2) * s
    m = cv2.getRotationMatrix2D((s / 2, s / 2), angle, scale)
    m[:, 2] += (tx, ty)
    out = cv2.warpAffine(img, m, (s, s), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    gamma, contrast, brightness = rng.uniform(0.8, 1.25), rng.uniform(0.9, 1.1), rng.uniform(-0.1, 0.1)
    if out.dtype == np.uint8:
        out = cv2.LUT(out, _intensity(np.arange(256, dtype=np.uint8), gamma, contrast, brightness))
    else:
        out = _intensity(out, gamma, contrast, brightness)
    if hide > 0:  # drawn last, so that hide=0 leaves every other draw as it was
        out = hide_cells(out, hide, rng)
    if masks is not None:
        # the same border as the image's: a structure mirrored into view is labelled where it shows
        masks = warp_masks(masks, m, s)
    return out, masks


def _intensity(x: np.ndarray, gamma: float, contrast: float, brightness: float) -> np.ndarray:
    """Gamma, then contrast and brightness, of a uint8 image (float32 arithmetic, rounded back)."""
    x = x.astype(np.float32) / 255.0
    x = np.clip(x ** gamma, 0, 1)
    x = np.clip((x - 0.5) * contrast + 0.5 + brightness, 0, 1)
    return (x * 255).round().astype(np.uint8)


def warp_masks(masks: np.ndarray, m: np.ndarray, s: int) -> np.ndarray:
    """Masks (K, H, W) warped by the affine ``m`` to (K, s, s), nearest neighbour, reflected
    border (see :func:`augment` for the dtypes). A mask that is zero everywhere is not warped
    (every output pixel is some input pixel, so it stays zero): a label row explains few of its
    classes (explain's default targets: an image's positive labels) and stores zeros for the rest."""

    def warp(a):
        return cv2.warpAffine(a, m, (s, s), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_REFLECT)

    nonzero = np.flatnonzero(masks.any(axis=(1, 2)))
    dtype = np.float32 if masks.dtype == np.float16 else masks.dtype
    out = np.zeros((len(masks), s, s), dtype)
    if masks.dtype == bool:
        u8 = masks.view(np.uint8)
        planes, bit = np.empty(masks.shape[1:], np.uint16), np.empty(masks.shape[1:], np.uint16)
        for lo in range(0, len(nonzero), 16):
            group = nonzero[lo:lo + 16]
            planes[:] = u8[group[0]]
            for k in range(1, len(group)):
                planes |= np.left_shift(u8[group[k]], k, out=bit, dtype=np.uint16)
            moved = warp(planes)
            for k, c in enumerate(group):
                np.bitwise_and(moved >> k, 1, out=out[c].view(np.uint8), casting="unsafe")
        return out
    if masks.dtype == np.float16:  # the 16-bit patterns moved, then converted: as if warped in float32
        for c in nonzero:
            out[c] = warp(masks[c].view(np.uint16)).view(np.float16)
        return out
    for c in nonzero:
        out[c] = warp(masks[c])
    return out


def decode_masks(batch: dict) -> dict:
    """``batch`` (a collated batch, or one sample) with its coded masks as float32 values: bool
    masks as 0/1, uint8 codes as ``mask_values`` of each code (a table per sample); ``mask_values``
    is dropped. The same numbers a per-sample look-up gives, bit for bit. Float masks are left
    as they are."""
    mask = batch.get("mask")
    if mask is None or mask.is_floating_point():
        return batch
    values = batch.pop("mask_values", None)
    if values is None:
        batch["mask"] = mask.float()
    elif mask.is_cuda:  # a batch on the GPU: each sample's codes looked up in its own table
        batch["mask"] = torch.gather(values, 1, mask.reshape(len(mask), -1).long()).view(mask.shape)
    else:  # on the CPU OpenCV's look-up is 10x faster than torch's gather
        single = values.ndim == 1
        codes, tables = (mask[None], values[None]) if single else (mask, values)
        out = torch.from_numpy(np.stack([cv2.LUT(c.reshape(-1, c.shape[-1]), t.numpy()).reshape(c.shape)
                                         for c, t in zip(codes.numpy(), tables)]))
        batch["mask"] = out[0] if single else out
    return batch


class ArrayDataset(Dataset):
    """Rows of cached arrays. Each sample is a dict with ``image`` (1, S, S), ``index``,
    and, when given, ``target``/``weight`` (C,) image labels, ``mask`` (K, S, S) float32 and
    ``valid`` (K,): which mask channels carry a label (others are left out of the loss).
    ``hide`` > 0 adds Hide-and-Seek to the augmentation (image labels only: a hidden
    cell would make a mask wrong).

    ``masks`` is an array (N, K, S, S) or a column of rows (``masks[j]``); a column may also
    hand row ``j`` over as ``masks.coded(j)`` -> ``(codes, values)``: bool masks and None, or
    uint8 codes (K, S, S) and the float32 value of each code (256,). The codes are augmented
    (moved, never mixed) and stay coded in the sample (``mask`` bool or uint8, and
    ``mask_values``): the loader, its worker processes' shared memory and the transfer to the
    GPU move 1 byte a pixel, not 4 (pretraining's ``LabelRows``: 14 masks of 224 px a row,
    2.8 MB a sample as float32). :func:`decode_masks` turns them into the float32 values on
    the device (the training engine does, after the transfer)."""

    def __init__(self, images, targets=None, weights=None, masks=None, valid=None, augment: bool = False,
                 seed: int = 0, indices=None, hide: float = 0.0):
        if hide and masks is not None:
            raise ValueError("hide (Hide-and-Seek) is for image labels only, not masks")
        self.images, self.targets, self.weights, self.masks, self.valid = images, targets, weights, masks, valid
        self.indices = np.arange(len(images)) if indices is None else np.asarray(indices)
        self.augment, self.seed, self.epoch, self.hide = augment, seed, 0, hide
        # an image listed several times (a few masks cycled) gets a different augmentation per copy
        self.repeats = len(np.unique(self.indices)) < len(self.indices)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, i):
        j = int(self.indices[i])
        img = np.asarray(self.images[j])
        masks = values = None
        if self.masks is not None:
            coded = getattr(self.masks, "coded", None)
            masks, values = coded(j) if coded is not None else (np.asarray(self.masks[j]), None)
        if self.augment:
            key = [self.seed, self.epoch, j, i] if self.repeats else [self.seed, self.epoch, j]
            img, masks = augment(img, masks, np.random.default_rng(key), self.hide)
        sample = {"image": to_tensor(img), "index": j}
        if self.targets is not None:
            sample["target"] = torch.as_tensor(self.targets[j], dtype=torch.float32)
            sample["weight"] = torch.as_tensor(self.weights[j], dtype=torch.float32)
        if masks is not None and coded is not None:  # kept coded, 1 byte a pixel: decode_masks makes them float32
            sample["mask"] = torch.from_numpy(masks if masks.flags.writeable else masks.copy())
            if values is not None:
                sample["mask_values"] = torch.from_numpy(np.asarray(values, np.float32))
        elif masks is not None:  # a copy where the rows may be cached (read-only) arrays; augment's are new
            sample["mask"] = torch.from_numpy(masks.astype(np.float32, copy=not self.augment))
        if self.valid is not None:
            sample["valid"] = torch.as_tensor(self.valid[j], dtype=torch.float32)
        return sample
