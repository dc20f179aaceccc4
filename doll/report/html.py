"""The demo's ``report.html``: numbers, a settings table and figures drawn by matplotlib
(``doll.report.plots``: training curves against optimiser steps, labelled image panels)."""
from __future__ import annotations

import html
from pathlib import Path

import numpy as np
import torch

from doll.data import load_split
from doll.data.dataset import to_tensor
from doll.labels.rule import apply_rule
from doll.labels.store import LabelFile
from doll.models.segmenter import load_segmenter
from doll.report.plots import line_chart, mask_panels
from doll.schema import read_label_evaluation
from doll.utils import atomic_path


def _label_panels(out_dir: Path, labels: str, count: int = 4) -> list[tuple[str, str]]:
    """One figure: for ``count`` images with explained classes, the ground truth and each
    class's saliency, then the pseudo labels the label rule made of them."""
    rows = []
    with LabelFile(labels) as lf:
        classes = lf.classes
        _, arrays = load_split(lf.dataset_name(), lf.attr("root"), lf.attr("split") or None,
                               int(lf.attr("image_size")), structures=classes, progress=False)
        by_id = {it.id: i for i, it in enumerate(arrays.items)}
        picked = [i for i in range(len(lf)) if lf["targets"][i].any()][:count]
        for i in picked:
            ks = np.flatnonzero(lf["targets"][i])[:3]
            sal, image = lf["saliency"][i], lf["images"][i]
            j = by_id.get(lf.paths()[i])
            truth = {classes[k]: arrays.masks[j, k] for k in ks} if j is not None else {}
            panels = [{"title": f"Image {i}: the drawn findings (ground truth)", "image": image, "masks": truth}]
            panels += [{"title": f"Saliency for {classes[k]}", "image": image, "heat": sal[k]} for k in ks]
            panels.append({"title": f"Pseudo labels (rule {lf.label_rule})", "image": image,
                           "masks": {classes[k]: apply_rule(sal[k], lf.label_rule) for k in ks}})
            rows.append({"panels": panels})
    if not rows:
        return []
    mask_panels(out_dir / "figures" / "labels.png", rows,
                title="DoLL labels: ground truth, Integrated Gradients saliency per class, pseudo labels")
    return [("labels.png", "ground truth, saliency per explained class and the pseudo labels, one image a row")]


def _prediction_panels(out_dir: Path, data: Path, models: dict[str, Path], count: int = 3) -> list[str]:
    """One figure per fine-tuned model (``models``: figure name -> the run's model folder):
    ground truth beside the prediction for ``count`` test images."""
    files = []
    for figure, folder in models.items():
        model, cfg = load_segmenter(folder)
        model.eval()
        _, arrays = load_split("jsrt", str(data / "anatomy"), "test", cfg["image_size"], structures=cfg["classes"],
                               progress=False)
        with torch.no_grad():
            pred = (model(to_tensor(arrays.images[:count])) > 0).numpy()
        names = list(cfg["classes"])
        rows = [{"panels": [
            {"title": f"Test image {i}: ground truth", "image": arrays.images[i],
             "masks": dict(zip(names, arrays.masks[i]))},
            {"title": f"Test image {i}: prediction", "image": arrays.images[i], "masks": dict(zip(names, pred[i]))}]}
            for i in range(min(count, len(pred)))]
        mask_panels(out_dir / "figures" / figure, rows, title=FIGURE_TITLES.get(figure, figure))
        files.append(figure)
    return files


FIGURE_TITLES = {"pred_doll_init.png": "Full fine-tuning from DoLL init", "pred_random_init.png":
                 "Full fine-tuning from random init", "pred_adapter_doll_init.png": "Adapters on the DoLL-pretrained network",
                 "pred_adapter_random_init.png": "Adapters on a random network"}


