"""`doll finetune`."""
from __future__ import annotations

import os

import typer
from doll.finetuning.options import FinetuneSettings
from doll_cli.main import app, emit
from doll_cli.options import settings_command


def _run(settings):
    from doll.finetuning.run import finetune

    return finetune(settings)


def _report(result: dict, settings) -> None:
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
                       "total_params", "seconds"), footer=f"metrics: {settings.out}/metrics.json")


# doll finetune: its options are FinetuneSettings' fields (doll_cli.options)
settings_command(app, "finetune", FinetuneSettings, _run, report=_report,
                 doc="Stage 4: fine-tune a (DoLL-pretrained) segmenter on a small real segmentation task; reports a "
                     "headline figure named with its test split (with a 95 % interval over test images), per-structure "
                     "IoU and Dice, and the curve per optimiser step.")
