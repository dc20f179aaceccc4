"""``doll study``'s settings: each field is also its CLI option (declared once,
:func:`doll.settings.option`). No torch here: the CLI builds its command from this class."""
from __future__ import annotations

from dataclasses import dataclass

from doll.models.names import DECODERS, DEFAULT_DECODER, DEFAULT_ENCODER, one_of
from doll.finetuning.options import FinetuneSettings
from doll.settings import RunOptions, option, root_option, same_option


@dataclass
class StudySettings(RunOptions):
    task: str = option("jsrt", "jsrt (lungs, heart, clavicles), lung (lung fields), covid (infection), or a "
                       "segmentation task of your own as package.module:ClassName (docs/extending.md). seg4cls and "
                       "mixed are not supported yet.")
    dataset: str = same_option(FinetuneSettings, "dataset")
    root: str = root_option()
    inits: str = option("random", "Comma-separated arms: random, a `doll pretrain` folder, imagenet:/path/to/weights, "
                        "or NAME=any of these. The first is the reference unless --reference.")
    fractions: str = option("0.02,0.1,1", "Comma-separated fractions of the training masks, in (0, 1].")
    seeds: int = option(3, "Paired seeds per cell: --seed .. --seed + N - 1. A seed draws the mask subset every init "
                        "of that seed trains on.", min=1)
    modes: str = option("full,adapter", "Comma-separated fine-tuning modes: full, adapter, head.")
    max_steps: int = option(600, "The budget of every cell in optimiser steps.", min=1)
    val_every: int = option(0, "Optimiser steps between evaluations (0: about ten per run).", min=0)
    decoder: str = option(DEFAULT_DECODER, "Segmenter for random/imagenet inits (a pretrain folder brings its own): "
                          f"{one_of(DECODERS)}.")
    encoder: str = option(DEFAULT_ENCODER, "Encoder for random/imagenet inits (a pretrain folder brings its own).")
    image_size: int = option(0, "Square image size (0: finetune's default).", min=0)
    batch_size: int = same_option(FinetuneSettings, "batch_size")
    lr: float = same_option(FinetuneSettings, "lr")
    fold: int = same_option(FinetuneSettings, "fold")
    transfer: str = option("all", "For the `doll pretrain` folder inits: all (encoder and decoder, the method) or "
                           "encoder (a new decoder and head). Other inits ignore it.")
    pretrained_lr: float = option(1.0, "For the pretrained inits (a folder or imagenet:FILE) in mode full: the pretrained "
                                  "layers' learning rate as a multiple of --lr; random inits and other modes ignore it.")
    reference: str = option("", "The init (its name) paired differences are taken against (default: the first of "
                            "--inits).")
    devices: str = option("", "Comma-separated devices, e.g. cuda:0,cuda:1: one cell per device at a time (default: "
                          "--device, one cell at a time).")
    bootstrap: int = option(2000, "Bootstrap resamples over test images.", min=1)
    out: str = option("artifacts/study", "Output folder: cells/, study.json, summary.md, report.html.", path=True)

    def __post_init__(self):
        for name in ("inits", "fractions", "modes", "devices"):  # the Python API may pass lists
            value = getattr(self, name)
            if isinstance(value, (list, tuple)):
                setattr(self, name, ",".join(str(v) for v in value))
        super().__post_init__()
