"""The label rule: how a label file's uint8 saliency (0-255) becomes binary pixel labels.

``otsu`` (per map, the pixels above Otsu's threshold on the non-zero saliency, as
``cv2.THRESH_OTSU`` splits them), ``quantile:Q`` (pixels at or above the map's
Q-quantile, e.g. 0.9 = top 10 %), or ``threshold:T`` (saliency >= T on the 0-255 scale).
Pixels with saliency 0 are never labelled. A label file stores the rule it was made with
(``LabelFile.label_rule``); every reader may override it (``--label-rule``).
"""
from __future__ import annotations

import cv2
import numpy as np

from doll.errors import DollError

DEFAULT_RULE = "otsu"


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
    flat = np.ascontiguousarray(saliency).reshape(-1, *saliency.shape[-2:])
    out = np.zeros(flat.shape, bool)
    for i, s in enumerate(flat):
        nonzero = np.count_nonzero(s)
        if not nonzero:
            continue
        if kind == "otsu":  # Otsu's threshold t on the nonzero pixels; as in cv2, a label is s > t
            if nonzero == s.size:  # no zero to leave out: cv2 thresholds the map itself, into out[i] as 0/1
                # (a one-level map gets t = 0, so s > 0: the whole map, as below)
                cv2.threshold(s, 0, 1, cv2.THRESH_BINARY + cv2.THRESH_OTSU, dst=out[i].view(np.uint8))
                continue
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
