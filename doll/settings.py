"""The settings layer, without torch (so that the CLI can build its commands from the
settings dataclasses without loading torch): :func:`option` declares a settings field and
its CLI flag once, :class:`RunOptions` holds the options every command shares, and
:func:`check_setting_values` validates a settings object once, for the CLI and the Python
API alike."""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path

from doll.errors import DollError

MAX_IMAGE_SIZE = 4096  # pixels a side: CheXpert's originals are ~2320 x 2828; above, a typo (or a memory bomb)
MAX_SEED = 2**32  # what numpy's and torch's generators take


def _option(name: str) -> str:
    return "--" + name.replace("_", "-")


def check_setting_values(settings) -> None:
    """Validate a settings dataclass once, in the settings layer, so that the CLI and the
    Python API give the same DollError for the same value: each field's type (as annotated;
    a Path is taken for a str, an int for a float), finite numbers, no negative counts, seeds
    in [0, 2**32), learning rates positive, loss weights non-negative, image sizes capped."""
    for field in dataclasses.fields(settings):
        name, value = field.name, getattr(settings, field.name)
        kinds = {t.strip() for t in str(field.type).split("|")}
        if isinstance(value, Path) and "str" in kinds:
            value = str(value)
            setattr(settings, name, value)
        if field.metadata.get("required") and isinstance(value, str) and not value.strip():  # "" would be "."
            text = field.metadata["help"].rstrip(".")
            raise DollError(f"{_option(name)} is required: {text[0].lower() + text[1:]}")
        if isinstance(value, (list, tuple)):
            ok = any(k.startswith(("list", "tuple")) for k in kinds)
        elif isinstance(value, bool):
            ok = "bool" in kinds
        elif isinstance(value, int):
            ok = bool(kinds & {"int", "float"})
        elif isinstance(value, float):
            ok = "float" in kinds
        elif isinstance(value, str):
            ok = "str" in kinds
        else:
            ok = value is None and "None" in kinds
        if not ok:
            wanted = " or ".join(sorted({"int": "an integer", "float": "a number", "str": "a string", "bool": "True or "
                                         "False", "None": "None"}.get(k, k) for k in kinds))
            raise DollError(f"{_option(name)} must be {wanted}, got {value!r} ({type(value).__name__})")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if isinstance(value, float) and not math.isfinite(value):
            raise DollError(f"{_option(name)} must be a finite number, got {value}")
        if name == "seed" and not 0 <= value < MAX_SEED:
            raise DollError(f"--seed must be in [0, 2**32), got {value}")
        if (name == "lr" or name.endswith("_lr")) and value <= 0:
            raise DollError(f"{_option(name)} must be positive, got {value}")
        if value < 0 and (name.endswith("weight") or name == "image_size"):  # others have their own range
            raise DollError(f"{_option(name)} must not be negative, got {value}")
        if name == "image_size" and value > MAX_IMAGE_SIZE:
            raise DollError(f"--image-size {value} is above doll's cap of {MAX_IMAGE_SIZE} pixels a side; choose a "
                            "smaller size (224-512 is usual for chest X-rays)")


def option(default, help: str, **cli):
    """A settings field that is also a CLI option, declared once: ``help`` is the flag's help
    text; ``cli`` may give ``flag`` (default ``--field-name``), ``required`` (the CLI asks for
    it), ``path`` (the CLI takes a path), ``argument`` (a positional argument, not a flag),
    ``cli_default``, ``min``, ``max``, ``metavar``, ``rich_help_panel``, ``invert`` (a bool
    shown as its negation: ``progress`` is ``--quiet``).
    The CLI's commands are generated from these (``doll_cli.options.settings_command``)."""
    return dataclasses.field(default=default, metadata={"help": help, **cli})


# Options several stages share, declared once (their help is the same in every command).
def root_option():
    return option("", "The folder you unpacked the data set into.", required=True, path=True)


