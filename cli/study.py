"""`doll study`."""
from __future__ import annotations

from pathlib import Path

import typer
from doll_cli.main import DEVICE, OVERWRITE, QUIET, RESUME, SEED, app


@app.command("study")
def study(
    task: str = typer.Option("jsrt", "--task", help="jsrt (lungs, heart, clavicles), lung (lung fields) or covid (infection). seg4cls and mixed are not supported yet."),
    dataset: str = typer.Option("jsrt", "--dataset", help="jsrt, montgomery, shenzhen, qata, covidqu, folder, ..."),
    root: Path = typer.Option(..., "--root", help="The folder you unpacked the data set into."),
    inits: str = typer.Option("random", "--inits", help="Comma-separated arms: random, a `doll pretrain` folder, imagenet:/path/to/weights, or NAME=any of these. The first is the reference unless --reference."),
    fractions: str = typer.Option("0.02,0.1,1", "--fractions", help="Comma-separated fractions of the training masks, in (0, 1]."),
    seeds: int = typer.Option(3, "--seeds", min=1, help="Paired seeds per cell: --seed .. --seed + N - 1. A seed draws the mask subset every init of that seed trains on."),
    modes: str = typer.Option("full,adapter", "--modes", help="Comma-separated fine-tuning modes: full, adapter, head."),
    max_steps: int = typer.Option(600, "--max-steps", min=1, help="The budget of every cell in optimiser steps."),
    val_every: int = typer.Option(0, "--val-every", min=0, help="Optimiser steps between evaluations (0: about ten per run)."),
    decoder: str = typer.Option("pspnet", "--decoder", help="Segmenter for random/imagenet inits (a pretrain folder brings its own): pspnet, unet, unetplusplus, deeplabv3plus or fpn."),
    encoder: str = typer.Option("resnet34", "--encoder", help="Encoder for random/imagenet inits (a pretrain folder brings its own)."),
    image_size: int = typer.Option(0, "--image-size", min=0, help="Square image size (0: finetune's default)."),
    batch_size: int = typer.Option(8, "--batch-size", help="Images per batch."),
    lr: float = typer.Option(1e-3, "--lr", help="Peak learning rate."),
    fold: int = typer.Option(1, "--fold", help="JSRT: train on this official fold (1 or 2), test on the other."),
    reference: str = typer.Option("", "--reference", help="The init (its name) paired differences are taken against (default: the first of --inits)."),
    devices: str = typer.Option("", "--devices", help="Comma-separated devices, e.g. cuda:0,cuda:1: one cell per device at a time (default: --device, one cell at a time)."),
    bootstrap: int = typer.Option(2000, "--bootstrap", min=1, help="Bootstrap resamples over test images."),
    out: Path = typer.Option(Path("artifacts/study"), "--out", help="Output folder: cells/, study.json, summary.md, report.html."),
    device: str = DEVICE, seed: int = SEED, resume: bool = RESUME, overwrite: bool = OVERWRITE, quiet: bool = QUIET,
):
    """Stage 4 as a paired experiment: fine-tune every init x fraction x seed x mode with the same step budget (the seed's masks shared by every init), then the paired differences with 95 % intervals over seeds (t) and test images (bootstrap), at the end and along the way. Writes study.json, summary.md and report.html; --resume continues at the next unfinished cell."""
    from doll.study.run import study as run

    doc = run(task=task, dataset=dataset, root=str(root), inits=inits, fractions=fractions, seeds=seeds, modes=modes,
              max_steps=max_steps, val_every=val_every, decoder=decoder, encoder=encoder, image_size=image_size,
              batch_size=batch_size, lr=lr, fold=fold, reference=reference, devices=devices, bootstrap=bootstrap,
              out=str(out), device=device, seed=seed, resume=resume, overwrite=overwrite, progress=not quiet)
    for c in doc["comparisons"]:
        d = c["final"]["mean_iou"]
        iv = d.get("ci95_t")
        iv = f" [{iv[0]:+.3f}, {iv[1]:+.3f}] (95 %, seeds)" if iv else ""
        typer.echo(f"{c['init']} - {c['reference']}, {c['mode']}, {c['n_masks']} masks: mean IoU {d['mean']:+.3f}{iv}")
    typer.echo(f"summary: {out / 'summary.md'}\nreport: {out / 'report.html'}")
