"""Distillation: explanation maps of several classifiers -> one uint8 saliency per class,
and the label rule that turns saliency into pixel labels.

Algorithm (parameters in brackets, stored in the label file's attributes):

1. keep the positive part of each signed attribution map [``sign=positive``, or
   ``absolute``];
2. smooth it with a Gaussian of sigma = ``smooth`` x image size [0.03];
3. normalise it robustly: divide by its 99th percentile and clip to [0, 1] (a map with
   no positive evidence stays 0);
4. average the normalised maps of the ensemble members; with ``--lung-model``, multiply
   by the lung field that model predicts for the image (dilated by ``--field-margin``, 1 % of the size);
5. quantise to uint8 (0-255): the ``saliency`` dataset.

Label rule (``label_rule``): ``otsu`` (per map, the pixels above Otsu's threshold on the
non-zero saliency, as ``cv2.THRESH_OTSU`` splits them), ``quantile:Q`` (pixels at or
above the map's Q-quantile, e.g. 0.9 = top 10 %), or ``threshold:T`` (saliency >= T on the 0-255 scale). Pixels with saliency 0
are never labelled.
"""
from __future__ import annotations

import cv2
import numpy as np

from doll.errors import DollError

DEFAULT_RULE = "otsu"


def normalise_map(a: np.ndarray, sign: str = "positive", smooth: float = 0.03) -> np.ndarray:
    if sign == "positive":
        a = np.maximum(a, 0)
    elif sign == "absolute":
        a = np.abs(a)
    else:
        raise DollError(f"unknown --sign {sign!r}; choose positive or absolute")
    a = a.astype(np.float32)
    if smooth > 0:
        a = cv2.GaussianBlur(a, (0, 0), smooth * a.shape[-1])
    scale = np.percentile(a, 99)
    if scale <= 0:
        return np.zeros_like(a)
    return np.clip(a / scale, 0, 1)


def distill(member_maps: list[np.ndarray], sign: str = "positive", smooth: float = 0.03,
            field: np.ndarray | None = None) -> np.ndarray:
    """``member_maps``: one (T, H, W) float array per member -> uint8 (T, H, W).
    ``field`` (H, W) in [0, 1], e.g. a predicted lung field, multiplies the averaged map."""
    stacked = np.stack([[normalise_map(m, sign, smooth) for m in maps] for maps in member_maps])
    mean = stacked.mean(axis=0)
    if field is not None:
        mean = mean * field[None]
    return np.round(mean * 255).astype(np.uint8)


def check_rule(rule: str) -> str:
    kind, _, arg = rule.partition(":")
    try:
        if kind == "otsu" and not arg:
            return rule
        if kind == "quantile" and 0 < float(arg) < 1:
            return rule
        if kind == "threshold" and 0 <= float(arg) <= 255:
            return rule
    except ValueError:
        pass
    raise DollError(f"bad label rule {rule!r}; use otsu, quantile:Q (0<Q<1) or threshold:T (0-255)")


def apply_rule(saliency: np.ndarray, rule: str) -> np.ndarray:
    """Binary labels (bool, same shape) from uint8 saliency maps (..., H, W), per map."""
    kind, _, arg = check_rule(rule).partition(":")
    flat = saliency.reshape(-1, *saliency.shape[-2:])
    out = np.zeros(flat.shape, bool)
    for i, s in enumerate(flat):
        if not s.any():
            continue
        if kind == "otsu":  # Otsu's threshold t on the nonzero pixels; as in cv2, a label is s > t
            nz = s[s > 0]
            if nz.min() == nz.max():  # one level: nothing to separate, the whole map is the label
                out[i] = s > 0
                continue
            t, _ = cv2.threshold(nz.reshape(1, -1), 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
            out[i] = s > t
            continue
        t = float(arg) if kind == "threshold" else np.quantile(s, float(arg))
        out[i] = (s >= t) & (s > 0)
    return out.reshape(saliency.shape)