def max_steps_option():
    return option(0, "The training budget in optimiser steps; replaces --epochs (0: --epochs' worth). Recorded with "
                  "the images seen and wall time in metrics.json.", min=0)


def val_every_option():
    return option(0, "Optimiser steps between evaluations and checkpoints (0: about ten per run).", min=0)


def accumulate_option():
    return option(1, "Gradient accumulation steps (effective batch = batch size x this).")


def patience_option():
    return option(0, "Stop early after this many evaluations without a better validation score (0: never).", min=0)


def num_workers_option():
    return option(0, "Data loader worker processes.", min=0)


@dataclasses.dataclass(kw_only=True)
class RunOptions:
    """The options every command's settings share (the CLI's --seed, --device, --resume,
    --overwrite and --quiet), declared once for every command."""
    seed: int = option(0, "Random seed: the same seed gives the same result on the same machine.")
    device: str = option("auto", "auto (GPU if present), cpu, cuda or cuda:N.")
    resume: bool = option(False, "Continue an interrupted run in --out from where it stopped.")
    overwrite: bool = option(False, "Replace a previous run in --out.")
    progress: bool = option(True, "No progress bars.", flag="--quiet", invert=True, cli_default=False)

    def __post_init__(self):
        check_setting_values(self)
        if self.resume and self.overwrite:  # each would silently win over the other somewhere
            raise DollError("--resume and --overwrite contradict each other: --resume continues the run in --out, "
                            "--overwrite deletes it; pass one of them")


def same_option(settings_class: type, name: str):
    """Another command's option, declared once: the field ``name`` of ``settings_class``, with
    its default, help and flag (``doll study`` takes finetune's --dataset, --batch-size, ...)."""
    field = settings_class.__dataclass_fields__[name]
    return dataclasses.field(default=field.default, metadata=field.metadata)


def run_option(name: str):
    """One of :class:`RunOptions`' fields (``"seed"``, ``"progress"``, ...) for the settings of a
    command that takes only some of them (``doll labels merge`` has --overwrite, no --seed):
    the same default, help and flag, declared once, and no checks of the stages'."""
    return same_option(RunOptions, name)


# `doll data phantom | check`: here rather than in doll/data/, whose package loads torch (the
# CLI builds its commands from these classes on every call, `doll --help` included). The
# functions they configure check their own values (doll.data.phantom.make_phantoms,
# doll.data.check.check_dataset); the CLI's limits are the `min`/`max` below.
@dataclasses.dataclass(kw_only=True)
class PhantomSettings:
    out: str = option("", "Folder to write the phantom data set into.", required=True, path=True)
    n: int = option(200, "Number of chest images (CheXpert layout).")
    size: int = option(64, "Image side in pixels (32 or more; 64 is what the README's examples and --image-size "
                       "defaults use).")
    seed: int = option(0, "Random seed; the same seed gives identical files.")
    n_anatomy: int | None = option(None, "Images in the JSRT-layout anatomy set (default: max(20, n/2)).", min=0)
    noise: float = option(0.05, "Fraction of training labels flipped.", min=0.0, max=1.0)
    uncertain: float = option(0.05, "Fraction of training labels written as -1 (uncertain).")
    blank: float = option(0.1, "Fraction of negative training labels left blank.")
    confound: float = option(0.0, "Fraction of pneumothorax images that also get a chest tube.")
    valid_fraction: float = option(0.2, "Fraction of the patients written as the valid split.", min=0.0, max=1.0)
    overwrite: bool = option(False, "Replace a phantom data set already in --out.")
    progress: bool = run_option("progress")


@dataclasses.dataclass(kw_only=True)
class CheckSettings:
    dataset: str = option("", "chexpert, nih, jsrt, montgomery, shenzhen, qata, covidqu, phantom or folder.",
                          required=True)
    root: str = root_option()
    decode: int = option(200, "Decode this many images (spread over the set) to find corrupt files; 0 = all.", min=0)
    as_json: bool = option(False, "Print the report as JSON.", flag="--json")
    progress: bool = run_option("progress")
