"""`doll pretrain`: its options are PretrainSettings' fields (doll_cli.options)."""
from __future__ import annotations

from doll.pretraining.settings import PretrainSettings
from doll_cli.main import app, emit
from doll_cli.options import settings_command


def _run(settings):
    from doll.pretraining.train import pretrain

    return pretrain(settings)


def _report(result: dict, settings) -> None:
    emit(result, keys=("val_iou", "best_step", "n_train", "n_val", "seconds"), footer=f"metrics: {settings.out}/metrics.json")


settings_command(app, "pretrain", PretrainSettings, _run, report=_report,
                 doc="Stage 3: pretrain a whole segmenter (PSPNet by default; encoder and decoder) on DoLL pseudo labels.")
