"""``doll finetune --task jsrt|lung|covid``: fine-tune a segmenter on a small real segmentation task.

Tasks and the structures they segment (multi-label: structures may overlap):

* ``jsrt``: left lung, right lung, heart, left clavicle, right clavicle (JSRT/SCR; the
  official two folds: train on ``--fold``, test on the other);
* ``lung``: the lung fields (left + right merged where a data set has them apart);
* ``covid``: the infection masks (QaTa-COV19, COVID-QU-Ex); also reported on the
  COVID-positive test images alone, with the mean predicted area (fraction of the
  image) on the negative ones.

The test split is ``test`` when the data set has one with masks, else ``valid``, else 20 % of
the train patients (``HOLDOUT_FRACTION``, chosen by ``--seed``). Validation IoU and
Dice on it are recorded every ``--val-every`` optimiser steps (the training-efficiency
curve); the reported model is the last step's (no selection on the test split).

Every IoU and Dice here (``mean_iou``, ``per_structure``, ``per_image_iou``, the curve, and
``positives`` on the covid images with a mask) comes from ``doll.train.metrics`` under its
empty-mask rule ``"one"`` (``EMPTY_MASK_RULE``, written to metrics.json): a test image whose
mask is empty (a covid negative) scores 1 for an empty prediction, 0 for any other; so on a
task with empty masks an untrained net that predicts nothing scores the fraction of
negatives, and the headline is IoU on the positive images instead.
"""
from __future__ import annotations

import sys
from dataclasses import asdict, replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from doll.data import JSRT_STRUCTURES, load_arrays, open_dataset
from doll.data.dataset import NORMALISATION, ArrayDataset
from doll.data.splits import hold_out, patient_of
from doll.errors import DollError
from doll.finetuning.tasks import TaskRunner
from doll.finetuning.settings import (
    init_is_folder,
    FinetuneSettings,
    build_model,
    engine_settings,
    image_size,
    label_subset,
    pretrained_parameters,
)
from doll.models.adapters import set_mode
from doll.models.checkpoint import SEEN_IDS_FILE
from doll.models.segmenter import checkpoint_config, smp_config
from doll.train import distributed as dist
from doll.train.engine import Engine, predict_all
from doll.train.metrics import EMPTY_MASK_RULE, bootstrap_interval, per_image_iou, segmentation_scores
from doll.train.objectives import SegmentationObjective

HOLDOUT_FRACTION = 0.2  # test split carved from train when a data set has no other split with masks
LUNGS = ("lungs", ["left lung", "right lung"])


class WholeMaskObjective(SegmentationObjective):
    """Keeps the whole predicted and true masks (fine-tuning test sets are small): the final
    scores need them (Dice, and the false-positive area on negative images)."""

    def predict(self, model, batch):
        out = model(batch["image"])
        logits = out[0] if isinstance(out, tuple) else out
        return {"pred": (logits.float() > 0).cpu().numpy(), "truth": (batch["mask"] >= 0.5).cpu().numpy()}

    def metrics(self, out):
        scores = segmentation_scores(out["pred"], out["truth"], self.names)
        return {"iou": scores["mean_iou"], "dice": scores["mean_dice"]}


def task_structures(task: str, available: list[str]) -> list[tuple[str, list[str]]]:
    """(output name, source structures OR-ed together) for a task on a data set."""
    if task == "jsrt":
        missing = [s for s in JSRT_STRUCTURES if s not in available]
        if missing:
            raise DollError(f"--task jsrt needs masks for {', '.join(missing)}; use --dataset jsrt")
        return [(s, [s]) for s in JSRT_STRUCTURES]
    if task == "lung":
        if "lungs" in available:
            return [("lungs", ["lungs"])]
        if all(s in available for s in LUNGS[1]):
            return [LUNGS]
        raise DollError(f"--task lung needs lung masks; this data set has {', '.join(available) or 'none'}")
    if task == "covid":
        if "infection" in available:
            return [("infection", ["infection"])]
        raise DollError("--task covid needs infection masks; use --dataset qata or covidqu")
    raise DollError(f"--task {task!r} is not a segmentation task of this module")


