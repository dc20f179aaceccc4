"""Learning to segment from mixed labels (``doll finetune --task mixed``).

A few training images have masks, all have image labels. One network's
classification output is computed *from its segmentation logits*, so image labels
teach the segmentation too:

* ``max``: the class logit is the global max of that class's segmentation logits;
* ``amp-mlp``: the (C, H, W) segmentation logits are max-pooled to (C, 8, 8), then an
  MLP (C*64 -> 64 -> C, ReLU) gives the C class logits.

Training alternates batches: within every epoch, batch 0, 2, 4, ... are mask-labelled
images (segmentation loss: BCE + 0.5 soft Dice on the class maps that carry a label),
batch 1, 3, 5, ... are image-labelled images (masked BCE on the class logits). Each
sample of the epoch pairs image-labelled training image i with a mask-labelled image
(the ``--label-fraction`` subset cycled to N copies, each copy augmented differently);
a batch uses one half of its pairs, so an epoch of N training images gives about N/2
samples of each kind. The alternation restarts at every epoch, so ``--resume`` replays it exactly.

Baseline ``segmentation_only``: the same segmenter and init trained on the mask subset
alone, for the same number of segmentation samples (the subset cycled to N/2 per
epoch). Its image score is the max of its probability map.

Data and splits as in ``--task seg4cls`` (classes with masks of the same name; test
split ``test`` else ``valid``, and ``valid`` when ``test`` has no mask files, as in
COVID-QU-Ex); no validation split is needed (the last epoch's model is
reported). Reported on the test split per method: segmentation IoU and F1 (Dice) at
probability > 0.5 on the test images whose mask is non-empty, and AUROC of the
image scores. Each method's ``curve`` is its IoU on those same test images after every
epoch: a learning curve (nothing is selected on it), as the DoLL paper plots.
"""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from doll.data.dataset import NORMALISATION, ArrayDataset
from doll.finetuning.seg4cls.data import load_parts
from doll.finetuning.seg4cls.evaluate import masked_aurocs
from doll.finetuning.seg4cls.models import ProbSegObjective
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
from doll.models.segmenter import checkpoint_config, smp_config
from doll.train import distributed as dist
from doll.train.engine import Engine, batches_per_epoch, predict_all
from doll.train.losses import masked_bce, multilabel_seg_loss
from doll.train.metrics import mean_over_images, per_image_scores
from doll.train.objectives import SegmentationObjective

POOLINGS = ("max", "amp-mlp")


class SegToClass(nn.Module):
    """A segmenter whose class logits are pooled from its segmentation logits."""

    def __init__(self, seg: nn.Module, n_classes: int, pooling: str):
        super().__init__()
        self.seg, self.pooling = seg, pooling
        if pooling == "amp-mlp":
            self.mlp = nn.Sequential(nn.Flatten(), nn.Linear(n_classes * 64, 64), nn.ReLU(), nn.Linear(64, n_classes))

    def forward(self, x):
        seg = self.seg(x)
        if self.pooling == "max":
            return seg, seg.flatten(2).amax(-1)
        return seg, self.mlp(F.adaptive_max_pool2d(seg.float(), 8))


class AlternatingData(Dataset):
    """Sample i: image-labelled training image i and copy i of the mask subset cycled to the same length."""

    def __init__(self, cls_set: ArrayDataset, seg_set: ArrayDataset, seed: int):
        self.cls_set, self.seg_set, self.seed, self.epoch = cls_set, seg_set, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.cls_set.set_epoch(epoch)
        self.seg_set.set_epoch(epoch)

    def __len__(self):
        return len(self.cls_set)

    def __getitem__(self, i):
        a, b = self.seg_set[i % len(self.seg_set)], self.cls_set[i]
        return {"index": b["index"], "image": b["image"], "target": b["target"], "weight": b["weight"],
                "seg_image": a["image"], "mask": a["mask"], "valid": a["valid"]}


class AlternatingTask:
    """Even training steps: segmentation loss; odd steps: classification loss. Steps are
    counted across epochs (``batches`` per epoch), so an odd number of batches per epoch
    does not give one loss an extra batch every epoch (or, with one batch, all of them)."""

    def __init__(self, classes: list[str], data: AlternatingData, batches: int):
        self.classes, self.data, self.batches = classes, data, batches
        self._epoch, self._batch = None, 0

    def loss(self, model, batch):
        if self._epoch != self.data.epoch:
            self._epoch, self._batch = self.data.epoch, 0
        seg_turn = (self.data.epoch * self.batches + self._batch) % 2 == 0
        self._batch += 1
        seg, cls = model(batch["seg_image"] if seg_turn else batch["image"])
        if seg_turn:  # 0 * cls keeps every weight in the graph (DDP wants them all used)
            return multilabel_seg_loss(seg, batch["mask"], 1.0, 0.5, batch["valid"]) + 0.0 * cls.float().sum()
        return masked_bce(cls, batch["target"], batch["weight"])

    def predict(self, model, batch):
        seg, cls = model(batch["image"])
        out = {"prob": torch.sigmoid(seg.float()).cpu().numpy().astype(np.float16),
               "score": torch.sigmoid(cls.float()).cpu().numpy()}
        if "mask" in batch:  # scored after every epoch: the learning curve
            out.update(SegmentationObjective.scored(seg, batch))
        return out

    def metrics(self, out):
        return SegmentationObjective(self.classes).metrics(out) if "inter" in out else {}


