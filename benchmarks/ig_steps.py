"""How many IG steps do DoLL labels need? The same `doll explain` run at several ``--steps``.

IG's cost is linear in ``--steps`` (every step is a forward and a backward pass per
target), so the step count is the biggest lever on the GPU-hours of a labelling run. This
script runs ``doll.explanation.run.explain`` once per step count on the same classifiers and
images and compares every run with the one at the most steps (the reference):

* ``completeness_rel_error``: IG's own check, |sum IG - (f(x) - f(b))| / |f(x) - f(b)|
  (median, p90), from the run's metrics (and ``completeness_rel_error_by_member`` for an
  ensemble; ``ig_path.py`` shows why one member's can be large);
* ``saliency_rel_l2``: || saliency - reference || / || reference || of the stored uint8
  maps, per explained (image, class), mean and p90;
* ``label_iou``: IoU of the pixel labels (the file's label rule) with the reference's,
  mean and p10 (maps that are empty in both count as 1);
* ``attribute_s_per_image``: the engine's time (all members) over all images of the split
  (images without a target to explain cost nothing);
* with ``--evaluate`` (data with ground truth): ``doll evaluate-labels``'s mean IoU,
  top-k IoU, pointing game and AP.

    # COVID-QU-Ex Val COVID-19 (the README's label-quality setting)
    python benchmarks/ig_steps.py --classifiers CLS_LM --dataset covidqu --root DIR --split valid \\
        --steps 4,8,16,32 --evaluate --work /tmp/steps --set classes=COVID-19 --set smooth=0.1 \\
        --set evidence=abnormal
    # phantoms (no download; trains a small classifier first)
    python benchmarks/ig_steps.py --steps 2,4,8,16 --evaluate --work /tmp/steps

``--set KEY=VALUE`` passes any other ``doll explain`` setting (the names of
``doll.explanation.run.ExplainSettings``). One JSON object goes to stdout.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from explain_pipeline import explain_settings, json_main, phantom_ensemble  # the sibling script (its folder is on sys.path when run as a script)

from doll.explanation.distill import apply_rule
from doll.explanation.run import explain
from doll.labels.evaluate import evaluate_labels
from doll.labels.store import LabelFile

OWN = ("classifiers", "dataset", "root", "split", "steps", "out", "overwrite", "resume", "progress")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--classifiers", default="", help="a `doll train-classifiers` folder (default: phantoms and a "
                                                     "classifier trained here, in --work)")
    p.add_argument("--dataset", default="phantom")
    p.add_argument("--root", default="")
    p.add_argument("--split", default="", help="the split to label, as doll explain --split ('' for all)")
    p.add_argument("--steps", default="4,8,16,32", help="comma-separated step counts; the largest is the reference")
    p.add_argument("--evaluate", action="store_true", help="also score each run with doll evaluate-labels")
    p.add_argument("--work", required=True, help="folder for the label files (and the phantom set)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="any other doll explain setting")
    args = p.parse_args(argv)
    try:
        args.steps = sorted({int(s) for s in args.steps.split(",") if s.strip()})
    except ValueError:
        p.error(f"--steps must be comma-separated integers, got {args.steps!r}")
    if len(args.steps) < 2 or args.steps[0] <= 0:
        p.error("--steps needs at least two positive step counts")
    if not args.classifiers and args.dataset != "phantom":
        p.error("--classifiers is needed for any data set but the built-in phantoms")
    args.extra = explain_settings(p, args.set, OWN)
    return args


def _stats(values: list[float], low: bool = False) -> dict:
    a = np.asarray(values, np.float64)
    q = 0.1 if low else 0.9
    return {"mean": round(float(a.mean()), 4), ("p10" if low else "p90"): round(float(np.quantile(a, q)), 4)}


def compare(path: str, reference: str) -> dict:
    """Saliency and label agreement of ``path`` with ``reference`` over the maps both explain."""
    rel, iou = [], []
    with LabelFile(path) as a, LabelFile(reference) as b:
        rule = b.label_rule
        targets = a["targets"][:] & b["targets"][:]
        for row in np.flatnonzero(targets.any(axis=1)):
            cs = np.flatnonzero(targets[row])
            sa, sb = a["saliency"][row][cs], b["saliency"][row][cs]  # uint8 (classes, H, W)
            fa, fb = sa.reshape(len(cs), -1).astype(np.float32), sb.reshape(len(cs), -1).astype(np.float32)
            rel += (np.linalg.norm(fa - fb, axis=1) / np.maximum(np.linalg.norm(fb, axis=1), 1e-6)).tolist()
            la, lb = apply_rule(sa, rule), apply_rule(sb, rule)
            inter, union = (la & lb).sum(axis=(1, 2)), (la | lb).sum(axis=(1, 2))
            iou += np.where(union > 0, inter / np.maximum(union, 1), 1.0).tolist()
    if not rel:
        return {"maps": 0}
    return {"maps": len(rel), "saliency_rel_l2": _stats(rel), "label_iou": _stats(iou, low=True)}


def run(args: argparse.Namespace) -> dict:
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    classifiers, root = args.classifiers, args.root
    if not classifiers:  # a small phantom set and one classifier, kept in --work for the next run
        data, folder, _ = phantom_ensemble(work, size=int(args.extra.get("image_size") or 64), images=160,
                                           arch="resnet18", members=1, epochs=4,
                                           device=args.extra.get("device", "auto"))
        classifiers, root = str(folder), str(data)
    files, rows = {}, {}
    for steps in args.steps:
        files[steps] = str(work / f"labels-{steps}steps.h5")
        m = explain(classifiers=classifiers, dataset=args.dataset, root=root, split=args.split, steps=steps,
                    out=files[steps], overwrite=True, progress=False, **args.extra)
        phases = m["seconds_by_phase"]
        rows[steps] = {"attribute_s_per_image": round(phases.get("attribute", 0.0) / max(m["images"], 1), 5),
                       "completeness_rel_error": m.get("completeness_rel_error"), "targets": m["targets"]}
        if "completeness_rel_error_by_member" in m:
            rows[steps]["completeness_rel_error_by_member"] = m["completeness_rel_error_by_member"]
        if args.evaluate:
            e = evaluate_labels(files[steps], progress=False)
            rows[steps]["evaluate"] = {k: round(v, 4) for k, v in e["mean"].items()}
    reference = args.steps[-1]
    for steps in args.steps[:-1]:
        rows[steps].update(compare(files[steps], files[reference]))
    with LabelFile(files[reference]) as lf:
        images, split = len(lf), lf.attr("split")
    return {"reference_steps": reference, "classifiers": classifiers, "dataset": args.dataset, "split": split,
            "images": images, "settings": args.extra, "by_steps": {str(k): v for k, v in rows.items()}}


def main(argv=None) -> int:
    return json_main(parse_args, run, argv)


if __name__ == "__main__":
    sys.exit(main())
