"""`doll data phantom | check`: each command's options are its settings' fields (doll_cli.options)."""
from __future__ import annotations

from pathlib import Path

import typer
from doll.settings import CheckSettings, PhantomSettings
from doll_cli.main import Typer, emit
from doll_cli.options import settings_command

data_app = Typer(help="Make and check data sets.", no_args_is_help=True)


def _phantom(settings) -> dict:
    from doll.data.phantom import make_phantoms

    return make_phantoms(settings.out, n=settings.n, size=settings.size, seed=settings.seed,
                         n_anatomy=settings.n_anatomy, noise=settings.noise, uncertain=settings.uncertain,
                         blank=settings.blank, confound=settings.confound, valid_fraction=settings.valid_fraction,
                         progress=settings.progress, overwrite=settings.overwrite)


def _report_phantom(summary: dict, settings) -> dict:
    out = Path(settings.out)
    typer.echo(f"wrote {settings.n} images to {out} (use --dataset phantom --root {out}; "
               f"anatomy: --dataset jsrt --root {out / 'anatomy'})")
    return summary


settings_command(data_app, "phantom", PhantomSettings, _phantom, report=_report_phantom,
                 doc="Write synthetic chest X-rays with ground truth, in the real layouts: CheXpert (train.csv, "
                     "valid.csv, patient/study/view folders) plus finding masks, and the anatomy in the JSRT PNG layout "
                     "(anatomy/images, anatomy/masks/<structure>).")


def _check(settings) -> dict:
    from doll.data.check import check_dataset

    return check_dataset(settings.dataset, settings.root, decode=settings.decode, progress=settings.progress)


def _report_check(report: dict, settings) -> None:
    from doll.data.check import format_report

    if settings.as_json:
        emit(report, as_json=True)
    else:
        typer.echo(format_report(report))
    if not report["ok"]:
        from doll.errors import DollError

        wrong = report.get("mask_size_mismatch", 0)
        masks = f", and {wrong} mask(s) whose size is not their image's" if wrong else ""
        raise DollError(f"{settings.dataset} at {settings.root}: {report.get('missing_files', 0)} missing and "
                        f"{report.get('unreadable', 0)} unreadable files{masks} (listed above); fix or remove them")


settings_command(data_app, "check", CheckSettings, _check, report=_report_check,
                 doc="Validate a data set in place: counts per split, label statistics, masks, missing and unreadable "
                     "files. Exits 2 (bad input) when problems are found.")
