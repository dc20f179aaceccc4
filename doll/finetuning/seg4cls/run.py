"""``doll finetune --task seg4cls``: the run (see the package docstring)."""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace

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
from doll.finetuning.seg4cls.models import MultitaskObjective, ProbSegObjective, YNet
from doll.finetuning.seg4cls.summarizers import (
    SUMMARIZERS,
    apply_summary_rule,
    balanced_accuracy,
    fit_summary_rule,
    train_summarizer,
)
from doll.finetuning.tasks import TaskRunner
from doll.finetuning.settings import (
    FinetuneSettings,
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
from doll.models.segmenter import checkpoint_config, smp_config
from doll.train.engine import Engine, predict_all
from doll.train.objectives import ClassificationObjective

PSEUDO = ("none", "pseudo", "boosted")

class Seg4Cls(TaskRunner):
    """``--task seg4cls``: one seed; a segmenter on a few masks, its image scores, and (unless
    --no-baselines) a plain classifier and a multitask net on every image label."""

    default_epochs = 20
    reads = ("summarizer", "pseudo", "baselines")

    def prepare(self, s: FinetuneSettings, device) -> SimpleNamespace:
        check_single_seed_run(s)
        chosen = choices(s.summarizer or "all", SUMMARIZERS, "--summarizer")
        if s.pseudo not in PSEUDO:
            raise DollError(f"unknown pseudo-mask mode {s.pseudo!r}; choose one of {', '.join(PSEUDO)}")
        torch.manual_seed(s.seed)
        size = image_size(s)
        names, sources, train, val, test, test_split, val_desc = load_parts(s, size)
        return SimpleNamespace(chosen=chosen, size=size, names=names, sources=sources, train=train, val=val,
                               test=test, test_split=test_split, val_desc=val_desc)

    def config(self, s: FinetuneSettings, p) -> dict:
        return {"summarizers": p.chosen, "image_size_used": p.size, "classes": p.names,
                "mask_structures": p.sources, "test_split": p.test_split, "validation": p.val_desc}

    def train(self, s: FinetuneSettings, p, out: Path) -> dict:
        subset = label_subset(len(p.train), s.label_fraction, s.seed)
        seg = _segmenter(s, p, subset, out)
        scores, details = _summaries(s, p, seg)
        if s.baselines:
            _baselines(s, p.names, p.train, p.val, p.test, subset, p.size, out, seg["ck"], scores, details)
        return _metrics(s, p, subset, seg, scores, details)


def _segmenter(s: FinetuneSettings, p, subset: np.ndarray, out: Path) -> dict:
    """Step 1: the segmenter on the few masks (and, with --pseudo / --boosted, a student on its
    pseudo masks); its probability maps on the validation and test images."""
    names, train, val, test, size = p.names, p.train, p.val, p.test, p.size
    n, bs = len(train), s.batch_size
    # the few masks cycled to one pass over the training images per epoch: as many samples as
    # the classifier sees (each copy augmented differently); BatchNorm needs two per batch
    seg_idx = np.resize(subset, max(n, 2))
    model, init_info = build_model(s, len(names))
    params = set_mode(model, s.mode, size)
    seg_task = ProbSegObjective(names, background_weight=1.0, dice_weight=0.5)
    seg_train = ArrayDataset(train.images, masks=train.masks, valid=train.mask_ok, augment=True,
                             seed=s.seed, indices=seg_idx)
    ck = {**checkpoint_config(model, init_info["encoder"], names, size, "finetune", NORMALISATION, task="seg4cls",
                              mode=s.mode), **init_info, "run": {"command": "finetune", **asdict(s)}}
    engine = Engine(model, seg_task, engine_settings(s, min(bs, len(seg_idx))), out / "segmenter", ck,
                    smp_config(model))
    seg_val = ArrayDataset(val.images, masks=val.masks, valid=val.mask_ok)  # scored every epoch, not selected on
    curve = [{"step": r["step"], "epoch": r["epoch"], "val_iou": r.get("val_iou")}
             for r in engine.fit(seg_train, seg_val, resume=s.resume)["history"]]
    semi = None
    if s.pseudo != "none":
        teacher_test = predict_all(engine.model, seg_task, ArrayDataset(test.images), bs, engine.device)["prob"]
        teacher_train = predict_all(engine.model, seg_task, ArrayDataset(train.images), bs, engine.device)["prob"]
        masks, valid = pseudo_masks(teacher_train, train, subset, boosted=s.pseudo == "boosted")
        torch.manual_seed(s.seed)
        student, _ = build_model(s, len(names))
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
    return {"ck": ck, "params": params, "curve": curve, "semi": semi,
            "val": predict_all(engine.model, seg_task, ArrayDataset(val.images), bs, engine.device),
            "test": predict_all(engine.model, seg_task, ArrayDataset(test.images), bs, engine.device)}


def _summaries(s: FinetuneSettings, p, seg: dict) -> tuple[dict, dict]:
    """Steps 2-3: the image scores of each chosen summarizer of the probability maps."""
    names, val = p.names, p.val
    pred_val, pred_test = seg["val"], seg["test"]
    scores: dict[str, np.ndarray] = {}
    details: dict[str, dict] = {}
    if "rule" in p.chosen:
        rule = fit_summary_rule(pred_val["prob"], val.raw)
        sc, dec = apply_summary_rule(pred_test["prob"], rule)
        scores["seg4cls_rule"] = sc
        y = p.test.raw
        test_ba = {}
        for c, name in enumerate(names):
            yc = y[:, c]
            test_ba[name] = float(balanced_accuracy(dec[:, c], yc)) if (yc == 1).any() and (yc == 0).any() else None
        details["seg4cls_rule"] = {"score": "pixels with probability > t",
                                   "thresholds": {name: rule[c] for c, name in enumerate(names)},
                                   "test_balanced_accuracy": test_ba}
    for kind in ("linear", "pool-linear", "cnn-mask", "embedding"):
        if kind in p.chosen:
            if not ((val.raw == 1) | (val.raw == 0)).any():
                raise DollError("the validation split has no known image labels to train the summarizers on")
            key = "embedding" if kind == "embedding" else "prob"
            f = train_summarizer(kind, pred_val[key], val.raw, seed=s.seed)
            scores[f"seg4cls_{kind}"] = f(pred_test[key])
            details[f"seg4cls_{kind}"] = {"trained_on": f"validation image labels ({p.val_desc}, n={len(val)})"}
    return scores, details


def _metrics(s: FinetuneSettings, p, subset: np.ndarray, seg: dict, scores: dict, details: dict) -> dict:
    """Step 4: AUROC and conditioned recall per method, the segmenter's IoU on positives."""
    names, test = p.names, p.test
    methods = {}
    for m, sc in scores.items():
        a = masked_aurocs(sc, test.raw, names)
        methods[m] = {"auroc": a["per_class"], "mean_auroc": a["mean"],
                      "conditioned_recall": conditioned_recall(sc, test), **details.get(m, {})}
    seg_iou = segmenter_iou(seg["test"]["prob"], test, names)
    val_iou = segmenter_iou(seg["val"]["prob"], p.val, names)
    result = {"command": "finetune", "task": "seg4cls", "dataset": s.dataset, "init": s.init, "mode": s.mode,
              "label_fraction": s.label_fraction, "image_size": p.size, "test_split": p.test_split,
              "validation": p.val_desc, "classes": names, "mask_structures": p.sources,
              "n_train": len(p.train), "n_masks": len(subset), "n_val": len(p.val), "n_test": len(test),
              "mask_ids": [p.train.ids[i] for i in subset][:50],
              "mean_auroc": {m: v["mean_auroc"] for m, v in methods.items()},
              "mean_iou": seg_iou["mean"], "segmenter": {"iou_on_test_positives": seg_iou,
                                                         "iou_on_validation_positives": val_iou,
                                                         "curve": seg["curve"], **seg["params"]},
              "methods": methods, "semi_supervised": seg["semi"], "robust_pneumothorax": None}
    if s.dataset == "phantom":
        result["robust_pneumothorax"] = robust_pneumothorax(scores, test, names, s.root)
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
    cls_task = ClassificationObjective(names)
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
    mt_task = MultitaskObjective(names)
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
