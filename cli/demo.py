"""`doll demo`."""
from __future__ import annotations

from pathlib import Path

import typer
from doll_cli.main import DEVICE, QUIET, SEED, app


@app.command("demo")
def demo(
    out: Path = typer.Option(Path("artifacts/demo"), "--out", help="Output folder (replaced if it holds an earlier demo)."),
    quick: bool = typer.Option(False, "--quick", help="A smaller run (1-3 minutes on a 2-core CPU; the full demo 4-11)."),
    device: str = DEVICE, seed: int = SEED, quiet: bool = QUIET,
):
    """Run the whole DoLL pipeline on built-in synthetic phantoms (no download) and write report.json and report.html: classifiers -> IG labels -> pretraining -> fine-tuning from DoLL init vs random init."""
    from doll.demonstration import demo as run

    run(out=str(out), quick=quick, seed=seed, device=device, progress=not quiet)
