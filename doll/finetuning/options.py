"""``doll finetune``'s settings: each field is also its CLI option (declared once,
:func:`doll.settings.option`). No torch here: the CLI builds its command from this class;
the helpers that use them are in :mod:`doll.finetuning.settings`."""
from __future__ import annotations

from dataclasses import dataclass

from doll.models.names import DECODERS, DEFAULT_DECODER, DEFAULT_ENCODER, one_of
from doll.settings import RunOptions, accumulate_option, num_workers_option, option, root_option, val_every_option

TASK_PANEL = "Only for --task seg4cls or mixed"
INIT_PANEL = "Only with a pretrained --init"


@dataclass
class FinetuneSettings(RunOptions):
    task: str = option("jsrt", "jsrt (lungs, heart, clavicles), lung (lung fields), covid (infection), seg4cls "
                       "(segmentation for classification), mixed (a few masks + image labels, alternating), or a task "
                       "of your own as package.module:ClassName (docs/extending.md).")
    dataset: str = option("jsrt", "jsrt, montgomery, shenzhen, qata, covidqu, folder, ...")
    root: str = root_option()
    # a `doll pretrain` folder, "random", or "imagenet:/path/to/weights"
    init: str = option("random", "A `doll pretrain` output folder, random, or imagenet:/path/to/local/weights.")
    out: str = option("artifacts/finetune", "Output folder.", path=True)
    transfer: str = option("all", "With a pretrained --init: all (encoder and decoder, the method) or encoder (a new "
                           "decoder and head).", rich_help_panel=INIT_PANEL)
    pretrained_lr: float = option(1.0, "With a pretrained --init and --mode full: the pretrained layers' learning rate "
                                  "as a multiple of --lr (e.g. 0.1); the new head keeps --lr.",
                                  rich_help_panel=INIT_PANEL)
    mode: str = option("full", "full (all weights), adapter (frozen network + small adapters + new head) or head (new "
                       "head only).")
    label_fraction: float = option(1.0, "Fraction of the training masks to use, in (0, 1] (at least one image).")
    decoder: str = option(DEFAULT_DECODER, "Segmenter for random/imagenet init (a pretrain folder brings its own): "
                          f"{one_of(DECODERS)}.")
    encoder: str = option(DEFAULT_ENCODER, "Encoder for random/imagenet init (a pretrain folder brings its own).")
    image_size: int = option(0, "Square image size (0: the pretrained network's, else 256).", min=0)
    fold: int = option(1, "JSRT: train on this official fold (1 or 2), test on the other.")
    epochs: int = option(0, "The budget in epochs, for those who think in epochs; converted to optimiser steps. "
                         "Ignored when --max-steps is given. With neither: 600 steps for jsrt / lung / covid, 20 "
                         "epochs for seg4cls / mixed.", min=0)
    max_steps: int = option(0, "The budget in optimiser steps (0: --epochs converted to steps, else the task's "
                            "default: 600 steps for jsrt / lung / covid, 20 epochs for seg4cls / mixed). Recorded "
                            "with the images seen and wall time in metrics.json.", min=0)
    val_every: int = val_every_option()
    batch_size: int = option(8, "Images per batch.")
    lr: float = option(1e-3, "Peak learning rate.")
    seeds: int = option(1, "Repeat with this many seeds and report mean and std.")
    summarizer: str = option("all", "seg4cls: how a mask becomes an image label: rule, linear, pool-linear, cnn-mask, "
                             "embedding (comma-separated) or all.", rich_help_panel=TASK_PANEL)
    baselines: bool = option(True, "seg4cls: also train the plain classifier and the multitask net to compare "
                             "against.", flag="--baselines/--no-baselines", rich_help_panel=TASK_PANEL)
    # seg4cls: none, pseudo (teacher -> student on pseudo-masks) or boosted
    pseudo: str = option("none", "", rich_help_panel=TASK_PANEL, flags=[
        ("--pseudo", "pseudo", "seg4cls: train a student on real masks + the segmenter's pseudo-masks of the other "
                               "training images."),
        ("--boosted", "boosted", "seg4cls: like --pseudo, but image labels clean the pseudo-masks (negatives: empty; "
                                 "positives with an empty pseudo-mask: dropped).")],
        conflict="--pseudo and --boosted are two ways to train the student; choose one")
    pooling: str = option("max,amp-mlp", "mixed: class logits from the segmentation logits by max, amp-mlp (8x8 max "
                          "pool + MLP) or both.", rich_help_panel=TASK_PANEL)
    accumulate: int = accumulate_option()
    # a mask not on its image's pixel grid is an error (else resized)
    strict: bool = option(False, "Refuse masks that are neither their image's size nor that size divided by a whole "
                          "number (default: resize them).")
    num_workers: int = num_workers_option()

