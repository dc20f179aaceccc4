"""`doll finetune`."""
from __future__ import annotations

import os

from pathlib import Path

import typer
from doll_cli.main import DEVICE, OVERWRITE, QUIET, RESUME, SEED, app, emit


TASK_PANEL = "Only for --task seg4cls or mixed"


@app.command("finetune")
def finetune(
    task: str = typer.Option("jsrt", "--task", help="jsrt (lungs, heart, clavicles), lung (lung fields), covid (infection), seg4cls (segmentation for classification) or mixed (a few masks + image labels, alternating)."),
    dataset: str = typer.Option("jsrt", "--dataset", help="jsrt, montgomery, shenzhen, qata, covidqu, folder, ..."),
    root: Path = typer.Option(..., "--root", help="The folder you unpacked the data set into."),
    init: str = typer.Option("random", "--init", help="A `doll pretrain` output folder, random, or imagenet:/path/to/local/weights."),
    out: Path = typer.Option(Path("artifacts/finetune"), "--out", help="Output folder."),
    transfer: str = typer.Option("all", "--transfer", rich_help_panel="Only with a pretrained --init", help="With a pretrained --init: all (encoder and decoder, the method) or encoder (a new decoder and head)."),
    pretrained_lr: float = typer.Option(1.0, "--pretrained-lr", rich_help_panel="Only with a pretrained --init", help="With a pretrained --init and --mode full: the pretrained layers' learning rate as a multiple of --lr (e.g. 0.1); the new head keeps --lr."),
    mode: str = typer.Option("full", "--mode", help="full (all weights), adapter (frozen network + small adapters + new head) or head (new head only)."),
    label_fraction: float = typer.Option(1.0, "--label-fraction", help="Fraction of the training masks to use, in (0, 1] (at least one image)."),
    decoder: str = typer.Option("pspnet", "--decoder", help="Segmenter for random/imagenet init (a pretrain folder brings its own): pspnet, unet, unetplusplus, deeplabv3plus or fpn."),
    encoder: str = typer.Option("resnet34", "--encoder", help="Encoder for random/imagenet init (a pretrain folder brings its own)."),
    image_size: int = typer.Option(0, "--image-size", min=0, help="Square image size (0: the pretrained network's, else 256)."),
    fold: int = typer.Option(1, "--fold", help="JSRT: train on this official fold (1 or 2), test on the other."),
    epochs: int = typer.Option(0, "--epochs", min=0, help="The budget in epochs, for those who think in epochs; converted to optimiser steps. Ignored when --max-steps is given. With neither: 600 steps for jsrt / lung / covid, 20 epochs for seg4cls / mixed."),
    max_steps: int = typer.Option(0, "--max-steps", min=0, help="The budget in optimiser steps (0: --epochs converted to steps, else the task's default: 600 steps for jsrt / lung / covid, 20 epochs for seg4cls / mixed). Recorded with the images seen and wall time in metrics.json."),
    val_every: int = typer.Option(0, "--val-every", min=0, help="Optimiser steps between evaluations and checkpoints (0: about ten per run)."),
    batch_size: int = typer.Option(8, "--batch-size", help="Images per batch."),
    lr: float = typer.Option(1e-3, "--lr", help="Peak learning rate."),
    seeds: int = typer.Option(1, "--seeds", help="Repeat with this many seeds and report mean and std."),
    summarizer: str = typer.Option("all", "--summarizer", rich_help_panel=TASK_PANEL, help="seg4cls: how a mask becomes an image label: rule, linear, pool-linear, cnn-mask, embedding (comma-separated) or all."),
    baselines: bool = typer.Option(True, "--baselines/--no-baselines", rich_help_panel=TASK_PANEL, help="seg4cls: also train the plain classifier and the multitask net to compare against."),
    pseudo: bool = typer.Option(False, "--pseudo", rich_help_panel=TASK_PANEL, help="seg4cls: train a student on real masks + the segmenter's pseudo-masks of the other training images."),
    boosted: bool = typer.Option(False, "--boosted", rich_help_panel=TASK_PANEL, help="seg4cls: like --pseudo, but image labels clean the pseudo-masks (negatives: empty; positives with an empty pseudo-mask: dropped)."),
    pooling: str = typer.Option("max,amp-mlp", "--pooling", rich_help_panel=TASK_PANEL, help="mixed: class logits from the segmentation logits by max, amp-mlp (8x8 max pool + MLP) or both."),
    accumulate: int = typer.Option(1, "--accumulate", help="Gradient accumulation steps (effective batch = batch size x this)."),
    strict: bool = typer.Option(False, "--strict", help="Refuse masks that are neither their image's size nor that size divided by a whole number (default: resize them)."),
    num_workers: int = typer.Option(0, "--num-workers", min=0, help="Data loader worker processes."),
    device: str = DEVICE, seed: int = SEED, resume: bool = RESUME, overwrite: bool = OVERWRITE, quiet: bool = QUIET,
):
    """Stage 4: fine-tune a (DoLL-pretrained) segmenter on a small real segmentation task; reports a headline figure named with its test split (with a 95 % interval over test images), per-structure IoU and Dice, and the curve per optimiser step."""
    from doll.errors import DollError
    from doll.finetune.run import finetune as run

    if pseudo and boosted:
        raise DollError("--pseudo and --boosted are two ways to train the student; choose one")
    result = run(task=task, dataset=dataset, root=str(root), init=init, out=str(out), mode=mode, transfer=transfer, pretrained_lr=pretrained_lr,
                 label_fraction=label_fraction, decoder=decoder, encoder=encoder, image_size=image_size, fold=fold, epochs=epochs, max_steps=max_steps, val_every=val_every,
                 batch_size=batch_size, lr=lr, seeds=seeds, accumulate=accumulate, strict=strict, summarizer=summarizer,
                 pseudo="boosted" if boosted else "pseudo" if pseudo else "none", pooling=pooling, baselines=baselines, num_workers=num_workers, device=device, seed=seed,
                 resume=resume, overwrite=overwrite, progress=not quiet)
    headline = result.get("headline")
    if headline and os.environ.get("RANK", "0") == "0":
        ci = headline.get("ci95")
        ci = f" [{ci[0]:.3f}, {ci[1]:.3f}] (95 % bootstrap over test images)" if ci else ""
        typer.echo(f"headline: {headline['metric']} = {headline['value']:.3f}{ci}: {headline['what']}")
        if headline.get("false_positive_area") is not None:
            typer.echo(f"          false-positive area = {headline['false_positive_area']:.4f}: "
                       f"{headline['false_positive_area_what']}")
    emit(result, keys=("test_split", "mean_auroc", "mean_iou", "mean_iou_std", "mean_dice", "mean_f1", "positives_mean_iou", "negatives_false_positive_area",
                       "n_train", "n_test", "trainable_params",
                       "total_params", "seconds"), footer=f"metrics: {out / 'metrics.json'}")
