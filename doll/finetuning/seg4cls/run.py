"""``doll finetune --task seg4cls``: the run (see the package docstring)."""
from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from doll.data.dataset import NORMALISATION, ArrayDataset
from doll.errors import DollError
from doll.finetuning.seg4cls.data import load_parts, pseudo_masks
from doll.finetuning.seg4cls.evaluate import (
    conditioned_recall,
    masked_aurocs,
    robust_pneumothorax,
    segmenter_iou,
)
from doll.finetuning.seg4cls.models import MultitaskTask, ProbSegTask, YNet
from doll.finetuning.seg4cls.summarizers import (
    SUMMARIZERS,
    apply_summary_rule,
    balanced_accuracy,
    fit_summary_rule,
    train_summarizer,
)
from doll.finetuning.settings import (
    finetune_inputs,
    FinetuneSettings,
    TaskRunner,
    build_model,
    check_single_seed_run,
    choices,
    engine_settings,
    image_size,
    label_subset,
)
from doll.models.adapters import set_mode
from doll.models.checkpoint import load_into, read_config
from doll.models.classifier import CLASSIFIER_ARCHS, build_classifier
from doll.models.segmenter import smp_config
from doll.train import distributed as dist
from doll.train.engine import Engine, predict_all
from doll.train.tasks import ClassificationTask
from doll.utils import (
    prepare_out_dir,
    write_json,
)

PSEUDO = ("none", "pseudo", "boosted")

class Seg4Cls(TaskRunner):
    """``--task seg4cls``."""

    def run(self, s: FinetuneSettings) -> dict:
        return seg4cls(s)


def seg4cls(s: FinetuneSettings) -> dict:
    check_single_seed_run(s)
    chosen = choices(s.summarizer or "all", SUMMARIZERS, "--summarizer")
    if s.pseudo not in PSEUDO:
        raise DollError(f"unknown pseudo-mask mode {s.pseudo!r}; choose one of {', '.join(PSEUDO)}")
    t0 = time.time()
    torch.manual_seed(s.seed)
    size = image_size(s)
    names, sources, train, val, test, test_split, val_desc = load_parts(s, size)
    C = len(names)
    out = prepare_out_dir(s.out, resume=s.resume, overwrite=s.overwrite, settings=asdict(s), command="finetune",
                          inputs=finetune_inputs(s)) if dist.is_main() \
        else Path(s.out)
    config = {"command": "finetune", **asdict(s), "summarizers": chosen, "image_size_used": size, "classes": names,
              "mask_structures": sources, "test_split": test_split, "validation": val_desc}
    if dist.is_main():
        write_json(out / "config.json", config)

    # -- 1. segmenter on a few masks
    n = len(train)
    subset = label_subset(n, s.label_fraction, s.seed)
    # the few masks cycled to one pass over the training images per epoch: as many samples as
    # the classifier sees (each copy augmented differently); BatchNorm needs two per batch
    seg_idx = np.resize(subset, max(n, 2))
    model, init_info = build_model(s, C)
    params = set_mode(model, s.mode, size)
    seg_task = ProbSegTask(names, background_weight=1.0, dice_weight=0.5)
    seg_train = ArrayDataset(train.images, masks=train.masks, valid=train.mask_ok, augment=True,
                             seed=s.seed, indices=seg_idx)
    ck = {"kind": "segmenter", "stage": "finetune", "task": "seg4cls", "classes": names, "mode": s.mode,
          "in_channels": 1, "image_size": size, "normalisation": NORMALISATION, **init_info,
          "run": {"command": "finetune", **asdict(s)}}
    engine = Engine(model, seg_task, engine_settings(s, min(s.batch_size, len(seg_idx))),
                    out / "segmenter", ck, smp_config(model))
    seg_val = ArrayDataset(val.images, masks=val.masks, valid=val.mask_ok)  # scored every epoch, not selected on
    seg_curve = [{"step": r["step"], "epoch": r["epoch"], "val_iou": r.get("val_iou")}
                 for r in engine.fit(seg_train, seg_val, resume=s.resume)["history"]]
    bs = s.batch_size
    semi = None
    if s.pseudo != "none":
        teacher_test = predict_all(engine.model, seg_task, ArrayDataset(test.images), bs, engine.device)["prob"]
        teacher_train = predict_all(engine.model, seg_task, ArrayDataset(train.images), bs, engine.device)["prob"]
        masks, valid = pseudo_masks(teacher_train, train, subset, boosted=s.pseudo == "boosted")
        torch.manual_seed(s.seed)
        student, _ = build_model(s, C)
        set_mode(student, s.mode, size)
        engine = Engine(student, seg_task, engine_settings(s, min(bs, n)), out / "student",
                        {**ck, "semi_supervised": s.pseudo}, smp_config(student))
        engine.fit(ArrayDataset(train.images, masks=masks, valid=valid, augment=True, seed=s.seed), None,
                   resume=s.resume)
        has_real = np.zeros(n, bool)
        has_real[subset] = True
        semi = {"mode": s.pseudo, "teacher_iou_on_test_positives": segmenter_iou(teacher_test, test, names),
                "pseudo_images": int((~has_real).sum()),
                "pseudo_class_maps_used": int(valid[~has_real].sum()),
                "pseudo_class_maps_dropped": int((valid[~has_real] == 0).sum())}
    pred_val = predict_all(engine.model, seg_task, ArrayDataset(val.images), bs, engine.device)
    pred_test = predict_all(engine.model, seg_task, ArrayDataset(test.images), bs, engine.device)
    prob_val, prob_test = pred_val["prob"], pred_test["prob"]

    scores: dict[str, np.ndarray] = {}
    details: dict[str, dict] = {}
    if "rule" in chosen:
        rule = fit_summary_rule(prob_val, val.raw)
        sc, dec = apply_summary_rule(prob_test, rule)
        scores["seg4cls_rule"] = sc
        y = test.raw
        test_ba = {}
        for c, name in enumerate(names):
            yc = y[:, c]
            test_ba[name] = float(balanced_accuracy(dec[:, c], yc)) if (yc == 1).any() and (yc == 0).any() else None
        details["seg4cls_rule"] = {"score": "pixels with probability > t",
                                   "thresholds": {name: rule[c] for c, name in enumerate(names)},
                                   "test_balanced_accuracy": test_ba}
    for kind in ("linear", "pool-linear", "cnn-mask", "embedding"):
        if kind in chosen:
            if not ((val.raw == 1) | (val.raw == 0)).any():
                raise DollError("the validation split has no known image labels to train the summarizers on")
            key = "embedding" if kind == "embedding" else "prob"
            f = train_summarizer(kind, pred_val[key], val.raw, seed=s.seed)
            scores[f"seg4cls_{kind}"] = f(pred_test[key])
            details[f"seg4cls_{kind}"] = {"trained_on": f"validation image labels ({val_desc}, n={len(val)})"}

    if s.baselines:
        _baselines(s, names, train, val, test, subset, size, out, ck, scores, details)

    # -- 4. metrics
    methods = {}
    for m, sc in scores.items():
        a = masked_aurocs(sc, test.raw, names)
        methods[m] = {"auroc": a["per_class"], "mean_auroc": a["mean"],
                      "conditioned_recall": conditioned_recall(sc, test), **details.get(m, {})}
    seg_iou = segmenter_iou(prob_test, test, names)
    val_iou = segmenter_iou(prob_val, val, names)
    result = {"command": "finetune", "task": "seg4cls", "dataset": s.dataset, "init": s.init, "mode": s.mode,
              "label_fraction": s.label_fraction, "image_size": size, "test_split": test_split,
              "validation": val_desc, "classes": names, "mask_structures": sources,
              "n_train": n, "n_masks": len(subset), "n_val": len(val), "n_test": len(test),
              "mask_ids": [train.ids[i] for i in subset][:50],
              "mean_auroc": {m: v["mean_auroc"] for m, v in methods.items()},
              "mean_iou": seg_iou["mean"], "segmenter": {"iou_on_test_positives": seg_iou, "iou_on_validation_positives": val_iou,
                                         "curve": seg_curve, **params},
              "methods": methods, "semi_supervised": semi, "robust_pneumothorax": None, "seconds": None}
    if s.dataset == "phantom":
        result["robust_pneumothorax"] = robust_pneumothorax(scores, test, names, s.root)
    result["seconds"] = round(time.time() - t0, 2)
    if dist.is_main():
        write_json(out / "metrics.json", result)
    return result