def load_task_data(s: FinetuneSettings, size: int, structures=task_structures):
    """(output names, train, test, test split description). The test split is ``test``
    when it has masks, else ``valid`` (COVID-QU-Ex ships Test without masks); a data set
    with masks in neither (Montgomery, Shenzhen) has ``HOLDOUT_FRACTION`` of its train
    patients held out as the test split, chosen by ``--seed``."""
    fmt = open_dataset(s.dataset, s.root, fold=s.fold)
    outputs = structures(s.task, list(fmt.structures))
    sources = sorted({src for _, srcs in outputs for src in srcs})

    def with_masks(split):
        return [it for it in fmt.items(split) if any(src in it.masks for src in sources)] if split in fmt.splits else []

    parts = {"train": with_masks("train")}
    test_split = "test" if with_masks("test") else "valid"
    parts[test_split] = with_masks(test_split)
    if not parts[test_split] and len(parts["train"]) > 1:
        items = parts["train"]
        held = hold_out([patient_of(it) for it in items], HOLDOUT_FRACTION, s.seed)
        test_split = f"{int(HOLDOUT_FRACTION * 100)}% of train patients (seed {s.seed})"
        is_test = [patient_of(it) in held for it in items]
        parts = {"train": [it for it, t in zip(items, is_test) if not t],
                 test_split: [it for it, t in zip(items, is_test) if t]}
    data = {}
    for split, items in parts.items():
        if not items:
            raise DollError(f"{s.dataset} at {fmt.root} has no {split} images with {s.task} masks")
        arr = load_arrays(items, size, sources, progress=s.progress and dist.is_main(), strict=s.strict)
        masks = np.stack([np.max(arr.masks[:, [sources.index(x) for x in srcs]], axis=1) for _, srcs in outputs], 1)
        data[split] = (arr.images, masks, arr.items)
    return [name for name, _ in outputs], data["train"], data[test_split], test_split


def one_seed(s: FinetuneSettings, names, train, test, size: int, out: Path) -> dict:
    torch.manual_seed(s.seed)
    images, masks, items = train
    subset = label_subset(len(images), s.label_fraction, s.seed)
    k = len(subset)
    model, init_info = build_model(s, len(names))
    lr_scales = dict.fromkeys(pretrained_parameters(model, s), s.pretrained_lr) if s.pretrained_lr != 1.0 else None
    params = set_mode(model, s.mode, size)
    task = WholeMaskObjective(names, background_weight=1.0, dice_weight=0.5)
    train_set = ArrayDataset(images, masks=masks, augment=True, seed=s.seed, indices=subset)
    test_set = ArrayDataset(test[0], masks=test[1])
    ck = {**checkpoint_config(model, init_info["encoder"], names, size, "finetune", NORMALISATION, task=s.task,
                              mode=s.mode), **init_info, "run": {"command": "finetune", **asdict(s)}}
    engine = Engine(model, task, engine_settings(s, min(s.batch_size, k), eval_split="test"), out, ck, smp_config(model), lr_scales=lr_scales)
    hist = engine.fit(train_set, test_set, resume=s.resume)
    pred = predict_all(engine.model, task, test_set, s.batch_size, engine.device)
    scores = segmentation_scores(pred["pred"], pred["truth"], names)
    if s.task == "covid":  # infection: quality on positive images, false-positive area on negative ones
        positive = pred["truth"].any(axis=(1, 2, 3))
        if positive.any():
            scores["positives"] = {"n": int(positive.sum()),
                                   **segmentation_scores(pred["pred"][positive], pred["truth"][positive], names)}
        if (~positive).any():
            scores["negatives"] = {"n": int((~positive).sum()),
                                   "false_positive_area": float(pred["pred"][~positive].mean())}
    budget = {k: hist[k] for k in ("steps", "max_steps", "images_seen", "train_seconds") if k in hist}
    return {"seed": s.seed, "n_train": int(k), "train_ids": [items[i].id for i in subset][:50], **params,
            **scores, **budget,
            "per_image_iou": np.round(per_image_iou(pred["pred"], pred["truth"]), 5).tolist(),
            # the engine's evaluations run on the test split: the curve says so
            "curve": [{"step": r.get("step"), "epoch": r.get("epoch"), "images_seen": r.get("images_seen"),
                       "test_iou": r.get("val_iou"), "test_dice": r.get("val_dice"), "seconds": r.get("seconds")}
                      for r in hist["history"]]}


class Segment(TaskRunner):
    """``--task jsrt | lung | covid``."""

    # 600 optimiser steps, enough for a few-mask run to converge (docs/results.md, "Budgets":
    # on the real anatomy set 5 % of the masks went from 0.32 mean IoU at 20 steps to 0.82 at 600)
    default_steps = 600
    reads = ("pretrained_lr",)

    def structures(self, task: str, available: list[str]) -> list[tuple[str, list[str]]]:
        """(output name, source structures OR-ed together): override it for a task that
        segments other structures of the same data sets (docs/extending.md)."""
        return task_structures(task, available)

    def prepare(self, s: FinetuneSettings, device) -> SimpleNamespace:
        size = image_size(s)
        names, train, test, test_split = load_task_data(s, size, self.structures)
        return SimpleNamespace(size=size, names=names, train=train, test=test, test_split=test_split,
                               leaked=seen_in_pretraining(s, test[2], test_split))

    def config(self, s: FinetuneSettings, p) -> dict:
        return {"image_size_used": p.size}

    def train(self, s: FinetuneSettings, p, out: Path) -> dict:
        result = seeds(s, p.names, p.train, p.test, p.test_split, p.size, out)
        if p.leaked is not None:
            result["test_images_seen_in_pretraining"] = p.leaked
        return result


