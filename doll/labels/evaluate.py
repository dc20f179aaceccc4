"""Pseudo-label quality against ground-truth masks, next to a random-map baseline.

For every (image, class) that was explained and has a ground-truth mask, or boxes
(NIH ChestX-ray14 ``BBox_List_2017.csv``: the union of the class's boxes, scaled to the
label file's square grid, is the mask):

* ``iou`` / ``dice``: the label rule's binary label vs the mask;
* ``topk_iou``: the saliency's top-k pixels (k = the mask's area) vs the mask;
* ``pointing``: 1 if the saliency's maximum falls inside the mask;
* ``ap``: average precision of the saliency as a ranking of the mask's pixels.

Baselines, scored the same way: ``random`` (uniform noise smoothed like the saliency,
same sigma, same rule) and, when the data set has lung masks, ``lung_prior`` (the
image's lung mask blurred with sigma = 0.05 x size: "the finding is somewhere in the
lungs") and, when the saliency was shaped by a lung model (``explain --lung-model`` or
classifiers trained with ``--lung-model``), ``field_prior``: that model's predicted lung
field alone, so you see what the explanations add to it. A class is compared with the
mask of the same name, or the mask that localises it (COVID-QU-Ex / QaTa: ``infection``
for ``COVID-19``). Per-class means and their mean over classes are reported.

IoU and Dice come from ``doll.train.metrics`` (``iou_dice``); only pairs whose ground-truth
mask is non-empty are scored, so its empty-mask rule never applies here.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch

from doll.data import open_dataset, split_arrays
from doll.data.base import class_structure_pairs
from doll.errors import DollError
from doll.labels.rule import apply_rule
from doll.labels.store import LabelFile
from doll.models.lung_field import predict_lung_fields
from doll.schema import read_run_metrics
from doll.train.metrics import iou_dice
from doll.utils import write_json


def _scores(sal: np.ndarray, label: np.ndarray, gt: np.ndarray) -> dict:
    iou, dice = iou_dice(label, gt)
    k = int(gt.sum())
    flat = sal.astype(np.float32).ravel() + np.random.default_rng(0).uniform(0, 1e-3, sal.size)  # break ties
    top = np.zeros(sal.size, bool)
    top[np.argsort(-flat)[:k]] = True
    topk, _ = iou_dice(top.reshape(sal.shape), gt)
    pointing = float(gt.ravel()[int(np.argmax(flat))] > 0)
    return {"iou": iou, "dice": dice, "topk_iou": topk, "pointing": pointing, "ap": average_precision(flat, gt)}


def average_precision(scores: np.ndarray, truth: np.ndarray) -> float:
    """Average precision of pixel scores ranking the mask's pixels first (ties broken by the caller)."""
    hit = truth.ravel()[np.argsort(-scores.ravel(), kind="stable")] > 0
    if not hit.any():
        return float("nan")
    return float((np.cumsum(hit)[hit] / (np.flatnonzero(hit) + 1)).mean())


def _random_map(shape, smooth: float, rng) -> np.ndarray:
    noise = rng.uniform(0, 1, shape).astype(np.float32)
    if smooth > 0:
        noise = cv2.GaussianBlur(noise, (0, 0), smooth * shape[-1])
    noise = (noise - noise.min()) / max(noise.max() - noise.min(), 1e-6)
    return np.round(noise * 255).astype(np.uint8)


def evaluation_path(labels: str, out: str = "") -> Path:
    """Where :func:`evaluate_labels` writes its metrics: ``--out`` itself when it names a
    ``.json`` file, else ``<out>/metrics.json``; ``<labels>.evaluation.json`` next to the
    label file without ``--out``."""
    if out and Path(out).suffix.lower() == ".json" and not Path(out).is_dir():
        return Path(out)
    return Path(out) / "metrics.json" if out else Path(str(labels) + ".evaluation.json")


