"""`doll explain`, `doll evaluate-labels`, `doll show`, `doll labels info|merge|export`."""
from __future__ import annotations

from pathlib import Path

import typer
from doll.labels.rule import DEFAULT_RULE
from doll_cli.main import DEVICE, OVERWRITE, QUIET, RESUME, SEED, Typer, app, emit

labels_app = Typer(help="Inspect, merge, refine and export DoLL label files.", no_args_is_help=True)


@app.command("explain")
def explain(
    classifiers: Path = typer.Option(Path("artifacts/classifiers"), "--classifiers", help="Output folder of `doll train-classifiers` (default: its default --out)."),
    dataset: str = typer.Option("phantom", "--dataset", help="The data set to label (same classes as the classifiers)."),
    root: Path = typer.Option(..., "--root", help="The folder you unpacked the data set into."),
    out: Path = typer.Option(Path("artifacts/doll_labels.h5"), "--out", help="The DoLL label file to write (.h5)."),
    method: str = typer.Option("ig", "--method", help="ig (Integrated Gradients), ig-smooth or gradcam."),
    split: str = typer.Option("train", "--split", help="Which split to label: train, valid, test, or '' for all."),
    steps: int = typer.Option(16, "--steps", help="IG integration steps (Gauss-Legendre)."),
    baseline: str = typer.Option("zero", "--baseline", help="IG baseline: zero (black image), blur or mean."),
    evidence: str = typer.Option("class", "--evidence", help="What a map explains: class (the class logit), abnormal (evidence against the normal class, No Finding or Normal: one map per image) or contrast (class logit minus the normal class's)."),
    targets: str = typer.Option("positive", "--targets", help="Classes to explain per image: positive (its positive labels), predicted or all."),
    target_threshold: float = typer.Option(0.5, "--target-threshold", min=0.0, max=1.0, help="Probability above which a class counts as predicted."),
    classes: str = typer.Option("", "--classes", help="Comma-separated classes to explain (default: all but No Finding)."),
    smooth: float = typer.Option(0.03, "--smooth", min=0.0, help="Gaussian smoothing sigma as a fraction of the image size."),
    sign: str = typer.Option("positive", "--sign", help="Which evidence counts: positive (the positive part of the attributions) or absolute."),
    label_rule: str = typer.Option(DEFAULT_RULE, "--label-rule", help="Saliency -> pixel label: otsu, quantile:Q or threshold:T."),
    batch_size: int = typer.Option(0, "--batch-size", help="Interpolated images per forward pass (sets peak memory); 0: 256 on a GPU, 16 on the CPU."),
    precision: str = typer.Option("auto", "--precision", help="IG arithmetic on a GPU: auto (float16 autocast, float32 where it overflows), fp16, bf16 or fp32. The CPU always uses float32."),
    lung_model: Path = typer.Option(None, "--lung-model", help="A `doll finetune --task lung` model folder (its model/ subfolder): saliency is kept inside the lung field it predicts."),
    field_margin: float = typer.Option(0.01, "--field-margin", help="With a lung model: the field that multiplies saliency is its predicted lung mask dilated by this fraction of the image size."),
    block: int = typer.Option(64, "--block", help="Images per resumable block (the unit of work shared among torchrun processes)."),
    image_size: int = typer.Option(0, "--image-size", min=0, help="Image size (0: the classifiers' own)."),
    device: str = DEVICE, seed: int = SEED, resume: bool = RESUME, overwrite: bool = OVERWRITE, quiet: bool = QUIET,
):
    """Stage 2: explain every classifier with Integrated Gradients, ensemble and distil the maps into per-class saliency and pixel labels, all in one HDF5 file. Resumable."""
    from doll.explain.run import explain as run

    result = run(classifiers=str(classifiers), dataset=dataset, root=str(root), out=str(out), method=method,
                 split=split, steps=steps, baseline=baseline, evidence=evidence, targets=targets, target_threshold=target_threshold,
                 classes=classes, smooth=smooth, sign=sign, label_rule=label_rule, batch_size=batch_size, precision=precision, block=block, lung_model=str(lung_model) if lung_model else "", field_margin=field_margin, image_size=image_size,
                 device=device, seed=seed, resume=resume, overwrite=overwrite, progress=not quiet)
    emit(result, keys=("images", "targets", "seconds", "seconds_per_image", "completeness_rel_error",
                       "completeness_rel_error_by_member"),
         footer=f"labels: {out}  metrics: {out}.metrics.json")


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
