"""Metrics in numpy: AUROC (rank based, ties averaged); IoU and Dice of masks, the only place
doll computes them, with the empty-mask rule each reported number uses (``EMPTY_RULES``);
the bootstrap interval of a mean over test images."""
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


# ---------------------------------------------------------------------------- segmentation
# Every IoU and Dice doll reports is computed in this module, from the pixel counts of
# ``overlap_counts``. What a score is for an image whose true mask of a structure is empty
# is the caller's explicit choice of one of two rules (``empty=``):
EMPTY_MASK_RULE = "an image and structure whose mask and prediction are both empty scores 1, a non-empty prediction 0"
EMPTY_RULES = {
    # finetune --task jsrt|lung|covid: mean_iou, mean_dice, per_structure, per_image_iou, the
    # engine's curve there (WholeMaskObjective); evaluate-labels' pairs (a non-empty mask only)
    "one": EMPTY_MASK_RULE,
    # seg4cls / mixed: the segmenter's IoU and F1 "on test positives"; every engine curve of
    # SegmentationObjective (pretrain's val_iou, seg4cls' and mixed's curves)
    "skip": "an image and structure whose mask is empty is left out: scores on the images where the structure is present",
}


def overlap_counts(pred, truth) -> tuple:
    """(intersection, union) pixel counts over the last two axes of binary masks (bool numpy
    arrays, or torch tensors: a caller may count on its device and keep numbers, not masks).
    The Dice denominator |pred| + |truth| is their sum."""
    return (pred & truth).sum(axis=(-2, -1)), (pred | truth).sum(axis=(-2, -1))


def scores_from_counts(inter, union, present=None, empty: str = "one", valid=None) -> dict[str, np.ndarray]:
    """IoU and Dice arrays from ``overlap_counts``. ``empty`` is the rule for an entry whose true
    mask is empty (``EMPTY_RULES``): ``"one"`` scores it 1 when the prediction is empty too (union
    0), else 0; ``"skip"`` makes it NaN, as does ``valid <= 0`` (no ground truth); ``present``
    (the true mask is non-empty) is needed for ``"skip"``."""
    if empty not in EMPTY_RULES:
        raise ValueError(f"empty={empty!r}; choose one of {', '.join(EMPTY_RULES)}")
    inter, union = np.asarray(inter), np.asarray(union)
    iou = np.where(union > 0, inter / np.maximum(union, 1), 1.0)
    dice = np.where(union > 0, 2 * inter / np.maximum(inter + union, 1), 1.0)
    keep = np.ones(inter.shape, bool)
    if empty == "skip":
        if present is None:
            raise ValueError('empty="skip" needs present (whether each true mask is non-empty)')
        keep &= np.asarray(present, bool)
    if valid is not None:
        keep &= np.asarray(valid) > 0
    if not keep.all():
        iou, dice = np.where(keep, iou, np.nan), np.where(keep, dice, np.nan)
    return {"iou": iou, "dice": dice}


def per_image_scores(pred, truth, empty: str = "one", valid=None, threshold: float | None = None) -> dict[str, np.ndarray]:
    """(N, K) IoU and Dice of each image and structure; ``pred`` and ``truth`` (N, K, H, W).
    ``pred`` is binary, or probabilities counted where ``> threshold``; ``truth`` is binary
    (non-zero: inside). ``empty`` and ``valid``: see ``scores_from_counts`` (NaN: left out).
    Counted one image at a time, so memory-mapped arrays are read image by image."""
    shape = (len(pred), *np.shape(truth)[1:-2])
    inter, union, present = np.zeros(shape, np.int64), np.zeros(shape, np.int64), np.zeros(shape, bool)
    for i in range(shape[0]):
        p = np.asarray(pred[i]) > threshold if threshold is not None else np.asarray(pred[i]).astype(bool)
        t = np.asarray(truth[i]).astype(bool)
        inter[i], union[i] = overlap_counts(p, t)
        present[i] = t.any(axis=(-2, -1))
    return scores_from_counts(inter, union, present, empty, valid)


def mean_over_images(scores: np.ndarray) -> list[float | None]:
    """Per structure, the mean of a (N, K) score array over the images that are not NaN (left
    out by the empty-mask rule or ``valid``); None for a structure with none."""
    out = []
    for k in range(scores.shape[1]):
        col = scores[:, k]
        kept = col[~np.isnan(col)]
        out.append(float(np.mean(kept)) if kept.size else None)
    return out


def iou_dice(pred: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """IoU and Dice of two binary masks (H, W), rule ``"one"``: both empty counts as a perfect 1."""
    s = scores_from_counts(*overlap_counts(np.asarray(pred).astype(bool), np.asarray(truth).astype(bool)))
    return float(s["iou"]), float(s["dice"])


def segmentation_scores(pred: np.ndarray, truth: np.ndarray, names: list[str]) -> dict:
    """Per-structure mean IoU and Dice over images, rule ``"one"`` (every image counts; see
    ``EMPTY_MASK_RULE``); pred/truth (N, K, H, W) binary."""
    s = per_image_scores(pred, truth, empty="one")  # no NaN: every image counts
    per = {name: {key: float(np.mean(np.ascontiguousarray(s[key][:, k]))) for key in ("iou", "dice")}
           for k, name in enumerate(names)}
    return {"per_structure": per,
            "mean_iou": float(np.mean([v["iou"] for v in per.values()])),
            "mean_dice": float(np.mean([v["dice"] for v in per.values()]))}


def per_image_iou(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """(N, K) IoU of each test image and structure, rule ``"one"`` (both empty: 1), the numbers
    whose mean over images and structures is ``mean_iou``: what a bootstrap over test images
    resamples."""
    return per_image_scores(pred, truth, empty="one")["iou"]


def bootstrap_interval(values, resamples: int = 2000, seed: int = 0) -> list[float] | None:
    """95 % percentile interval of the mean of ``values`` (per-image scores) by bootstrap over
    images; None for fewer than 2 images."""
    values = np.asarray(values, dtype=float)
    if values.size < 2:
        return None
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, values.size, (resamples, values.size))].mean(axis=1)
    return [float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))]
