"""`doll data phantom | check`."""
from __future__ import annotations

from pathlib import Path

import typer
from doll_cli.main import QUIET, Typer, emit

data_app = Typer(help="Make and check data sets.", no_args_is_help=True)


@data_app.command("phantom")
def phantom(
    out: Path = typer.Option(..., "--out", help="Folder to write the phantom data set into."),
    n: int = typer.Option(200, "--n", help="Number of chest images (CheXpert layout)."),
    size: int = typer.Option(64, "--size", help="Image side in pixels (32 or more; 64 is what the README's examples and --image-size defaults use)."),
    seed: int = typer.Option(0, "--seed", help="Random seed; the same seed gives identical files."),
    n_anatomy: int = typer.Option(None, "--n-anatomy", min=0, show_default=False, help="Images in the JSRT-layout anatomy set (default: max(20, n/2))."),
    noise: float = typer.Option(0.05, "--noise", min=0.0, max=1.0, help="Fraction of training labels flipped."),
    uncertain: float = typer.Option(0.05, "--uncertain", help="Fraction of training labels written as -1 (uncertain)."),
    blank: float = typer.Option(0.1, "--blank", help="Fraction of negative training labels left blank."),
    confound: float = typer.Option(0.0, "--confound", help="Fraction of pneumothorax images that also get a chest tube."),
    valid_fraction: float = typer.Option(0.2, "--valid-fraction", min=0.0, max=1.0, help="Fraction of the patients written as the valid split."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a phantom data set already in --out."),
    quiet: bool = QUIET,
):
    """Write synthetic chest X-rays with ground truth, in the real layouts: CheXpert (train.csv, valid.csv, patient/study/view folders) plus finding masks, and the anatomy in the JSRT PNG layout (anatomy/images, anatomy/masks/<structure>)."""
    from doll.data.phantom import make_phantoms

    summary = make_phantoms(out, n=n, size=size, seed=seed, n_anatomy=n_anatomy, noise=noise,
                            uncertain=uncertain, blank=blank, confound=confound, valid_fraction=valid_fraction,
                            progress=not quiet, overwrite=overwrite)
    typer.echo(f"wrote {n} images to {out} (use --dataset phantom --root {out}; "
               f"anatomy: --dataset jsrt --root {out / 'anatomy'})")
    return summary


@data_app.command("check")
def check(
    dataset: str = typer.Option(..., "--dataset", help="chexpert, nih, jsrt, montgomery, shenzhen, qata, covidqu, phantom or folder."),
    root: Path = typer.Option(..., "--root", help="The folder you unpacked the data set into."),
    decode: int = typer.Option(200, "--decode", min=0, help="Decode this many images (spread over the set) to find corrupt files; 0 = all."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    quiet: bool = QUIET,
):
    """Validate a data set in place: counts per split, label statistics, masks, missing and unreadable files. Exits 2 (bad input) when problems are found."""
    from doll.data.check import check_dataset, format_report

    report = check_dataset(dataset, str(root), decode=decode, progress=not quiet)
    if as_json:
        emit(report, as_json=True)
    else:
        typer.echo(format_report(report))
    if not report["ok"]:
        from doll.errors import DollError

        wrong = report.get("mask_size_mismatch", 0)
        masks = f", and {wrong} mask(s) whose size is not their image's" if wrong else ""
        raise DollError(f"{dataset} at {root}: {report.get('missing_files', 0)} missing and {report.get('unreadable', 0)} "
                        f"unreadable files{masks} (listed above); fix or remove them")
