"""`doll pretrain`."""
from __future__ import annotations

from pathlib import Path

import typer
from doll_cli.main import DEVICE, OVERWRITE, QUIET, RESUME, SEED, app, emit


@app.command("pretrain")
def pretrain(
    labels: Path = typer.Option(..., "--labels", help="A DoLL label file made by `doll explain`."),
    dataset: str = typer.Option("", "--dataset", help="The data set the labels were made from, whose patients the validation split keeps apart (default: the one the file names; a format of your own, package.module:ClassName, must be named here: doll never imports code a label file names)."),
    out: Path = typer.Option(Path("artifacts/pretrain"), "--out", help="Output folder (loadable with segmentation_models_pytorch.from_pretrained)."),
    encoder: str = typer.Option("resnet34", "--encoder", help="PSPNet encoder: resnet18, resnet34, resnet50 or densenet121."),
    epochs: int = typer.Option(10, "--epochs", help="Training epochs."),
    batch_size: int = typer.Option(16, "--batch-size", help="Images per batch."),
    lr: float = typer.Option(1e-3, "--lr", help="Peak learning rate."),
    label_rule: str = typer.Option("", "--label-rule", help="Override the file's rule: otsu, quantile:Q or threshold:T."),
    soft: bool = typer.Option(False, "--soft", help="Train on the soft saliency instead of hard labels."),
    background_weight: float = typer.Option(0.1, "--background-weight", help="Loss weight of background pixels."),
    aux: bool = typer.Option(False, "--aux", help="Also train an auxiliary classification head on the encoder with the image labels."),
    val_fraction: float = typer.Option(0.1, "--val-fraction", help="Fraction of the patients (seeded) whose rows are held out for validation (rows, when the data set the labels came from cannot be opened here)."),
    accumulate: int = typer.Option(1, "--accumulate", help="Gradient accumulation steps (effective batch = batch size x this)."),
    patience: int = typer.Option(0, "--patience", min=0, help="Stop early after this many epochs without a better validation score (0: never)."),
    num_workers: int = typer.Option(0, "--num-workers", min=0, help="Data loader worker processes."),
    device: str = DEVICE, seed: int = SEED, resume: bool = RESUME, overwrite: bool = OVERWRITE, quiet: bool = QUIET,
):
    """Stage 3: pretrain a whole PSPNet (encoder and decoder) on DoLL pseudo labels."""
    from doll.pretrain.train import pretrain as run

    result = run(labels=str(labels), dataset=dataset, out=str(out), encoder=encoder, epochs=epochs, batch_size=batch_size, lr=lr,
                 label_rule=label_rule, soft=soft, background_weight=background_weight, aux=aux, val_fraction=val_fraction, accumulate=accumulate, patience=patience,
                 num_workers=num_workers, device=device, seed=seed, resume=resume, overwrite=overwrite,
                 progress=not quiet)
    emit(result, keys=("val_iou", "best_epoch", "n_train", "n_val", "seconds"), footer=f"metrics: {out / 'metrics.json'}")
