"""`doll explain`, `doll evaluate-labels`, `doll show`, `doll labels info|merge|export`."""
from __future__ import annotations

from pathlib import Path

import typer
from doll.explanation.settings import ExplainSettings
from doll_cli.main import DEVICE, OVERWRITE, QUIET, RESUME, SEED, Typer, app, emit
from doll_cli.options import settings_command

labels_app = Typer(help="Inspect, merge, refine and export DoLL label files.", no_args_is_help=True)


def _run_explain(settings):
    from doll.explanation.run import explain

    return explain(settings)


def _report_explain(result: dict, settings) -> None:
    emit(result, keys=("images", "targets", "seconds", "seconds_per_image", "completeness_rel_error",
                       "completeness_rel_error_by_member"),
         footer=f"labels: {settings.out}  metrics: {settings.out}.metrics.json")


# doll explain: its options are ExplainSettings' fields (doll_cli.options)
settings_command(app, "explain", ExplainSettings, _run_explain, report=_report_explain,
                 doc="Stage 2: explain every classifier with Integrated Gradients, ensemble and distil the maps into "
                     "per-class saliency and pixel labels, all in one HDF5 file. Resumable.")


@app.command("evaluate-labels")
def evaluate_labels(
    labels: Path = typer.Option(..., "--labels", help="A DoLL label file."),
    dataset: str = typer.Option("", "--dataset", help="Data set with ground-truth masks (default: the one the file was made from)."),
    root: Path = typer.Option(None, "--root", help="Its folder (default: the one the file was made from)."),
    label_rule: str = typer.Option("", "--label-rule", help="Override the file's label rule."),
    out: Path = typer.Option(None, "--out", help="Folder to write metrics.json into (default: <labels>.evaluation.json next to the label file)."),
    as_json: bool = typer.Option(False, "--json", help="Print all metrics as JSON."),
    seed: int = SEED,
    quiet: bool = QUIET,
):
    """Pseudo-label quality against ground-truth masks (or NIH boxes): IoU, Dice, top-k IoU, pointing game and AP per class and mean, next to a random map (and the lung field, where known)."""
    from doll.labels.evaluate import evaluate_labels as run, evaluation_path

    result = run(str(labels), dataset=dataset, root=str(root) if root else "", label_rule=label_rule, seed=seed,
                 out=str(out) if out else "", progress=not quiet)
    if as_json:
        emit(result, as_json=True)
    else:
        typer.echo(score_table(result))
        typer.echo(f"metrics: {evaluation_path(str(labels), str(out) if out else '')}")


PRIORS = (("mean", "labels"), ("random", "random map"), ("lung_prior", "lung mask"), ("field_prior", "lung field"))


def score_table(result: dict) -> str:
    """The five scores of the labels next to each prior that was computed, one row per score."""
    cols = [(key, name) for key, name in PRIORS if result.get(key)]
    lines = [f"{'':10s}" + "".join(f"{name:>12s}" for _, name in cols)]
    for score in ("iou", "dice", "topk_iou", "pointing", "ap"):
        lines.append(f"{score:10s}" + "".join(f"{result[key][score]:12.3f}" for key, _ in cols))
    lines.append(f"{result['pairs']} image-class pairs, label rule {result['label_rule']}")
    return "\n".join(lines)


@app.command("show")
def show(
    labels: Path = typer.Option(..., "--labels", help="A DoLL label file."),
    index: int = typer.Option(0, "--index", min=0, help="Row of the file to show."),
    out: Path = typer.Option(..., "--out", help="PNG file to write."),
    classes: str = typer.Option("", "--classes", help="Comma-separated classes (default: those explained for the image)."),
    label_rule: str = typer.Option("", "--label-rule", help="Override the file's label rule."),
    overwrite: bool = OVERWRITE,
):
    """Overlay of one image's pseudo labels (contours) and saliency, class by class."""
    from doll.report.overlay import show_labels

    result = show_labels(str(labels), index, out=str(out), classes=classes, label_rule=label_rule,
                         overwrite=overwrite)
    typer.echo(f"wrote {out} ({result['path']}: {', '.join(result['classes']) or 'no explained class'})")


@labels_app.command("info")
def info(labels: Path = typer.Argument(..., metavar="LABELS.h5", help="A DoLL label file."),
         verify: bool = typer.Option(False, "--verify", help="Also read every row (every chunk) and list those that cannot be read; exits 2 if any.")):
    """Format version, rows, classes, method and settings of a label file."""
    from doll.errors import DollError
    from doll.labels.tools import info as run

    result = run(str(labels), verify=verify)
    emit(result, as_json=True)
    bad = (result.get("verify") or {}).get("unreadable", [])
    if bad:
        first = next((b for b in bad if b["row"] is not None), bad[0])
        where = f"row {first['row']} ({first['id']})" if first["row"] is not None else f"dataset {first['dataset']}"
        raise DollError(f"{labels}: {len(bad)} unreadable row(s) (listed above under verify; first: {where}: "
                        f"{first['reason']}); re-run doll explain for them")


@labels_app.command("merge")
def merge(
    inputs: list[Path] = typer.Argument(..., metavar="LABELS.h5", help="Label files (shards of one run) to join."),
    out: Path = typer.Option(..., "--out", help="The merged file."),
    overwrite: bool = OVERWRITE,
):
    """Join label files made on separate machines into one (rows deduplicated by path)."""
    from doll.labels.tools import merge as run

    emit(run([str(p) for p in inputs], str(out), overwrite), keys=("out", "rows"))


@labels_app.command("refine")
def refine(
    labels: Path = typer.Argument(..., metavar="LABELS.h5", help="A DoLL label file."),
    model: Path = typer.Option(..., "--model", help="The --out folder of `doll pretrain` run on these labels."),
    out: Path = typer.Option(..., "--out", help="The refined label file to write (.h5)."),
    batch_size: int = typer.Option(32, "--batch-size", help="Images per forward pass."),
    lung_model: Path = typer.Option(None, "--lung-model", help="A `doll finetune --task lung` model folder whose field replaces the file's own (default: the file's)."),
    field_margin: float = typer.Option(None, "--field-margin", help="Dilation of the lung field as a fraction of the image size (default: the file's; 0: the predicted mask itself)."),
    device: str = DEVICE,
    overwrite: bool = OVERWRITE,
    quiet: bool = QUIET,
):
    """Self-training: relabel with a segmenter pretrained on the labels (its maps times a lung field, by default the file's)."""
    from doll.labels.tools import refine as run

    emit(run(str(labels), str(model), str(out), batch_size, device, str(lung_model) if lung_model else "",
             field_margin, overwrite, progress=not quiet), keys=("out", "rows"))


@labels_app.command("export")
def export(
    labels: Path = typer.Argument(..., metavar="LABELS.h5", help="A DoLL label file."),
    out: Path = typer.Option(..., "--out", help="Folder for images/, masks/<class>/ and labels.csv."),
    fmt: str = typer.Option("png", "--format", help="Export format: png."),
    label_rule: str = typer.Option("", "--label-rule", help="Override the file's label rule."),
    overwrite: bool = OVERWRITE,
    quiet: bool = QUIET,
):
    """Export pixel labels as PNG masks (one per class per image) plus a CSV, for tools that do not read HDF5."""
    from doll.labels.tools import export as run

    emit(run(str(labels), str(out), fmt, label_rule, progress=not quiet, overwrite=overwrite), keys=("out", "masks"))
