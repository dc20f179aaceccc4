"""The demo's ``report.html``: numbers, curves (inline SVG) and overlay pictures (PNG files)."""
from __future__ import annotations

import html
import json
from pathlib import Path

import numpy as np
import torch

from doll.data import load_split
from doll.data.dataset import to_tensor
from doll.labels.rule import apply_rule
from doll.labels.store import LabelFile
from doll.models.segmenter import load_segmenter
from doll.report.overlay import overlay, write_png
from doll.report.plots import line_chart
from doll.utils import atomic_path


def _label_panels(out_dir: Path, labels: str, count: int = 4) -> list[str]:
    files = []
    with LabelFile(labels) as lf:
        classes = lf.classes
        _, arrays = load_split(lf.dataset_name(), lf.attr("root"), lf.attr("split") or None,
                               int(lf.attr("image_size")), structures=classes, progress=False)
        by_id = {it.id: i for i, it in enumerate(arrays.items)}
        rows = [i for i in range(len(lf)) if lf["targets"][i].any()][:count]
        for i in rows:
            ks = np.flatnonzero(lf["targets"][i])[:3]
            sal = lf["saliency"][i]
            j = by_id.get(lf.paths()[i])
            gt = [arrays.masks[j, k] for k in ks] if j is not None else []
            panel = overlay(lf["images"][i], gt, [classes[k] for k in ks], [sal[k] for k in ks])
            labelled = overlay(lf["images"][i], [apply_rule(sal[k], lf.label_rule) for k in ks], [], None)
            name = f"labels_{i}.png"
            write_png(out_dir / "figures" / name, np.concatenate([panel, labelled], axis=1))
            files.append((name, ", ".join(classes[k] for k in ks)))
    return files


def _prediction_panels(out_dir: Path, data: Path, models: dict[str, Path], count: int = 4) -> list[str]:
    """One figure per fine-tuned model (``models``: figure name -> the run's model folder)."""
    files = []
    for figure, folder in models.items():
        model, cfg = load_segmenter(folder)
        model.eval()
        _, arrays = load_split("jsrt", str(data / "anatomy"), "test", cfg["image_size"], structures=cfg["classes"],
                               progress=False)
        with torch.no_grad():
            pred = (model(to_tensor(arrays.images[:count])) > 0).numpy()
        rows = [np.concatenate([overlay(arrays.images[i], list(arrays.masks[i]), cfg["classes"]),
                                overlay(arrays.images[i], list(pred[i]), cfg["classes"])], axis=1)
                for i in range(min(count, len(pred)))]
        write_png(out_dir / "figures" / figure, np.concatenate(rows, axis=0))
        files.append(figure)
    return files


def write_report(out_dir: Path, report: dict, labels: str, data: Path, models: dict[str, Path]) -> None:
    """``models``: figure file name -> fine-tuned model folder, one prediction figure each."""
    label_figs = _label_panels(out_dir, labels)
    pred_figs = _prediction_panels(out_dir, data, models)
    ft = report["finetune"]
    arms = {"full": ft, "adapter": ft["adapter"]}
    curves = {f"{init} init, {mode} (final {a[key]['mean_iou']:.3f})": ([c["step"] for c in a[key]["curve"]],
                                                                       [c["test_iou"] for c in a[key]["curve"]])
              for mode, a in arms.items() for key, init in (("doll_init", "DoLL"), ("random_init", "random"))}
    (out_dir / "figures").mkdir(parents=True, exist_ok=True)
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
img{{image-rendering:pixelated;max-width:100%}}</style></head><body>
<h1>DoLL demo report</h1>
<p>{'Quick' if report['quick'] else 'Full'} run on synthetic phantoms, {report['seconds']} s.
Plan: {html.escape(str(report['plan']))}</p>
<h2>1. Classifiers</h2><p>Ensemble mean AUROC on the validation split: <b>{report['classifiers']['mean_auroc']:.3f}</b></p>
<h2>2. DoLL labels (Integrated Gradients, distilled)</h2>
<p>Mean IoU of the pseudo labels vs the phantoms' ground-truth finding masks: <b>{lab['mean_iou']:.3f}</b>
(random map, same rule: {lab['random_iou']:.3f}); top-k IoU {lab['mean']['topk_iou']:.3f}
(random {lab['random']['topk_iou']:.3f}); pointing game {lab['mean']['pointing']:.2f}
(random {lab['random']['pointing']:.2f}). Label rule: {html.escape(lab['label_rule'])}.</p>
<table><tr><th>class</th><th>IoU</th><th>top-k IoU</th><th>pointing</th><th>n</th></tr>{rows}</table>
<p>Left: image with ground-truth contours and the saliency per explained class; right: the pseudo labels.</p>
{''.join(f'<p>{html.escape(c)}<br><img src="figures/{f}"></p>' for f, c in label_figs)}
<h2>3. Pretraining</h2><p>PSPNet validation IoU against held-out pseudo labels: {report['pretrain']['val_iou']}</p>
<h2>4. Fine-tuning on the phantom anatomy with {ft['n_train']} masks ({ft['label_fraction']:.0%})</h2>
<p>Full fine-tuning (every weight): <b>{html.escape(ft['verdict'])}</b>.<br>
Adapters ({ft['adapter']['doll_init']['trainable_params']} trainable weights on a frozen network):
<b>{html.escape(ft['adapter']['verdict'])}</b>.<br>
Adapters against what you would do instead, fine-tuning every weight from random init:
<b>{html.escape(ft['adapter']['verdict_vs_full_random'])}</b>.<br>
<i>{html.escape(ft['note'])}.</i><br>Test images: {ft['n_test']}; test IoU along the way:</p>
<p><img src="figures/curves.png" alt="test IoU against optimiser steps, four arms"></p>
<table><tr><th>structure (IoU)</th><th>DoLL init, full</th><th>random init, full</th><th>DoLL init, adapters</th>
<th>random init, adapters</th></tr>{structs}</table>
{''.join(f'<p>{f[5:-4]} (left: ground truth, right: prediction)<br><img src="figures/{f}"></p>' for f in pred_figs)}
</body></html>"""
    with atomic_path(out_dir / "report.html") as tmp:
        tmp.write_text(page)


def read_label_quality(out_dir: Path) -> dict:
    return json.loads((out_dir / "label_quality.json").read_text())["per_class"]
