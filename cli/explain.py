"""`doll explain`, `doll evaluate-labels`, `doll show`, `doll labels info|merge|refine|export`: each command's
options are its settings' fields (doll_cli.options)."""
from __future__ import annotations

import typer
from doll.explanation.settings import ExplainSettings
from doll.labels.settings import EvaluateLabelsSettings, ExportSettings, InfoSettings, MergeSettings, RefineSettings
from doll.report.settings import ShowSettings
from doll_cli.main import Typer, app, emit
from doll_cli.options import settings_command

labels_app = Typer(help="Inspect, merge, refine and export DoLL label files.", no_args_is_help=True)


def _run_explain(settings):
    from doll.explanation.run import explain

    return explain(settings)


def _report_explain(result: dict, settings) -> None:
    emit(result, keys=("images", "targets", "seconds", "seconds_per_image", "completeness_rel_error",
                       "completeness_rel_error_by_member"),
         footer=f"labels: {settings.out}  metrics: {settings.out}.metrics.json")


# doll explain: its options are ExplainSettings' fields (doll_cli.options)
settings_command(app, "explain", ExplainSettings, _run_explain, report=_report_explain,
                 doc="Stage 2: explain every classifier with Integrated Gradients, ensemble and distil the maps into "
                     "per-class saliency and pixel labels, all in one HDF5 file. Resumable.")


def _evaluate_labels(settings) -> dict:
    from doll.labels.evaluate import evaluate_labels

    return evaluate_labels(settings.labels, dataset=settings.dataset, root=settings.root, label_rule=settings.label_rule,
                           seed=settings.seed, out=settings.out, progress=settings.progress)


def _report_evaluation(result: dict, settings) -> None:
    from doll.labels.evaluate import evaluation_path

    if settings.as_json:
        emit(result, as_json=True)
    else:
        typer.echo(score_table(result))
        typer.echo(f"metrics: {evaluation_path(settings.labels, settings.out)}")


settings_command(app, "evaluate-labels", EvaluateLabelsSettings, _evaluate_labels, report=_report_evaluation,
                 doc="Pseudo-label quality against ground-truth masks (or NIH boxes): IoU, Dice, top-k IoU, pointing "
                     "game and AP per class and mean, next to a random map (and the lung field, where known).")


PRIORS = (("mean", "labels"), ("random", "random map"), ("lung_prior", "lung mask"), ("field_prior", "lung field"))


def score_table(result: dict) -> str:
    """The five scores of the labels next to each prior that was computed, one row per score."""
    cols = [(key, name) for key, name in PRIORS if result.get(key)]
    lines = [f"{'':10s}" + "".join(f"{name:>12s}" for _, name in cols)]
    for score in ("iou", "dice", "topk_iou", "pointing", "ap"):
        lines.append(f"{score:10s}" + "".join(f"{result[key][score]:12.3f}" for key, _ in cols))
    lines.append(f"{result['pairs']} image-class pairs, label rule {result['label_rule']}")
    return "\n".join(lines)


def _show(settings) -> dict:
    from doll.report.overlay import show_labels

    return show_labels(settings.labels, settings.index, out=settings.out, classes=settings.classes,
                       label_rule=settings.label_rule, overwrite=settings.overwrite)


def _report_show(result: dict, settings) -> None:
    typer.echo(f"wrote {settings.out} ({result['path']}: {', '.join(result['classes']) or 'no explained class'})")


settings_command(app, "show", ShowSettings, _show, report=_report_show,
                 doc="Overlay of one image's pseudo labels (contours) and saliency, class by class.")


def _info(settings) -> dict:
    from doll.labels.tools import info

    return info(settings.labels, verify=settings.verify)


def _report_info(result: dict, settings) -> None:
    from doll.errors import DollError

    emit(result, as_json=True)
    bad = (result.get("verify") or {}).get("unreadable", [])
    if bad:
        first = next((b for b in bad if b["row"] is not None), bad[0])
        where = f"row {first['row']} ({first['id']})" if first["row"] is not None else f"dataset {first['dataset']}"
        raise DollError(f"{settings.labels}: {len(bad)} unreadable row(s) (listed above under verify; first: {where}: "
                        f"{first['reason']}); re-run doll explain for them")


settings_command(labels_app, "info", InfoSettings, _info, report=_report_info,
                 doc="Format version, rows, classes, method and settings of a label file.")


def _merge(settings) -> dict:
    from doll.labels.tools import merge

    return merge(list(settings.inputs), settings.out, settings.overwrite)


def _report_rows(result: dict, settings) -> None:
    emit(result, keys=("out", "rows"))


settings_command(labels_app, "merge", MergeSettings, _merge, report=_report_rows,
                 doc="Join label files made on separate machines into one (rows deduplicated by path).")


def _refine(settings) -> dict:
    from doll.labels.tools import refine

    return refine(settings.labels, settings.model, settings.out, settings.batch_size, settings.device,
                  settings.lung_model, settings.field_margin, settings.overwrite, progress=settings.progress)


settings_command(labels_app, "refine", RefineSettings, _refine, report=_report_rows,
                 doc="Self-training: relabel with a segmenter pretrained on the labels (its maps times a lung field, by "
                     "default the file's).")


def _export(settings) -> dict:
    from doll.labels.tools import export

    return export(settings.labels, settings.out, settings.fmt, settings.label_rule, progress=settings.progress,
                  overwrite=settings.overwrite)


def _report_export(result: dict, settings) -> None:
    emit(result, keys=("out", "masks"))


settings_command(labels_app, "export", ExportSettings, _export, report=_report_export,
                 doc="Export pixel labels as PNG masks (one per class per image) plus a CSV, for tools that do not read "
                     "HDF5.")
