"""seg4cls scores on the test split: AUROC, conditioned recall, segmenter IoU, robust Pneumothorax."""
from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np

from doll.train.metrics import auroc, auroc_per_class, mean_over_images, per_image_scores

SPECIFICITY = 0.9

def masked_aurocs(scores: np.ndarray, raw: np.ndarray, names: list[str]) -> dict:
    known = ((raw == 1) | (raw == 0)).astype(np.float32)
    return auroc_per_class(scores, np.nan_to_num(raw), known, names)


def conditioned_recall(scores: np.ndarray, test) -> dict | None:
    """Recall at 90 % specificity on the test negatives, by lesion-area tercile and location."""
    raw, masks, ok = test.raw, test.masks, test.mask_ok
    H, W = masks.shape[-2:]
    rows = []  # (detected, area fraction, cy, cx)
    for c in range(raw.shape[1]):
        neg = scores[raw[:, c] == 0, c]
        if not len(neg):
            continue
        thr = np.quantile(neg, SPECIFICITY, method="higher")
        for i in np.flatnonzero((raw[:, c] == 1) & (ok[:, c] > 0)):
            m = np.asarray(masks[i, c]) > 0
            if not m.any():
                continue
            ys, xs = np.nonzero(m)
            rows.append((bool(scores[i, c] > thr), m.mean(), ys.mean() / H, xs.mean() / W))
    if not rows:
        return None
    det = np.array([r[0] for r in rows])
    area = np.array([r[1] for r in rows])
    edges = np.quantile(area, [1 / 3, 2 / 3])
    tercile = np.digitize(area, edges, right=True)

    def cell(sel):
        return {"recall": float(det[sel].mean()) if sel.any() else None, "n": int(sel.sum())}

    size = {name: cell(tercile == k) for k, name in enumerate(("small", "medium", "large"))}
    size["edges_area_fraction"] = [float(e) for e in edges]
    row = np.minimum((np.array([r[2] for r in rows]) * 3).astype(int), 2)
    side = np.array([r[3] for r in rows]) >= 0.5
    loc = {f"{v}_{h}": cell((row == k) & (side == s))
           for k, v in enumerate(("upper", "middle", "lower")) for s, h in ((False, "image_left"), (True, "image_right"))}
    return {"specificity": SPECIFICITY, "overall": cell(np.ones(len(det), bool)), "by_size": size, "by_location": loc}


def segmenter_iou(prob: np.ndarray, test, names: list[str]) -> dict:
    """The segmenter's IoU (probability > 0.5) per class on the images whose mask is known
    and non-empty, and its mean over classes: ``doll.train.metrics``' empty-mask rule
    ``"skip"`` (IoU on positives; an image without the finding does not count)."""
    iou = per_image_scores(prob, test.masks, empty="skip", valid=test.mask_ok, threshold=0.5)["iou"]
    per = dict(zip(names, mean_over_images(iou)))
    vals = [v for v in per.values() if v is not None]
    return {"per_class": per, "mean": float(np.mean(vals)) if vals else None}


def chest_tubes(root: str, ids: list[str]) -> np.ndarray | None:
    """(N,) bool chest tube per test image from the phantom's ground truth, or None.
    ``chest_tubes.csv`` lists every image; older phantoms only have ``ground_truth.csv``,
    whose rows are per finding (an image with a tube and no finding is missing there)."""
    path = Path(root) / "findings" / "chest_tubes.csv"
    if not path.is_file():
        path = Path(root) / "findings" / "ground_truth.csv"
    if not path.is_file():
        return None
    tube: dict[str, bool] = {}
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        if "chest_tube" not in (reader.fieldnames or []):
            return None
        for row in reader:
            p = row["Path"].strip()
            v = row["chest_tube"].strip() in ("1", "1.0", "True", "true")
            for key in (p, p.split("/", 1)[-1]):
                tube[key] = tube.get(key, False) or v
    return np.array([tube.get(i, tube.get(i.split("/", 1)[-1], False)) for i in ids])


def robust_pneumothorax(methods: dict, test, names: list[str], root: str) -> dict | None:
    if "Pneumothorax" not in names:
        return None
    tube = chest_tubes(root, test.ids)
    if tube is None:
        return None
    c = names.index("Pneumothorax")
    y = test.raw[:, c]
    keep = ((y == 1) & ~tube) | ((y == 0) & tube)
    out = {"n_pos_without_tube": int(((y == 1) & ~tube).sum()), "n_neg_with_tube": int(((y == 0) & tube).sum()),
           "auroc": {}}
    for m, sc in methods.items():
        out["auroc"][m] = auroc(sc[keep, c], (y[keep] == 1).astype(int)) if keep.any() else math.nan
    return out
