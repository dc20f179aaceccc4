"""`doll study`."""
from __future__ import annotations

import typer
from doll.studies.options import StudySettings
from doll_cli.main import app
from doll_cli.options import settings_command


def _run(settings):
    from doll.studies.run import study

    return study(settings)


def _report(doc: dict, settings) -> None:
    for c in doc["comparisons"]:
        d = c["final"]["mean_iou"]
        iv = d.get("ci95_t")
        iv = f" [{iv[0]:+.3f}, {iv[1]:+.3f}] (95 %, seeds)" if iv else ""
        typer.echo(f"{c['init']} - {c['reference']}, {c['mode']}, {c['n_masks']} masks: mean IoU {d['mean']:+.3f}{iv}")
    typer.echo(f"summary: {settings.out}/summary.md\nreport: {settings.out}/report.html")


# doll study: its options are StudySettings' fields (doll_cli.options)
settings_command(app, "study", StudySettings, _run, report=_report,
                 doc="Stage 4 as a paired experiment: fine-tune every init x fraction x seed x mode with the same step "
                     "budget (the seed's masks shared by every init), then the paired differences with 95 % intervals "
                     "over seeds (t) and test images (bootstrap), at the end and along the way. Writes study.json, "
                     "summary.md and report.html; --resume continues at the next unfinished cell.")
