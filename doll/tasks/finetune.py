"""Stage 4: fine-tune a (DoLL-pretrained) PSPNet on a small real segmentation task.

Tasks and the structures they segment (multi-label: structures may overlap):

* ``jsrt``: left lung, right lung, heart, left clavicle, right clavicle (JSRT/SCR; the
  official two folds: train on ``--fold``, test on the other);
* ``lung``: the lung fields (left + right merged where a data set has them apart);
* ``covid``: the infection masks (QaTa-COV19, COVID-QU-Ex); also reported on the
  COVID-positive test images alone, with the mean predicted area (fraction of the
  image) on the negative ones.

The test split is ``test`` when the data set has one with masks, else ``valid``, else 20 % of
the train patients (``HOLDOUT_FRACTION``, chosen by ``--seed``). Validation IoU and
Dice on it are recorded every epoch (the training-efficiency curve); the reported
model is the last epoch's (no selection on the test split).
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from doll.data import JSRT_STRUCTURES, load_arrays, open_dataset
from doll.data.common import hold_out
from doll.data.dataset import NORMALISATION, ArrayDataset
from doll.errors import DollError
from doll.models.adapters import MODES, set_mode
from doll.models.checkpoint import load_into, read_config, read_weights_file
from doll.models.segmenter import (
    ENCODERS,
    build_pspnet,
    drop_aux_head,
    replace_head,
    smp_config,
)
from doll.pretrain.train import SegmentationTask
from doll.train import distributed as dist
from doll.train.engine import Engine, EngineSettings, predict_all
from doll.train.metrics import segmentation_scores
from doll.utils import (
    RunOptions,
    check_fraction,
    check_positive,
    prepare_out_dir,
    resolve_device,
    resolve_paths,
    write_json,
)

TASKS = ("jsrt", "lung", "covid", "seg4cls", "mixed")
HOLDOUT_FRACTION = 0.2  # test split carved from train when a data set has no other split with masks
LUNGS = ("lungs", ["left lung", "right lung"])


@dataclass
class FinetuneSettings(RunOptions):
    task: str = "jsrt"
    dataset: str = "jsrt"
    root: str = ""
    init: str = "random"  # a `doll pretrain` folder, "random", or "imagenet:/path/to/weights"
    out: str = "artifacts/finetune"
    mode: str = "full"  # full | adapter | head
    label_fraction: float = 1.0
    encoder: str = "resnet34"  # for random / imagenet init (a pretrain folder fixes its own)
    image_size: int = 0  # 0: the pretrained network's size, else 256
    fold: int = 1
    epochs: int = 20
    batch_size: int = 8
    lr: float = 1e-3
    seeds: int = 1
    strict: bool = False  # a mask not on its image's pixel grid is an error (else resized)
    accumulate: int = 1
    summarizer: str = "all"  # seg4cls: rule, linear, pool-linear, cnn-mask, embedding, comma-separated, or all
    baselines: bool = True  # seg4cls: also train the plain classifier and the multitask net
    pseudo: str = "none"  # seg4cls: none, pseudo (teacher -> student on pseudo-masks) or boosted
    pooling: str = "max,amp-mlp"  # mixed: how classification logits come from the segmentation logits
    num_workers: int = 0


class FinetuneTask(SegmentationTask):
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
    raise DollError(f"unknown --task {task!r}; choose one of {', '.join(TASKS)}")


def load_task_data(s: FinetuneSettings, size: int):
    """(output names, train, test, test split description). The test split is ``test``
    when it has masks, else ``valid`` (COVID-QU-Ex ships Test without masks); a data set
    with masks in neither (Montgomery, Shenzhen) has ``HOLDOUT_FRACTION`` of its train
    patients held out as the test split, chosen by ``--seed``."""
    fmt = open_dataset(s.dataset, s.root, fold=s.fold)
    outputs = task_structures(s.task, list(fmt.structures))
    sources = sorted({src for _, srcs in outputs for src in srcs})

    def with_masks(split):
        return [it for it in fmt.items(split) if any(src in it.masks for src in sources)] if split in fmt.splits else []

    parts = {"train": with_masks("train")}
    test_split = "test" if with_masks("test") else "valid"
    parts[test_split] = with_masks(test_split)
    if not parts[test_split] and len(parts["train"]) > 1:
        items = parts["train"]
        held = hold_out([it.patient or it.id for it in items], HOLDOUT_FRACTION, s.seed)
        test_split = f"{int(HOLDOUT_FRACTION * 100)}% of train patients (seed {s.seed})"
        is_test = [(it.patient or it.id) in held for it in items]
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


def load_imagenet_encoder(model, path: str) -> int:
    """Copy matching encoder weights from a local file (safetensors or plain state dict)."""
    p = Path(path)
    state = read_weights_file(p, "--init imagenet:")
    own = model.encoder.state_dict()
    matched = {}
    for k, v in state.items():
        k = k.removeprefix("encoder.")
        if k in own:
            if v.ndim == 4 and v.shape[1] == 3 and own[k].shape[1] == 1:
                v = v.sum(dim=1, keepdim=True)
            if v.shape == own[k].shape:
                matched[k] = v
    if not matched:
        raise DollError(f"no weight in {p} matches the {model.encoder.__class__.__name__} encoder")
    model.encoder.load_state_dict(matched, strict=False)
    return len(matched)


def build_model(s: FinetuneSettings, n_out: int):
    """The network to fine-tune and a description of its initialisation."""
    if s.init == "random":
        return build_pspnet(s.encoder, n_out), {"init": "random", "encoder": s.encoder}
    if s.init.startswith("imagenet:"):
        model = build_pspnet(s.encoder, n_out)
        n = load_imagenet_encoder(model, s.init.split(":", 1)[1])
        return model, {"init": s.init, "encoder": s.encoder, "matched_tensors": n}
    cfg = read_config(s.init, kind="segmenter")["doll"]
    model = build_pspnet(cfg["encoder"], len(cfg["classes"]), aux=bool(cfg.get("aux")))
    load_into(model, s.init)
    drop_aux_head(model)
    replace_head(model, n_out)
    return model, {"init": str(s.init), "encoder": cfg["encoder"], "pretrain_classes": cfg["classes"],
                   "image_size": cfg.get("image_size")}


def _one_seed(s: FinetuneSettings, names, train, test, size: int, out: Path) -> dict:
    torch.manual_seed(s.seed)
    images, masks, items = train
    n = len(images)
    k = max(1, int(round(s.label_fraction * n)))
    subset = np.sort(np.random.default_rng(s.seed).permutation(n)[:k])
    model, init_info = build_model(s, len(names))
    params = set_mode(model, s.mode, size)
    task = FinetuneTask(names, background_weight=1.0, dice_weight=0.5)
    train_set = ArrayDataset(images, masks=masks, augment=True, seed=s.seed, indices=subset)
    test_set = ArrayDataset(test[0], masks=test[1])
    es = EngineSettings(epochs=s.epochs, batch_size=min(s.batch_size, k), lr=s.lr, seed=s.seed, device=s.device,
                        num_workers=s.num_workers, monitor="epoch", monitor_mode="max", progress=s.progress,
                        accumulate=s.accumulate)
    ck = {"kind": "segmenter", "stage": "finetune", "task": s.task, "classes": names, "mode": s.mode,
          "in_channels": 1, "image_size": size, "normalisation": NORMALISATION, **init_info,
          "run": {"command": "finetune", **asdict(s)}}
    engine = Engine(model, task, es, out, ck, smp_config(model))
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
    return {"seed": s.seed, "n_train": int(k), "train_ids": [items[i].id for i in subset][:50], **params,
            **scores, "curve": [{"epoch": r["epoch"], "val_iou": r.get("val_iou"), "val_dice": r.get("val_dice")}
                                for r in hist["history"]]}


# options that only one task reads: (default, tasks, the flag)
TASK_ONLY_OPTIONS = {"summarizer": ("all", ("seg4cls",), "--summarizer"),
                     "pseudo": ("none", ("seg4cls",), "--pseudo / --boosted"),
                     "baselines": (True, ("seg4cls",), "--no-baselines"),
                     "pooling": ("max,amp-mlp", ("mixed",), "--pooling")}


def check_settings(s: FinetuneSettings) -> None:
    """Refuse, before anything is written, options this task would ignore and unknown
    --mode / --encoder (a bad one used to leave a config.json that blocked the next run)."""
    for name, (default, tasks, flag) in TASK_ONLY_OPTIONS.items():
        if getattr(s, name) != default and s.task not in tasks:
            raise DollError(f"{flag} applies to --task {' / '.join(tasks)} only, not --task {s.task}")
    if s.mode not in MODES:
        raise DollError(f"unknown --mode {s.mode!r}; choose one of {', '.join(MODES)}")
    if (s.init == "random" or s.init.startswith("imagenet:")) and s.encoder not in ENCODERS:
        raise DollError(f"unknown --encoder {s.encoder!r}; choose one of {', '.join(ENCODERS)}")


def finetune(settings: FinetuneSettings | None = None, **kwargs) -> dict:
    s = settings or FinetuneSettings(**kwargs)
    resolve_paths(s, "root", "init")
    check_settings(s)
    if s.task == "seg4cls":
        from doll.tasks.seg4cls import seg4cls

        return seg4cls(s)
    if s.task == "mixed":
        from doll.tasks.mixed import mixed

        return mixed(s)
    if s.task not in TASKS:
        raise DollError(f"unknown --task {s.task!r}; choose one of {', '.join(TASKS)}")
    check_fraction(s.label_fraction)
    check_positive(epochs=s.epochs, batch_size=s.batch_size, seeds=s.seeds, lr=s.lr)
    dist.init(resolve_device(s.device))  # join torchrun's process group before any file is written
    if s.init not in ("random",) and not s.init.startswith("imagenet:"):
        init_size = read_config(s.init, kind="segmenter")["doll"].get("image_size")
    else:
        init_size = None
    size = s.image_size or init_size or 256
    t0 = time.time()
    names, train, test, test_split = load_task_data(s, size)
    out = Path(s.out)
    if dist.is_main():
        prepare_out_dir(out, resume=s.resume, overwrite=s.overwrite, settings=asdict(s))
        write_json(out / "config.json", {"command": "finetune", **asdict(s), "image_size_used": size})
    dist.barrier()
    runs = []
    for r in range(s.seeds):
        sub = replace(s, seed=s.seed + r)
        runs.append(_one_seed(sub, names, train, test, size, out / f"seed_{sub.seed}" if s.seeds > 1 else out / "model"))
    ious = [r["mean_iou"] for r in runs]
    result = {"command": "finetune", "task": s.task, "dataset": s.dataset, "init": s.init, "mode": s.mode,
              "label_fraction": s.label_fraction, "image_size": size, "test_split": test_split,
              "n_train_total": len(train[0]), "n_train": runs[0]["n_train"], "n_test": len(test[0]),
              "structures": names, "mean_iou": float(np.mean(ious)), "mean_iou_std": float(np.std(ious)),
              "mean_dice": float(np.mean([r["mean_dice"] for r in runs])),
              "per_structure": runs[0]["per_structure"] if s.seeds == 1 else {
                  n: {"iou": float(np.mean([r["per_structure"][n]["iou"] for r in runs])),
                      "dice": float(np.mean([r["per_structure"][n]["dice"] for r in runs]))} for n in names},
              "trainable_params": runs[0]["trainable_params"], "total_params": runs[0]["total_params"],
              "runs": runs, "seconds": round(time.time() - t0, 2)}
    if "positives" in runs[0]:
        result["positives_mean_iou"] = float(np.mean([r["positives"]["mean_iou"] for r in runs]))
    if "negatives" in runs[0]:
        result["negatives_false_positive_area"] = float(np.mean([r["negatives"]["false_positive_area"] for r in runs]))
    if dist.is_main():
        write_json(out / "metrics.json", result)
    return result
