"""Pseudo-label quality against ground-truth masks, next to a random-map baseline.

For every (image, class) that was explained and has a ground-truth mask:

* ``iou`` / ``dice``: the label rule's binary label vs the mask;
* ``topk_iou``: the saliency's top-k pixels (k = the mask's area) vs the mask;
* ``pointing``: 1 if the saliency's maximum falls inside the mask.

The random baseline is uniform noise smoothed like the saliency (same sigma), put
through the same rule. Per class means, and their mean over classes, are reported.
"""
from __future__ import annotations


import cv2
import numpy as np

from doll.data import load_split
from doll.errors import DollError
from doll.explain.distill import apply_rule
from doll.labels.store import LabelFile
from doll.train.metrics import iou_dice


def _scores(sal: np.ndarray, label: np.ndarray, gt: np.ndarray) -> dict:
    iou, dice = iou_dice(label, gt)
    k = int(gt.sum())
    flat = sal.astype(np.float32).ravel() + np.random.default_rng(0).uniform(0, 1e-3, sal.size)  # break ties
    top = np.zeros(sal.size, bool)
    top[np.argsort(-flat)[:k]] = True
    topk, _ = iou_dice(top.reshape(sal.shape), gt)
    pointing = float(gt.ravel()[int(np.argmax(flat))] > 0)
    return {"iou": iou, "dice": dice, "topk_iou": topk, "pointing": pointing}


def _random_map(shape, smooth: float, rng) -> np.ndarray:
    noise = rng.uniform(0, 1, shape).astype(np.float32)
    if smooth > 0:
        noise = cv2.GaussianBlur(noise, (0, 0), smooth * shape[-1])
    noise = (noise - noise.min()) / max(noise.max() - noise.min(), 1e-6)
    return np.round(noise * 255).astype(np.uint8)


def evaluate_labels(labels: str, dataset: str = "", root: str = "", label_rule: str = "", seed: int = 0,
                    progress: bool = True) -> dict:
    with LabelFile(labels) as lf:
        classes = lf.classes
        rule = label_rule or lf.label_rule
        settings = lf.attr("settings") or {}
        smooth = float(settings.get("smooth", 0.03))
        dataset = dataset or lf.attr("dataset")
        root = root or lf.attr("root")
        paths = lf.paths()
        targets = lf["targets"][:]
        done = lf.done
        size = int(lf.attr("image_size"))
        fmt, arrays = load_split(dataset, root, lf.attr("split") or None, size, structures=classes, progress=progress)
        by_id = {it.id: i for i, it in enumerate(arrays.items)}
        rng = np.random.default_rng(seed)
        per_class: dict[str, dict[str, list]] = {c: {} for c in classes}
        random_class: dict[str, dict[str, list]] = {c: {} for c in classes}
        for row, path in enumerate(paths):
            if not done[row] or path not in by_id or not targets[row].any():
                continue
            j = by_id[path]
            sal_row = lf["saliency"][row]
            for c in np.flatnonzero(targets[row]):
                name = classes[c]
                if not arrays.has_mask[j, c] or arrays.masks[j, c].sum() == 0:
                    continue  # no ground truth for this finding (e.g. a noisy image label)
                gt = arrays.masks[j, c]
                sal = sal_row[c]
                for k, v in _scores(sal, apply_rule(sal, rule), gt).items():
                    per_class[name].setdefault(k, []).append(v)
                rnd = _random_map(sal.shape, smooth, rng)
                for k, v in _scores(rnd, apply_rule(rnd, rule), gt).items():
                    random_class[name].setdefault(k, []).append(v)
    if not any(per_class.values()):
        raise DollError(f"no explained image of {labels} has a ground-truth mask in {dataset} at {root}")

    def summarise(d):
        per = {c: {k: float(np.mean(v)) for k, v in m.items()} | {"n": len(m.get("iou", []))} for c, m in d.items() if m}
        keys = ("iou", "dice", "topk_iou", "pointing")
        mean = {k: float(np.mean([p[k] for p in per.values()])) for k in keys}
        return per, mean

    per, mean = summarise(per_class)
    rper, rmean = summarise(random_class)
    return {"command": "evaluate-labels", "labels": str(labels), "label_rule": rule,
            "mean_iou": mean["iou"], "random_iou": rmean["iou"], "mean": mean, "random": rmean,
            "per_class": per, "random_per_class": rper,
            "pairs": int(sum(p["n"] for p in per.values())),
            "note": "means over classes of per-image scores; random = smoothed uniform noise, same rule"}