def seen_in_pretraining(s: FinetuneSettings, test_items, test_split: str) -> int | None:
    """How many test images the --init network was pretrained on (its pretrained_ids.txt),
    with a warning when any were: their pseudo labels came from image-level labels, but the
    test images are then not unseen. None when --init records no ids."""
    ids_file = Path(s.init) / SEEN_IDS_FILE if init_is_folder(s.init) else None
    if ids_file is None or not ids_file.is_file():
        return None
    seen = {line for line in ids_file.read_text(encoding="utf-8", errors="replace").split("\n") if line}
    leaked = sum(it.id in seen for it in test_items)
    if leaked and dist.is_main():
        print(f"warning: {leaked} of the {len(test_items)} test images ({test_split}) are among the {len(seen)} "
              f"images --init {s.init} was pretrained on; its test scores are not on unseen images. Explain and "
              f"pretrain without the {test_split} split to test on images the network never saw", file=sys.stderr)
    return leaked


def seeds(s: FinetuneSettings, names, train, test, test_split: str, size: int, out: Path) -> dict:
    """Every seed of a jsrt / lung / covid run, and their summary."""
    runs = []
    for r in range(s.seeds):
        sub = replace(s, seed=s.seed + r)
        runs.append(one_seed(sub, names, train, test, size, out / f"seed_{sub.seed}" if s.seeds > 1 else out / "model"))
    ious = [r["mean_iou"] for r in runs]
    result = {"command": "finetune", "task": s.task, "dataset": s.dataset, "init": s.init, "mode": s.mode,
              "label_fraction": s.label_fraction, "image_size": size, "test_split": test_split,
              "n_train_total": len(train[0]), "n_train": runs[0]["n_train"], "n_test": len(test[0]),
              "structures": names, "mean_iou": float(np.mean(ious)),
              "mean_dice": float(np.mean([r["mean_dice"] for r in runs])),
              "per_structure": runs[0]["per_structure"] if s.seeds == 1 else {
                  n: {"iou": float(np.mean([r["per_structure"][n]["iou"] for r in runs])),
                      "dice": float(np.mean([r["per_structure"][n]["dice"] for r in runs]))} for n in names},
              "trainable_params": runs[0]["trainable_params"], "total_params": runs[0]["total_params"],
              "runs": runs}
    if s.seeds > 1:  # a spread over one seed is no spread
        result["mean_iou_std"] = float(np.std(ious))
    for key in ("steps", "images_seen"):
        if key in runs[0]:
            result[key] = runs[0][key]
    per_image = np.mean([np.asarray(r["per_image_iou"]).mean(axis=1) for r in runs], axis=0)  # (test images,)
    result["mean_iou_ci95"] = bootstrap_interval(per_image)
    result["empty_mask_rule"] = EMPTY_MASK_RULE
    truth_empty = np.array([not m.any() for m in test[1]])
    if "positives" in runs[0]:
        result["positives_mean_iou"] = float(np.mean([r["positives"]["mean_iou"] for r in runs]))
        result["positives_mean_iou_ci95"] = bootstrap_interval(per_image[~truth_empty])
    if "negatives" in runs[0]:
        result["negatives_false_positive_area"] = float(np.mean([r["negatives"]["false_positive_area"] for r in runs]))
    result["headline"] = headline(result, int(truth_empty.sum()))
    return {"headline": result.pop("headline"), **result}


def headline(result: dict, n_empty: int) -> dict:
    """The number to quote, named with its split: mean IoU over the test images; on a task
    whose test masks may be empty (covid), IoU on the images with a mask plus the area
    predicted on the others, which an empty prediction cannot beat."""
    split = result["test_split"]
    if "positives_mean_iou" in result:
        return {"metric": "positives_mean_iou", "value": result["positives_mean_iou"],
                "ci95": result.get("positives_mean_iou_ci95"), "split": split,
                "what": f"IoU on the {result['n_test'] - n_empty} test images with a mask ({split}); an empty "
                        "prediction scores 0",
                "false_positive_area": result.get("negatives_false_positive_area"),
                "false_positive_area_what": f"fraction of pixels predicted on the {n_empty} test images without one"}
    note = f"; {n_empty} test images have an empty mask ({EMPTY_MASK_RULE})" if n_empty else ""
    return {"metric": "mean_iou", "value": result["mean_iou"], "ci95": result.get("mean_iou_ci95"), "split": split,
            "what": f"mean IoU over structures and the {result['n_test']} test images ({split}){note}"}
