"""Metrics in numpy: AUROC (rank based, ties averaged), IoU and Dice."""
from __future__ import annotations

import math

import numpy as np


def _ranks(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x), np.float64)
    sx = x[order]
    i = 0
    while i < len(x):
        j = i
        while j + 1 < len(x) and sx[j + 1] == sx[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve; NaN when a class has no positives or no negatives."""
    scores, labels = np.asarray(scores, np.float64), np.asarray(labels)
    pos = labels == 1
    n_pos, n_neg = int(pos.sum()), int((labels == 0).sum())
    if n_pos == 0 or n_neg == 0:
        return math.nan
    keep = (labels == 0) | pos
    r = _ranks(scores[keep])
    return float((r[pos[keep]].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def auroc_per_class(scores: np.ndarray, labels: np.ndarray, weights: np.ndarray | None, classes: list[str]) -> dict:
    """AUROC per class over the entries with weight > 0; ``mean`` over the defined ones."""
    out = {}
    for c, name in enumerate(classes):
        keep = np.ones(len(scores), bool) if weights is None else weights[:, c] > 0
        lab = (labels[keep, c] >= 0.5).astype(int)
        out[name] = auroc(scores[keep, c], lab)
    vals = [v for v in out.values() if not math.isnan(v)]
    return {"per_class": out, "mean": float(np.mean(vals)) if vals else math.nan}


def iou_dice(pred: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """IoU and Dice of two binary masks; both empty counts as a perfect 1."""
    p, t = pred.astype(bool), truth.astype(bool)
    inter = np.logical_and(p, t).sum()
    union = np.logical_or(p, t).sum()
    total = p.sum() + t.sum()
    if union == 0:
        return 1.0, 1.0
    return float(inter / union), float(2 * inter / total)


def segmentation_scores(pred: np.ndarray, truth: np.ndarray, names: list[str]) -> dict:
    """Per-structure mean IoU and Dice over images; pred/truth (N, K, H, W) binary."""
    per = {}
    for k, name in enumerate(names):
        pairs = [iou_dice(pred[i, k], truth[i, k]) for i in range(len(pred))]
        per[name] = {"iou": float(np.mean([p[0] for p in pairs])), "dice": float(np.mean([p[1] for p in pairs]))}
    return {"per_structure": per,
            "mean_iou": float(np.mean([v["iou"] for v in per.values()])),
            "mean_dice": float(np.mean([v["dice"] for v in per.values()]))}