def _number(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def duration(seconds: float) -> str:
    """``742.2`` -> ``12 min 22 s``."""
    seconds = int(round(seconds))
    return f"{seconds // 60} min {seconds % 60} s" if seconds >= 60 else f"{seconds} s"


def _settings_table(plan: dict) -> str:
    rows = "".join(f"<tr><td>{html.escape(str(k).replace('_', ' '))}</td><td>{html.escape(str(v))}</td></tr>"
                   for k, v in plan.items())
    return f"<table><tr><th>setting</th><th>value</th></tr>{rows}</table>"


def _training_curves(out_dir: Path, report: dict) -> None:
    """The classifiers' validation AUROC and pretraining's validation IoU per optimiser step."""
    members = report["classifiers"].get("history") or {}
    if members:
        line_chart(out_dir / "figures" / "classifiers.png",
                   {name: ([r.get("step") for r in h], [r.get("val_auroc") for r in h]) for name, h in members.items()},
                   xlabel="optimiser step", ylabel="mean AUROC (validation split)",
                   title="Stage 1: classifiers, validation AUROC along the way", ylim=(0.4, 1.0))
    history = report["pretrain"].get("history") or []
    if history:
        line_chart(out_dir / "figures" / "pretrain.png",
                   {"PSPNet, DoLL labels": ([r.get("step") for r in history], [r.get("val_iou") for r in history])},
                   xlabel="optimiser step", ylabel="IoU against held-out pseudo labels",
                   title="Stage 3: pretraining on the DoLL labels")


def write_report(out_dir: Path, report: dict, labels: str, data: Path, models: dict[str, Path]) -> None:
    """``models``: figure file name -> fine-tuned model folder, one prediction figure each."""
    (out_dir / "figures").mkdir(parents=True, exist_ok=True)
    label_figs = _label_panels(out_dir, labels)
    pred_figs = _prediction_panels(out_dir, data, models)
    _training_curves(out_dir, report)
    ft = report["finetune"]
    arms = {"full": ft, "adapter": ft["adapter"]}
    curves = {f"{init} init, {mode} (final {a[key]['mean_iou']:.3f})": ([c["step"] for c in a[key]["curve"]],
                                                                       [c["test_iou"] for c in a[key]["curve"]])
              for mode, a in arms.items() for key, init in (("doll_init", "DoLL"), ("random_init", "random"))}
    line_chart(out_dir / "figures" / "curves.png", curves, xlabel="optimiser step", ylabel="mean IoU on the test split",
               title=f"Fine-tuning on {ft['n_train']} masks: test IoU along the way")
    lab = report["labels"]
    rows = "".join(f"<tr><td>{html.escape(c)}</td><td>{v['iou']:.3f}</td><td>{v['topk_iou']:.3f}</td>"
                   f"<td>{v['pointing']:.2f}</td><td>{v['n']}</td></tr>"
                   for c, v in sorted(read_label_quality(out_dir).items()))
    structs = "".join(f"<tr><td>{html.escape(s)}</td>" + "".join(f"<td>{a[k]['per_structure'][s]['iou']:.3f}</td>"
                                                               for a in arms.values() for k in ("doll_init", "random_init"))
                      + "</tr>" for s in ft["doll_init"]["per_structure"])
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>DoLL demo report</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:auto}}td,th{{padding:2px 10px;text-align:left}}
img{{max-width:100%}}table{{border-collapse:collapse}}tr:nth-child(even){{background:#f4f4f4}}</style></head><body>
<h1>DoLL demo report</h1>
<p>The whole pipeline on synthetic phantoms ({'quick' if report['quick'] else 'full'} plan), in
{duration(report['seconds'])}. <i>{html.escape(report['finetune']['note'])}.</i></p>
<details><summary>Settings of this run</summary>{_settings_table(report['plan'])}</details>
<h2>1. Classifiers</h2><p>Ensemble mean AUROC on the validation split: <b>{report['classifiers']['mean_auroc']:.3f}</b>
({report['classifiers']['members']} member(s)).</p>
{'<p><img src="figures/classifiers.png" alt="classifier validation AUROC against optimiser steps"></p>' if (out_dir / "figures" / "classifiers.png").exists() else ''}
<h2>2. DoLL labels (Integrated Gradients, distilled)</h2>
<p>Mean IoU of the pseudo labels vs the phantoms' ground-truth finding masks: <b>{lab['mean_iou']:.3f}</b>
(random map, same rule: {lab['random_iou']:.3f}); top-k IoU {lab['mean']['topk_iou']:.3f}
(random {lab['random']['topk_iou']:.3f}); pointing game {lab['mean']['pointing']:.2f}
(random {lab['random']['pointing']:.2f}). Label rule: {html.escape(lab['label_rule'])}.</p>
<table><tr><th>class</th><th>IoU</th><th>top-k IoU</th><th>pointing</th><th>n</th></tr>{rows}</table>
{''.join(f'<p>{html.escape(c[0].upper() + c[1:])}.<br><img src="figures/{f}"></p>' for f, c in label_figs)}
<h2>3. Pretraining</h2><p>PSPNet, validation IoU against held-out pseudo labels (not ground truth):
<b>{_number(report['pretrain']['val_iou'])}</b>.</p>
{'<p><img src="figures/pretrain.png" alt="pretraining validation IoU against optimiser steps"></p>' if (out_dir / "figures" / "pretrain.png").exists() else ''}
<h2>4. Fine-tuning on the phantom anatomy with {ft['n_train']} masks ({ft['label_fraction']:.0%})</h2>
<p>Full fine-tuning (every weight): <b>{html.escape(ft['verdict'])}</b>.<br>
Adapters ({ft['adapter']['doll_init']['trainable_params']:,} trainable weights on a frozen network):
<b>{html.escape(ft['adapter']['verdict'])}</b>.<br>
Adapters against what you would do instead, fine-tuning every weight from random init:
<b>{html.escape(ft['adapter']['verdict_vs_full_random'])}</b>.<br>
<i>{html.escape(ft['note'])}.</i><br>Test images: {ft['n_test']}; test IoU along the way:</p>
<p><img src="figures/curves.png" alt="test IoU against optimiser steps, four arms"></p>
<table><tr><th>structure (IoU)</th><th>DoLL init, full</th><th>random init, full</th><th>DoLL init, adapters</th>
<th>random init, adapters</th></tr>{structs}</table>
<p>A structure at IoU 0.000 was not segmented at all: with so few masks and steps a network often learns the
large structures (lungs, heart) first and the clavicles last.</p>
{''.join(f'<p>{html.escape(FIGURE_TITLES.get(f, f))}: ground truth (left) and prediction (right).<br><img src="figures/{f}"></p>' for f in pred_figs)}
</body></html>"""
    with atomic_path(out_dir / "report.html") as tmp:
        tmp.write_text(page)


def read_label_quality(out_dir: Path) -> dict:
    """The demo's ``label_quality.json`` (evaluate-labels' result), checked
    (:func:`doll.schema.read_label_evaluation`): its per-class numbers go into the report's table,
    so a damaged file is an error naming the field, never a traceback or a table of garbage."""
    path = out_dir / "label_quality.json"
    return read_label_evaluation(path, "run doll demo again (it writes the file anew)")["per_class"]
