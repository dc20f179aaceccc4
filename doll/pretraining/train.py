"""Stage 3: a segmenter (PSPNet by default; ``--decoder`` picks another) pretrained end to end
(encoder and decoder) on DoLL labels.

Targets, per image and class: where the class was explained, the label rule applied to
the saliency (or the saliency itself with ``--soft``); where the image label says the
class is absent (0), an empty mask; otherwise the class map is left out of the loss.
Loss: per-pixel BCE with background pixels weighted ``--background-weight`` (0.1, as in
the predecessor method) plus ``--dice-weight`` x soft Dice. A seeded random ``--val-fraction``
of the file's rows is the validation slice (loss and IoU against its pseudo labels).
"""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from doll.data import open_dataset
from doll.data.dataset import NORMALISATION, ArrayDataset
from doll.data.policies import apply_policy
from doll.data.splits import hold_out
from doll.errors import DollError
from doll.labels.rule import check_rule
from doll.labels.store import LabelFile
from doll.models.checkpoint import SEEN_IDS_FILE
from doll.models.segmenter import (
    build_segmenter,
    check_decoder,
    check_encoder,
    check_image_size,
    checkpoint_config,
    smp_config,
)
from doll.outputs import releases_outputs
from doll.train import distributed as dist
from doll.train.engine import Engine, EngineSettings
from doll.train.stage import Stage
from doll.train.objectives import SegmentationObjective
from doll.pretraining.reader import LabelRows, _Column  # noqa: F401 - the reader, importable from here as before
from doll.pretraining.settings import PretrainSettings  # noqa: F401 - doll.pretraining.train.PretrainSettings
from doll.utils import atomic_path, check_positive, resolve_paths


def row_patients(lf: LabelFile, dataset: str = "") -> tuple[list[str], str]:
    """The patient of each row, from the data set the file was made from (its index only),
    and what the validation split is made of: "patients", or "images" when that data set
    cannot be opened here (each row then counts as its own patient). ``dataset`` (from the
    command line) may name a format of your own; the file's own attribute is resolved
    through the built-in registry only (a file never makes doll import a module)."""
    paths = lf.paths()
    name = dataset or lf.dataset_name()
    try:
        fmt = open_dataset(name, lf.attr("root") or "")
        patient = {it.id: it.patient or it.id for it in fmt.items()}
    except DollError:
        return paths, "images"
    return [patient.get(p, p) for p in paths], "patients"


class Pretrain(Stage):
    """Stage 3 on the run skeleton: the label file read and checked before --out is made."""

    command = "pretrain"
    run_config = False  # --out holds the network's config.json (its "run" records the settings)

    def inputs(self, s: PretrainSettings) -> dict:
        return {"--labels": s.labels}

    def prepare(self, s: PretrainSettings, device) -> SimpleNamespace:
        with LabelFile(s.labels) as lf:
            lf.require_readable()  # a damaged row is refused before --out is touched, not when a batch draws it
            rule = check_rule(s.label_rule or lf.label_rule)
            done = np.flatnonzero(lf.done)
            data = LabelRows(lf, done, rule, s.soft)
            info = lf.info()
            patients, val_unit = row_patients(lf, s.dataset)
            patients = [patients[i] for i in done]
            seen_ids = [lf.paths()[i] for i in done]
        check_image_size(s.decoder, s.encoder, int(data.shape[-1]), option=f"{s.labels} holds images of")
        return SimpleNamespace(rule=rule, data=data, info=info, patients=patients, val_unit=val_unit,
                               seen_ids=seen_ids)

    def train(self, s: PretrainSettings, p, out: Path) -> dict:
        data = p.data
        names, size = data.names, data.shape[-1]
        torch.manual_seed(s.seed)  # the initial weights: the same --seed gives the same run
        model = build_segmenter(s.decoder, s.encoder, len(names), aux=s.aux)
        y, w = apply_policy(data.labels, "ignore", "ignore")
        held = hold_out(p.patients, s.val_fraction, s.seed)  # patient-level: no patient on both sides
        is_val = np.array([q in held for q in p.patients], bool)
        n_val = int(is_val.sum())
        train_set = ArrayDataset(data.images, y, w, masks=data.masks, valid=data.valid, augment=True, seed=s.seed,
                                 indices=np.flatnonzero(~is_val))
        val_set = ArrayDataset(data.images, y, w, masks=data.masks, valid=data.valid,
                               indices=np.flatnonzero(is_val)) if n_val else None
        task = SegmentationObjective(names, s.background_weight, s.dice_weight, s.aux_weight if s.aux else 0.0)
        es = EngineSettings(epochs=s.epochs, max_steps=s.max_steps, val_every=s.val_every, batch_size=s.batch_size,
                            lr=s.lr, seed=s.seed, device=s.device, num_workers=s.num_workers,
                            monitor="val_iou" if n_val else "train_loss", monitor_mode="max" if n_val else "min",
                            progress=s.progress, accumulate=s.accumulate, patience=s.patience)
        ck = {**checkpoint_config(model, s.encoder, names, size, "pretrain", NORMALISATION, label_rule=p.rule,
                                  soft=s.soft, aux=s.aux),
              "labels": {"path": str(s.labels), "method": p.info["method"], "rows": p.info["rows"]},
              "run": {"command": "pretrain", **asdict(s)}}
        engine = Engine(model, task, es, out, ck, smp_config(model))
        metrics = engine.fit(train_set, val_set, resume=s.resume)
        if dist.is_main():
            # the images this network saw: `doll finetune --init` warns when its test images are among them
            with atomic_path(out / SEEN_IDS_FILE) as tmp:
                tmp.write_text("".join(f"{i}\n" for i in p.seen_ids), encoding="utf-8")
        return {"command": "pretrain", "finished": True, "classes": names, "label_rule": p.rule,
                "n_train": len(train_set), "n_val": n_val, "validation_split_by": p.val_unit,
                "best_step": metrics["best_step"],
                "val_iou": metrics["best"].get("val_iou"), "history": metrics["history"]}


@releases_outputs
def pretrain(settings: PretrainSettings | None = None, **kwargs) -> dict:
    s = settings or PretrainSettings(**kwargs)
    resolve_paths(s, "labels")
    check_positive(epochs=s.epochs, batch_size=s.batch_size, lr=s.lr)
    check_decoder(s.decoder)
    check_encoder(s.encoder)
    if not 0 <= s.val_fraction < 1:
        raise DollError(f"--val-fraction must be in [0, 1), got {s.val_fraction}")
    return Pretrain().run(s)
