"""`doll pretrain`."""
from __future__ import annotations

from pathlib import Path

import typer
from doll_cli.main import DEVICE, OVERWRITE, QUIET, RESUME, SEED, app, emit


@app.command("pretrain")
def pretrain(
    labels: Path = typer.Option(Path("artifacts/doll_labels.h5"), "--labels", help="A DoLL label file made by `doll explain` (default: its default --out)."),
    dataset: str = typer.Option("", "--dataset", help="The data set the labels were made from, whose patients the validation split keeps apart (default: the one the file names; a format of your own, package.module:ClassName, must be named here: doll never imports code a label file names)."),
    out: Path = typer.Option(Path("artifacts/pretrain"), "--out", help="Output folder (loadable with segmentation_models_pytorch.from_pretrained)."),
    decoder: str = typer.Option("pspnet", "--decoder", help="Segmenter: pspnet (the method's network), unet, unetplusplus, deeplabv3plus or fpn."),
    encoder: str = typer.Option("resnet34", "--encoder", help="Encoder: resnet18, resnet34, resnet50 or densenet121."),
    epochs: int = typer.Option(10, "--epochs", help="Training epochs."),
    max_steps: int = typer.Option(0, "--max-steps", min=0, help="The training budget in optimiser steps; replaces --epochs (0: --epochs' worth). Recorded with the images seen and wall time in metrics.json."),
    val_every: int = typer.Option(0, "--val-every", min=0, help="Optimiser steps between evaluations and checkpoints (0: about ten per run)."),
    batch_size: int = typer.Option(16, "--batch-size", help="Images per batch."),
    lr: float = typer.Option(1e-3, "--lr", help="Peak learning rate."),
    label_rule: str = typer.Option("", "--label-rule", help="Override the file's rule: otsu, quantile:Q or threshold:T."),
    soft: bool = typer.Option(False, "--soft", help="Train on the soft saliency instead of hard labels."),
    background_weight: float = typer.Option(0.1, "--background-weight", help="Loss weight of background pixels."),
    dice_weight: float = typer.Option(0.5, "--dice-weight", min=0.0, help="Weight of the soft Dice term added to the per-pixel loss (0: none)."),
    aux: bool = typer.Option(False, "--aux", help="Also train an auxiliary classification head on the encoder with the image labels."),
    aux_weight: float = typer.Option(0.2, "--aux-weight", min=0.0, help="With --aux: weight of the image-label loss of that head."),
    val_fraction: float = typer.Option(0.1, "--val-fraction", help="Fraction of the patients (seeded) whose rows are held out for validation (rows, when the data set the labels came from cannot be opened here)."),
    accumulate: int = typer.Option(1, "--accumulate", help="Gradient accumulation steps (effective batch = batch size x this)."),
    patience: int = typer.Option(0, "--patience", min=0, help="Stop early after this many evaluations without a better validation score (0: never)."),
    num_workers: int = typer.Option(0, "--num-workers", min=0, help="Data loader worker processes."),
    device: str = DEVICE, seed: int = SEED, resume: bool = RESUME, overwrite: bool = OVERWRITE, quiet: bool = QUIET,
):
    """Stage 3: pretrain a whole segmenter (PSPNet by default; encoder and decoder) on DoLL pseudo labels."""
    from doll.pretrain.train import pretrain as run

    result = run(labels=str(labels), dataset=dataset, out=str(out), decoder=decoder, encoder=encoder, epochs=epochs,
                 max_steps=max_steps, val_every=val_every, batch_size=batch_size, lr=lr,
                 label_rule=label_rule, soft=soft, background_weight=background_weight, dice_weight=dice_weight,
                 aux=aux, aux_weight=aux_weight, val_fraction=val_fraction, accumulate=accumulate, patience=patience,
                 num_workers=num_workers, device=device, seed=seed, resume=resume, overwrite=overwrite,
                 progress=not quiet)
    emit(result, keys=("val_iou", "best_step", "n_train", "n_val", "seconds"), footer=f"metrics: {out / 'metrics.json'}")