def _baselines(s, names, train, val, test, subset, size, out, ck, scores, details) -> None:
    """Train the plain classifier and the Y-Net-style multitask net; add their test scores."""
    C, n, bs = len(names), len(train), s.batch_size
    # -- 2. plain classifier on all training image labels
    y_tr, w_tr = train.targets()
    y_va, w_va = val.targets()
    y_te, w_te = test.targets()
    arch = s.encoder if s.encoder in CLASSIFIER_ARCHS else "resnet18"
    if s.init != "random" and not s.init.startswith("imagenet:"):
        enc = read_config(s.init, kind="segmenter")["doll"].get("encoder")
        arch = enc if enc in CLASSIFIER_ARCHS else "resnet18"
    torch.manual_seed(s.seed)
    clf = build_classifier(arch, C)
    cls_task = ClassificationTask(names)
    val_cls = ArrayDataset(val.images, y_va, w_va)
    test_cls = ArrayDataset(test.images, y_te, w_te)
    ce = Engine(clf, cls_task, engine_settings(s, bs, "val_auroc"), out / "classifier",
                {"kind": "classifier", "arch": arch, "classes": names, "in_channels": 1, "image_size": size,
                 "normalisation": NORMALISATION, "seed": s.seed, "dataset": s.dataset})
    ce.fit(ArrayDataset(train.images, y_tr, w_tr, augment=True, seed=s.seed), val_cls, resume=s.resume)
    load_into(ce.model, out / "classifier")
    scores["classifier"] = predict_all(ce.model, cls_task, test_cls, bs, ce.device)["prob"]
    # the baseline classifier always starts from random weights and trains fully, whatever --init
    # and --mode say about the segmenters: with a pretrained --init the comparison favours those
    details["classifier"] = {"arch": arch, "n_train": n, "init": "random", "mode": "full"}

    # -- 3. multitask (Y-Net style)
    torch.manual_seed(s.seed)
    seg2, _ = build_model(s, C)
    set_mode(seg2, s.mode, size)
    ynet = YNet(seg2, C)
    seg_w = np.zeros_like(train.mask_ok)
    seg_w[subset] = train.mask_ok[subset]
    mt_task = MultitaskTask(names)
    me = Engine(ynet, mt_task, engine_settings(s, bs, "val_auroc"), out / "multitask",
                {**ck, "kind": "multitask"})
    me.fit(ArrayDataset(train.images, y_tr, w_tr, masks=train.masks, augment=True, seed=s.seed, valid=seg_w),
           ArrayDataset(val.images, y_va, w_va, masks=val.masks, valid=np.zeros_like(val.mask_ok)),
           resume=s.resume)
    load_into(me.model, out / "multitask")
    scores["multitask"] = predict_all(me.model, mt_task, ArrayDataset(test.images, y_te, w_te, masks=test.masks,
                                                                    valid=np.zeros_like(test.mask_ok)),
                                      bs, me.device)["prob"]
    details["multitask"] = {"n_masks": len(subset), "n_images": n}
