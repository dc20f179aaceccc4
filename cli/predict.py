"""`doll predict`."""
from __future__ import annotations

from pathlib import Path

import typer
from doll_cli.main import DEVICE, OVERWRITE, QUIET, SEED, app, emit


@app.command("predict")
def predict(
    model: Path = typer.Option(..., "--model", help="A doll segmenter: a `doll pretrain` folder, a `doll finetune` run (full, adapter or head mode) or its model/ folder, seg4cls's segmenter/."),
    inputs: list[Path] = typer.Option(..., "--input", metavar="<path>...", help="An image file or a folder of them (PNG, JPEG, 8 or 16 bit; JSRT .IMG; DICOM). Repeat --input, or list several paths after it (--input scans/*.dcm)."),
    out: Path = typer.Option(..., "--out", help="Output folder: masks/<structure>/<image>.png, overlays/, predictions.csv."),
    batch_size: int = typer.Option(16, "--batch-size", help="Images per batch on the device."),
    threshold: float = typer.Option(0.5, "--threshold", help="A pixel belongs to a structure when its probability is above this."),
    device: str = DEVICE, seed: int = SEED, overwrite: bool = OVERWRITE, quiet: bool = QUIET,
    more_inputs: list[Path] = typer.Argument(None, hidden=True, show_default=False, metavar="PATH"),
):
    """Apply a doll segmenter to your images with the preprocessing it was trained with: a mask per structure at each image's own size, overlays and a CSV of areas."""
    from doll.prediction.run import predict as run

    result = run(model=str(model), inputs=[str(p) for p in [*inputs, *(more_inputs or [])]], out=str(out),
                 batch_size=batch_size, threshold=threshold, device=device, seed=seed, overwrite=overwrite,
                 progress=not quiet)
    emit(result, keys=("images", "structures", "device", "seconds"),
         footer=f"masks, overlays and predictions.csv in {out}")
