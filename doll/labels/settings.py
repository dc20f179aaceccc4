"""The settings of ``doll evaluate-labels`` and ``doll labels info|merge|refine|export``: each
field is also its CLI option or argument (declared once, :func:`doll.settings.option`). No
torch here: the CLI builds its commands from these classes. They only carry the values to
the functions of doll.labels (:func:`doll.labels.evaluate.evaluate_labels`,
:mod:`doll.labels.tools`), which check them."""
from __future__ import annotations

from dataclasses import dataclass

from doll.settings import option, run_option


def labels_option(**cli):
    """The label file a command reads: ``--labels``, or with ``argument=True`` the positional LABELS.h5."""
    if cli.get("argument"):
        cli.setdefault("metavar", "LABELS.h5")
    return option("", "A DoLL label file.", required=True, path=True, **cli)


def label_rule_option():
    return option("", "Override the file's label rule.")


@dataclass(kw_only=True)
class EvaluateLabelsSettings:
    labels: str = labels_option()
    dataset: str = option("", "Data set with ground-truth masks (default: the one the file was made from).")
    root: str = option("", "Its folder (default: the one the file was made from).", path=True)
    label_rule: str = label_rule_option()
    out: str = option("", "Folder to write metrics.json into (default: <labels>.evaluation.json next to the label "
                      "file).", path=True)
    as_json: bool = option(False, "Print all metrics as JSON.", flag="--json")
    seed: int = run_option("seed")
    progress: bool = run_option("progress")


@dataclass(kw_only=True)
class InfoSettings:
    labels: str = labels_option(argument=True)
    verify: bool = option(False, "Also read every row (every chunk) and list those that cannot be read; exits 2 if "
                          "any.")


@dataclass(kw_only=True)
class MergeSettings:
    inputs: list[str] = option((), "Label files (shards of one run) to join.", required=True, path=True,
                               argument=True, metavar="LABELS.h5")
    out: str = option("", "The merged file.", required=True, path=True)
    overwrite: bool = run_option("overwrite")


@dataclass(kw_only=True)
class RefineSettings:
    labels: str = labels_option(argument=True)
    model: str = option("", "The --out folder of `doll pretrain` run on these labels.", required=True, path=True)
    out: str = option("", "The refined label file to write (.h5).", required=True, path=True)
    batch_size: int = option(32, "Images per forward pass.")
    lung_model: str = option("", "A `doll finetune --task lung` model folder whose field replaces the file's own "
                             "(default: the file's).", path=True)
    field_margin: float | None = option(None, "Dilation of the lung field as a fraction of the image size (default: "
                                        "the file's; 0: the predicted mask itself).")
    device: str = run_option("device")
    overwrite: bool = run_option("overwrite")
    progress: bool = run_option("progress")


@dataclass(kw_only=True)
class ExportSettings:
    labels: str = labels_option(argument=True)
    out: str = option("", "Folder for images/, masks/<class>/ and labels.csv.", required=True, path=True)
    fmt: str = option("png", "Export format: png.", flag="--format")
    label_rule: str = label_rule_option()
    overwrite: bool = run_option("overwrite")
    progress: bool = run_option("progress")
