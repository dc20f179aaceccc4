"""``doll explain``'s settings: each field is also its CLI option (declared once,
:func:`doll.settings.option`). No torch here: the CLI builds its command from this class."""
from __future__ import annotations

from dataclasses import dataclass

from doll.labels.rule import DEFAULT_RULE
from doll.models.names import SALIENCY_MARGIN
from doll.settings import RunOptions, option, root_option


@dataclass
class ExplainSettings(RunOptions):
    classifiers: str = option("artifacts/classifiers", "Output folder of `doll train-classifiers` (default: its "
                              "default --out).", path=True)
    dataset: str = option("phantom", "The data set to label (same classes as the classifiers).")
    root: str = root_option()
    out: str = option("artifacts/doll_labels.h5", "The DoLL label file to write (.h5).", path=True)
    method: str = option("ig", "ig (Integrated Gradients), ig-smooth or gradcam.")
    split: str = option("train", "Which split to label: train, valid, test, or '' for all.")
    steps: int = option(16, "IG integration steps (Gauss-Legendre).")
    baseline: str = option("zero", "IG baseline: zero (black image), blur or mean.")
    # what a map explains (see doll.explanation.base)
    evidence: str = option("class", "What a map explains: class (the class logit), abnormal (evidence against the "
                           "normal class, No Finding or Normal: one map per image) or contrast (class logit minus the "
                           "normal class's).")
    targets: str = option("positive", "Classes to explain per image: positive (its positive labels), predicted or all.")
    target_threshold: float = option(0.5, "Probability above which a class counts as predicted.", min=0.0, max=1.0)
    classes: str = option("", "Comma-separated classes to explain (default: all but No Finding).")
    smooth: float = option(0.03, "Gaussian smoothing sigma as a fraction of the image size.", min=0.0)
    sign: str = option("positive", "Which evidence counts: positive (the positive part of the attributions) or "
                       "absolute.")
    label_rule: str = option(DEFAULT_RULE, "Saliency -> pixel label: otsu, quantile:Q or threshold:T.")
    batch_size: int = option(0, "Interpolated images per forward pass (sets peak memory); 0: 256 on a GPU, 16 on the "
                             "CPU.")
    precision: str = option("auto", "IG arithmetic on a GPU: auto (float16 autocast, float32 where it overflows), "
                            "fp16, bf16 or fp32. The CPU always uses float32.")
    lung_model: str = option("", "A `doll finetune --task lung` model folder (its model/ subfolder): saliency is kept "
                             "inside the lung field it predicts.", path=True)
    field_margin: float = option(SALIENCY_MARGIN, "With a lung model: the field that multiplies saliency is its "
                                 "predicted lung mask dilated by this fraction of the image size.")
    block: int = option(64, "Images per resumable block (the unit of work shared among torchrun processes).")
    image_size: int = option(0, "Image size (0: the classifiers' own).", min=0)

