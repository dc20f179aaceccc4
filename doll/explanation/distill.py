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

The label rule that turns saliency into pixel labels is a property of the label file and
lives in :mod:`doll.labels.rule` (re-exported here for the code that imports it from here).
"""
from __future__ import annotations

import cv2
import numpy as np

from doll.errors import DollError
from doll.labels.rule import DEFAULT_RULE, apply_rule, check_rule  # noqa: F401 - re-exported (see above)


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


def require_finite(member_maps: list[np.ndarray], image: str, members: list[str]) -> None:
    """Refuse the maps of an image (one (T, H, W) array per member) when one holds NaN or
    infinite values: distilled, they would become labels of garbage (NaN quantises to 0)."""
    for name, maps in zip(members, member_maps):
        if not np.isfinite(maps).all():
            raise DollError(f"the explanation of {image} by classifier member {name} has NaN or infinite values; "
                            "its weights or inputs are broken: check the classifiers (retrain them) and rerun doll "
                            "explain with --resume")


def distill(member_maps: list[np.ndarray], sign: str = "positive", smooth: float = 0.03,
            field: np.ndarray | None = None) -> np.ndarray:
    """``member_maps``: one (T, H, W) float array per member -> uint8 (T, H, W).
    ``field`` (H, W) in [0, 1], e.g. a predicted lung field, multiplies the averaged map."""
    stacked = np.stack([[normalise_map(m, sign, smooth) for m in maps] for maps in member_maps])
    mean = stacked.mean(axis=0)
    if field is not None:
        mean = mean * field[None]
    return np.round(mean * 255).astype(np.uint8)