def evaluate_labels(labels: str, dataset: str = "", root: str = "", label_rule: str = "", seed: int = 0,
                    out: str = "", progress: bool = True) -> dict:
    """Score the labels (see the module's docstring); returns the metrics and writes them to
    :func:`evaluation_path` (``doll evaluate-labels`` writes the same file)."""
    target = evaluation_path(labels, out)
    if out and Path(out).exists() and not Path(out).is_dir() and target != Path(out):
        raise DollError(f"--out {out} is a file; name a folder for metrics.json, or a .json file")
    if out and target.is_file() and read_run_metrics(target, "choose another --out (or delete it, if it is an "
                                                     "earlier evaluation)").get("command") != "evaluate-labels":
        raise DollError(f"{target} holds another command's metrics; choose another --out")
    with LabelFile(labels) as lf:
        classes = lf.classes
        rule = label_rule or lf.label_rule
        settings = lf.attr("settings") or {}
        smooth = float(settings.get("smooth", 0.03))
        dataset = dataset or lf.dataset_name()  # the file's: built-in names only (a file never names code)
        root = root or lf.attr("root")
        paths = lf.paths()
        targets = lf["targets"][:]
        done = lf.done
        size = int(lf.attr("image_size"))
        fmt = open_dataset(dataset, root)  # opened once: its items and its arrays
        pairs = {ci: st for _, ci, st in class_structure_pairs(classes, list(fmt.structures))}
        split = lf.attr("split") or None
        boxed = {c for it in fmt.items(split) for c in it.boxes} & set(classes)
        if not pairs and not boxed:
            raise DollError(f"{dataset} has no masks or boxes for the classes of {labels} (masks: "
                            f"{', '.join(fmt.structures) or 'none'}); evaluate against a data set with ground truth")
        structures = sorted(set(pairs.values()))
        lungs = "lungs" if "lungs" in fmt.structures else None
        wanted = structures + ([lungs] if lungs and lungs not in structures else [])
        arrays = split_arrays(fmt, split, size, structures=wanted or None, progress=progress)
        by_id = {it.id: i for i, it in enumerate(arrays.items)}
        rng = np.random.default_rng(seed)
        scores = {name: {c: {} for c in classes} for name in ("labels", "random", "lung_prior", "field_prior")}
        field_model, field_margin = lf.saliency_field()
        field_rows = {}
        if field_model and Path(field_model).is_dir():
            rows = [r for r in range(len(paths)) if done[r] and targets[r].any()]
            if rows:
                fields = predict_lung_fields(field_model, lf["images"][rows], torch.device("cpu"), 32, field_margin)
                field_rows = {r: np.round(255 * f).astype(np.uint8) for r, f in zip(rows, fields)}

        def add(kind, cls, values):
            for k, v in values.items():
                scores[kind][cls].setdefault(k, []).append(v)

        for row, path in enumerate(paths):
            if not done[row] or path not in by_id or not targets[row].any():
                continue
            j = by_id[path]
            sal_row = lf["saliency"][row]
            for c in np.flatnonzero(targets[row]):
                if c in pairs:
                    k = wanted.index(pairs[c])
                    if not arrays.has_mask[j, k] or arrays.masks[j, k].sum() == 0:
                        continue  # no ground truth for this finding (e.g. a noisy image label)
                    gt = arrays.masks[j, k]
                elif arrays.items[j].boxes.get(classes[c]):
                    gt = box_mask(arrays.items[j], classes[c], size)
                else:
                    continue
                sal = sal_row[c]
                add("labels", classes[c], _scores(sal, apply_rule(sal, rule), gt))
                rnd = _random_map(sal.shape, smooth, rng)
                add("random", classes[c], _scores(rnd, apply_rule(rnd, rule), gt))
                if row in field_rows:
                    fp = field_rows[row]
                    add("field_prior", classes[c], _scores(fp, apply_rule(fp, rule), gt))
                if lungs and arrays.has_mask[j, wanted.index(lungs)]:
                    prior = _lung_prior(arrays.masks[j, wanted.index(lungs)])
                    add("lung_prior", classes[c], _scores(prior, apply_rule(prior, rule), gt))
    if not any(scores["labels"].values()):
        raise DollError(f"no explained image of {labels} has a ground-truth mask in {dataset} at {root}")

    def summarise(d):
        per = {c: {k: float(np.mean(v)) for k, v in m.items()} | {"n": len(m.get("iou", []))} for c, m in d.items() if m}
        keys = ("iou", "dice", "topk_iou", "pointing", "ap")
        mean = {k: float(np.mean([p[k] for p in per.values()])) for k in keys} if per else {}
        return per, mean

    per, mean = summarise(scores["labels"])
    rper, rmean = summarise(scores["random"])
    result = {"command": "evaluate-labels", "labels": str(labels), "label_rule": rule, "dataset": dataset,
              "mean_iou": mean["iou"], "random_iou": rmean["iou"], "mean": mean, "random": rmean,
              "per_class": per, "random_per_class": rper,
              "pairs": int(sum(p["n"] for p in per.values())),
              "note": "means over classes of per-image scores; random = smoothed uniform noise, same rule"}
    if any(scores["field_prior"].values()):
        fper, fmean = summarise(scores["field_prior"])
        result.update(field_prior=fmean, field_prior_per_class=fper, field_model=field_model)
    if any(scores["lung_prior"].values()):
        lper, lmean = summarise(scores["lung_prior"])
        result.update(lung_prior=lmean, lung_prior_per_class=lper)
    write_json(target, result)
    return result


def box_mask(item, cls: str, size: int) -> np.ndarray:
    """uint8 (size, size) mask of the item's boxes for ``cls`` (boxes are in the image's own
    pixel grid, ``item.meta["image_size"] = (width, height)``; images are resized to a square)."""
    width, height = item.meta.get("image_size") or (size, size)
    m = np.zeros((size, size), np.uint8)
    for x, y, w, h in item.boxes[cls]:
        x0, y0 = int(np.floor(x * size / width)), int(np.floor(y * size / height))
        x1, y1 = int(np.ceil((x + w) * size / width)), int(np.ceil((y + h) * size / height))
        m[max(0, y0):min(size, max(y1, y0 + 1)), max(0, x0):min(size, max(x1, x0 + 1))] = 1
    return m


def _lung_prior(lung_mask: np.ndarray) -> np.ndarray:
    m = cv2.GaussianBlur(lung_mask.astype(np.float32), (0, 0), 0.05 * lung_mask.shape[-1])
    return np.round(255 * m / max(float(m.max()), 1e-6)).astype(np.uint8)
