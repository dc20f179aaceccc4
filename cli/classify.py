"""`doll train-classifiers`: its options are ClassifierSettings' fields (doll_cli.options)."""
from __future__ import annotations

from doll.classification.settings import ClassifierSettings
from doll_cli.main import app, emit
from doll_cli.options import settings_command


def _run(settings):
    from doll.classification.train import train_classifiers

    return train_classifiers(settings)


def _report(result: dict, settings) -> None:
    emit(result, keys=("mean_auroc", "n_train", "n_valid", "seconds"), footer=f"metrics: {settings.out}/metrics.json")


settings_command(app, "train-classifiers", ClassifierSettings, _run, report=_report,
                 doc="Stage 1: train an ensemble of multi-label classifiers on image labels; reports per-class AUROC on "
                     "the validation split. Writes model.safetensors + config.json per member.")
