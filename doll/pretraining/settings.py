"""``doll pretrain``'s settings: each field is also its CLI option (declared once,
:func:`doll.settings.option`). No torch here: the CLI builds its command from this class."""
from __future__ import annotations

from dataclasses import dataclass

from doll.models.names import DEFAULT_DECODER, DEFAULT_ENCODER, ENCODERS, one_of
from doll.settings import (
    RunOptions,
    accumulate_option,
    max_steps_option,
    num_workers_option,
    option,
    patience_option,
    val_every_option,
)


@dataclass
class PretrainSettings(RunOptions):
    labels: str = option("artifacts/doll_labels.h5", "A DoLL label file made by `doll explain` (default: its default "
                         "--out).", path=True)
    dataset: str = option("", "The data set the labels were made from, whose patients the validation split keeps "
                          "apart (default: the one the file names; a format of your own, package.module:ClassName, "
                          "must be named here: doll never imports code a label file names).")
    out: str = option("artifacts/pretrain", "Output folder (loadable with "
                      "segmentation_models_pytorch.from_pretrained).", path=True)
    decoder: str = option(DEFAULT_DECODER, "Segmenter: pspnet (the method's network), unet, unetplusplus, "
                          "deeplabv3plus or fpn.")
    encoder: str = option(DEFAULT_ENCODER, f"Encoder: {one_of(ENCODERS)}.")
    epochs: int = option(10, "Training epochs.")
    max_steps: int = max_steps_option()
    val_every: int = val_every_option()
    batch_size: int = option(16, "Images per batch.")
    lr: float = option(1e-3, "Peak learning rate.")
    label_rule: str = option("", "Override the file's rule: otsu, quantile:Q or threshold:T.")
    soft: bool = option(False, "Train on the soft saliency instead of hard labels.")
    background_weight: float = option(0.1, "Loss weight of background pixels.")
    dice_weight: float = option(0.5, "Weight of the soft Dice term added to the per-pixel loss (0: none).", min=0.0)
    aux: bool = option(False, "Also train an auxiliary classification head on the encoder with the image labels.")
    aux_weight: float = option(0.2, "With --aux: weight of the image-label loss of that head.", min=0.0)
    val_fraction: float = option(0.1, "Fraction of the patients (seeded) whose rows are held out for validation "
                                 "(rows, when the data set the labels came from cannot be opened here).")
    accumulate: int = accumulate_option()
    patience: int = patience_option()
    num_workers: int = num_workers_option()
