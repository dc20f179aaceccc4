"""`doll train-classifiers`."""
from __future__ import annotations

from pathlib import Path

import typer
from doll_cli.main import DEVICE, OVERWRITE, QUIET, RESUME, SEED, app, emit


@app.command("train-classifiers")
def train_classifiers(
    dataset: str = typer.Option("phantom", "--dataset", help="Data set with image labels: chexpert, nih, phantom, covidqu, folder, ..."),
    root: Path = typer.Option(..., "--root", help="The folder you unpacked the data set into."),
    out: Path = typer.Option(Path("artifacts/classifiers"), "--out", help="Output folder (one member_<i>/ folder per classifier)."),
    arch: str = typer.Option("resnet18", "--arch", help="resnet18, resnet34, resnet50, densenet121 or efficientnet_b0; several, comma-separated, are cycled over the members."),
    init: str = typer.Option("random", "--init", help="Initial weights: random, or imagenet:/path/to/file with torchvision's weights for --arch (safetensors or a plain state dict, never downloaded; the first convolution's RGB kernels are summed for the one channel, the head is new). Several, comma-separated, are cycled over the members."),
    members: int = typer.Option(2, "--members", help="Number of classifiers in the ensemble (seeds seed, seed+1, ...)."),
    image_size: int = typer.Option(64, "--image-size", help="Images are resized to this square size."),
    epochs: int = typer.Option(8, "--epochs", help="Training epochs per member."),
    max_steps: int = typer.Option(0, "--max-steps", min=0, help="The training budget in optimiser steps; replaces --epochs (0: --epochs' worth). Recorded with the images seen and wall time in metrics.json."),
    val_every: int = typer.Option(0, "--val-every", min=0, help="Optimiser steps between evaluations and checkpoints (0: about ten per run)."),
    batch_size: int = typer.Option(32, "--batch-size", help="Images per batch (lower it if the GPU runs out of memory)."),
    lr: float = typer.Option(2e-3, "--lr", help="Peak learning rate (AdamW, warm-up then cosine)."),
    uncertain: str = typer.Option("ignore", "--uncertain", help="Uncertain (-1) labels: ignore (left out of the loss), zeros, ones or lsr."),
    blank: str = typer.Option("ignore", "--blank", help="Blank (not mentioned) labels: ignore or zeros."),
    views: str = typer.Option("frontal", "--views", help="CheXpert views: frontal, lateral or all."),
    valid_fraction: float = typer.Option(0.0, "--valid-fraction", help="Carve this fraction of patients from train as validation (0: the data set's own validation split, or 10 % of the train patients when it has none)."),
    accumulate: int = typer.Option(1, "--accumulate", help="Gradient accumulation steps (effective batch = batch size x this)."),
    patience: int = typer.Option(0, "--patience", min=0, help="Stop early after this many evaluations without a better validation score (0: never)."),
    lung_model: Path = typer.Option(None, "--lung-model", help="A `doll finetune --task lung` model folder (its model/ subfolder): the classifiers see only the lung field it predicts, so they cannot learn shortcuts outside it; `doll explain` masks their inputs the same way."),
    hide: str = typer.Option("0", "--hide", help="Hide-and-Seek augmentation: black out each cell of an 8x8 grid with this probability while training (e.g. 0.5), so the classifiers learn from all of the evidence, not only its most telling spot; their IG labels cover more of a lesion (0: off). Several, comma-separated, are cycled over the members (0,0.5: every other member)."),
    num_workers: int = typer.Option(0, "--num-workers", min=0, help="Data loader worker processes."),
    device: str = DEVICE, seed: int = SEED, resume: bool = RESUME, overwrite: bool = OVERWRITE, quiet: bool = QUIET,
):
    """Stage 1: train an ensemble of multi-label classifiers on image labels; reports per-class AUROC on the validation split. Writes model.safetensors + config.json per member."""
    from doll.classify.train import train_classifiers as run

    result = run(dataset=dataset, root=str(root), out=str(out), arch=arch, init=init, members=members, image_size=image_size,
                 epochs=epochs, max_steps=max_steps, val_every=val_every, batch_size=batch_size, lr=lr, uncertain=uncertain, blank=blank, views=views,
                 valid_fraction=valid_fraction, accumulate=accumulate, patience=patience,
                 lung_model=str(lung_model) if lung_model else "", hide=hide, num_workers=num_workers, device=device, seed=seed, resume=resume,
                 overwrite=overwrite, progress=not quiet)
    emit(result, keys=("mean_auroc", "n_train", "n_valid", "seconds"), footer=f"metrics: {out / 'metrics.json'}")