def segmentation_scores(prob: np.ndarray, test, names: list[str]) -> dict:
    """IoU and F1 (Dice) at probability > 0.5 on test images with a known, non-empty mask, per
    class and mean: ``doll.train.metrics``' empty-mask rule ``"skip"`` (scores on positives)."""
    s = per_image_scores(prob, test.masks, empty="skip", valid=test.mask_ok, threshold=0.5)
    iou, f1 = mean_over_images(s["iou"]), mean_over_images(s["dice"])
    n = (~np.isnan(s["iou"])).sum(axis=0)
    per = {name: {"iou": iou[c], "f1": f1[c], "n": int(n[c])} for c, name in enumerate(names)}

    def mean(key):
        vals = [v[key] for v in per.values() if v[key] is not None]
        return float(np.mean(vals)) if vals else None

    return {"per_class": per, "iou": mean("iou"), "f1": mean("f1")}


class Mixed(TaskRunner):
    """``--task mixed``: one seed; segmentation on a few masks alone against alternating
    segmentation / classification batches through the segmentation output."""

    default_epochs = 20
    reads = ("pooling",)

    def prepare(self, s: FinetuneSettings, device) -> SimpleNamespace:
        check_single_seed_run(s)
        poolings = choices(s.pooling, POOLINGS, "--pooling")
        size = image_size(s)
        names, sources, train, _val, test, test_split, _ = load_parts(s, size, need_val=False, test_needs_masks=True)
        return SimpleNamespace(poolings=poolings, size=size, names=names, sources=sources, train=train, test=test,
                               test_split=test_split)

    def config(self, s: FinetuneSettings, p) -> dict:
        return {"poolings": p.poolings, "image_size_used": p.size, "classes": p.names, "mask_structures": p.sources,
                "test_split": p.test_split}

    def train(self, s: FinetuneSettings, p, out: Path) -> dict:
        return mixed(s, p, out)


def mixed(s: FinetuneSettings, p, out: Path) -> dict:
    poolings, size, names, train, test, test_split = p.poolings, p.size, p.names, p.train, p.test, p.test_split
    C, n, bs = len(names), len(train), s.batch_size
    subset = label_subset(n, s.label_fraction, s.seed)
    k = len(subset)
    seg_len = max(2, n // 2)  # as many segmentation samples per epoch as the alternating runs see
    seg_cycle = np.resize(subset, max(seg_len, k))
    test_set = ArrayDataset(test.images)
    curve_set = ArrayDataset(test.images, masks=test.masks, valid=test.mask_ok)  # scored each epoch, never selected on
    methods, scores = {}, {}

    def curve(history):
        return [{"step": r["step"], "epoch": r["epoch"], "test_iou": r.get("val_iou")} for r in history]

    # -- segmentation only, on the mask subset
    torch.manual_seed(s.seed)
    model, init_info = build_model(s, C)
    ck = {**checkpoint_config(model, init_info["encoder"], names, size, "finetune", NORMALISATION, task="mixed",
                              mode=s.mode), "run": {"command": "finetune", **asdict(s)}}
    params = set_mode(model, s.mode, size)
    seg_task = ProbSegObjective(names, background_weight=1.0, dice_weight=0.5)
    engine = Engine(model, seg_task, engine_settings(s, min(bs, len(seg_cycle))), out / "segmentation_only",
                    {**ck, **init_info}, smp_config(model))
    history = engine.fit(ArrayDataset(train.images, masks=train.masks, valid=train.mask_ok, augment=True, seed=s.seed,
                                      indices=seg_cycle), curve_set, resume=s.resume)["history"]
    prob = predict_all(engine.model, seg_task, test_set, bs, engine.device)["prob"]
    scores["segmentation_only"] = np.asarray(prob, np.float32).max(axis=(2, 3))
    methods["segmentation_only"] = {"segmentation": segmentation_scores(prob, test, names),
                                    "image_score": "max of the probability map", "curve": curve(history)}

    # -- alternating seg / cls batches through the segmentation output
    y_tr, w_tr = train.targets()
    for pooling in poolings:
        torch.manual_seed(s.seed)
        seg, _ = build_model(s, C)
        set_mode(seg, s.mode, size)
        net = SegToClass(seg, C, pooling)
        data = AlternatingData(ArrayDataset(train.images, y_tr, w_tr, augment=True, seed=s.seed),
                               ArrayDataset(train.images, masks=train.masks, valid=train.mask_ok, augment=True,
                                            seed=s.seed + 1, indices=np.resize(subset, max(n, k))), s.seed)
        task = AlternatingTask(names, data, batches_per_epoch(n, min(bs, n), dist.world_size() if dist.active() else 1))
        name = f"alternating_{pooling}"
        e = Engine(net, task, engine_settings(s, min(bs, n)), out / name, {**ck, **init_info,
                   "kind": "seg_to_class", "pooling": pooling})
        history = e.fit(data, curve_set, resume=s.resume)["history"]
        pred = predict_all(e.model, task, test_set, bs, e.device)
        scores[name] = pred["score"]
        methods[name] = {"segmentation": segmentation_scores(pred["prob"], test, names),
                         "image_score": f"{pooling} pooling of the segmentation logits", "curve": curve(history)}

    for name, sc in scores.items():
        a = masked_aurocs(sc, test.raw, names)
        methods[name].update({"auroc": a["per_class"], "mean_auroc": a["mean"]})
    result = {"command": "finetune", "task": "mixed", "dataset": s.dataset, "init": s.init, "mode": s.mode,
              "label_fraction": s.label_fraction, "image_size": size, "test_split": test_split, "classes": names,
              "n_train": n, "n_masks": int(k), "n_test": len(test),
              "mean_iou": {m: v["segmentation"]["iou"] for m, v in methods.items()},
              "mean_f1": {m: v["segmentation"]["f1"] for m, v in methods.items()},
              "mean_auroc": {m: v["mean_auroc"] for m, v in methods.items()},
              "trainable_params": params.get("trainable_params"), "methods": methods}
    return result
