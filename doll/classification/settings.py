"""``doll train-classifiers``' settings: each field is also its CLI option (declared once,
:func:`doll.settings.option`). No torch here: the CLI builds its command from this class."""
from __future__ import annotations

from dataclasses import dataclass

from doll.models.names import CLASSIFIER_ARCHS, one_of
from doll.settings import (
    RunOptions,
    accumulate_option,
    max_steps_option,
    num_workers_option,
    option,
    patience_option,
    root_option,
    val_every_option,
)


@dataclass
class ClassifierSettings(RunOptions):
    dataset: str = option("phantom", "Data set with image labels: chexpert, nih, phantom, covidqu, folder, ...")
    root: str = root_option()
    out: str = option("artifacts/classifiers", "Output folder (one member_<i>/ folder per classifier).", path=True)
    arch: str = option("resnet18", f"{one_of(CLASSIFIER_ARCHS)}; several, comma-separated, are cycled over the "
                       "members.")
    init: str = option("random", "Initial weights: random, or imagenet:/path/to/file with torchvision's weights for "
                       "--arch (safetensors or a plain state dict, never downloaded; the first convolution's RGB "
                       "kernels are summed for the one channel, the head is new). Several, comma-separated, are "
                       "cycled over the members.")
    members: int = option(2, "Number of classifiers in the ensemble (seeds seed, seed+1, ...).")
    image_size: int = option(64, "Images are resized to this square size.")
    epochs: int = option(8, "Training epochs per member.")
    max_steps: int = max_steps_option()
    val_every: int = val_every_option()
    batch_size: int = option(32, "Images per batch (lower it if the GPU runs out of memory).")
    lr: float = option(2e-3, "Peak learning rate (AdamW, warm-up then cosine).")
    uncertain: str = option("ignore", "Uncertain (-1) labels: ignore (left out of the loss), zeros, ones or lsr.")
    blank: str = option("ignore", "Blank (not mentioned) labels: ignore or zeros.")
    views: str = option("frontal", "CheXpert views: frontal, lateral or all.")
    valid_fraction: float = option(0.0, "Carve this fraction of patients from train as validation (0: the data set's "
                                   "own validation split, or 10 % of the train patients when it has none).")
    accumulate: int = accumulate_option()
    patience: int = patience_option()
    lung_model: str = option("", "A `doll finetune --task lung` model folder (its model/ subfolder): the classifiers "
                             "see only the lung field it predicts, so they cannot learn shortcuts outside it; `doll "
                             "explain` masks their inputs the same way.", path=True)
    # Hide-and-Seek: a float is read as one value
    hide: str | float = option("0", "Hide-and-Seek augmentation: black out each cell of an 8x8 grid with this "
                               "probability while training (e.g. 0.5), so the classifiers learn from all of the "
                               "evidence, not only its most telling spot; their IG labels cover more of a lesion (0: "
                               "off). Several, comma-separated, are cycled over the members (0,0.5: every other "
                               "member).")
    num_workers: int = num_workers_option()

