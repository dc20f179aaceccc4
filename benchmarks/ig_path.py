"""Why is a member's IG completeness error large? Its output along the IG path.

IG integrates the gradient of the explained output f along the straight path
``b + a (x - b)``, a in [0, 1]; completeness says the attributions sum to f(x) - f(b).
When f is not monotone along that path, the sum must cancel a long climb and fall down to
a small net change, and a few quadrature nodes miss a narrow valley: the relative
completeness error that `doll explain` reports (``completeness_rel_error_by_member``)
is then large. This script shows it, per ensemble member, on images of a data set:

* ``path``: f on a grid of a (``alphas``), mean and 10th / 90th percentile over the images;
* ``abs_delta_median``: the median |f(x) - f(b)|; ``path_variation_median``: the median
  total variation sum |f(a_i+1) - f(a_i)| along the grid (>= |f(x) - f(b)|);
* ``by_steps``: for each ``--steps``, the absolute and relative completeness errors
  (median, p90) and ``top_overlap``: the share of the top ``--top`` pixels of the positive
  part of the map that are also top pixels at the largest step count (mean over images):
  whether more steps would change the labels.

Inputs are prepared as `doll explain` prepares them (faded outside the lung field of the
classifiers' ``--lung-model``; same ``--evidence`` and ``--baseline``).

    # COVID-QU-Ex Val COVID-19, the README's 4-member ensemble
    python benchmarks/ig_path.py --classifiers CLS --dataset covidqu --root DIR --split valid \\
        --class COVID-19 --evidence abnormal --images 64 --steps 16,32,64
    # phantoms (no download; trains two small classifiers in --work first)
    python benchmarks/ig_path.py --work /tmp/path

One JSON object goes to stdout.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from explain_pipeline import json_main, phantom_ensemble  # the sibling script (its folder is on sys.path when run as a script)

from doll.data import labels_of, load_split
from doll.data.dataset import to_tensor
from doll.explanation.base import EVIDENCE, NORMAL_CLASSES, EvidenceOutput, normal_class
from doll.explanation.ig import BASELINES, IntegratedGradients, make_baseline
from doll.models.ensemble import load_ensemble
from doll.models.lung_field import mask_images, predict_lung_fields
from doll.utils import resolve_device


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--classifiers", default="", help="a `doll train-classifiers` folder (default: phantoms and two "
                                                     "classifiers trained here, in --work)")
    p.add_argument("--dataset", default="phantom")
    p.add_argument("--root", default="")
    p.add_argument("--split", default="valid", help="the split to take images from ('' for all)")
    p.add_argument("--class", dest="cls", default="", help="explain this class on images positive for it "
                                                           "(default: the first class that is not a normal class)")
    p.add_argument("--evidence", default="class", choices=EVIDENCE)
    p.add_argument("--baseline", default="zero", choices=BASELINES)
    p.add_argument("--images", type=int, default=64, help="images, evenly spaced among the positive ones")
    p.add_argument("--steps", default="16,32,64", help="comma-separated IG step counts; the largest is the reference")
    p.add_argument("--grid", type=int, default=41, help="points of the path profile")
    p.add_argument("--top", type=float, default=0.13, help="share of pixels whose overlap across step counts is reported")
    p.add_argument("--image-size", type=int, default=0, help="0: the classifiers' own")
    p.add_argument("--batch-size", type=int, default=16, help="interpolated images per forward pass")
    p.add_argument("--device", default="auto")
    p.add_argument("--work", default="", help="folder for the phantoms and classifiers when --classifiers is not given")
    args = p.parse_args(argv)
    try:
        args.steps = sorted({int(s) for s in args.steps.split(",") if s.strip()})
    except ValueError:
        p.error(f"--steps must be comma-separated integers, got {args.steps!r}")
    if not args.steps or args.steps[0] <= 0:
        p.error("--steps needs positive step counts")
    if args.images <= 0 or args.grid < 2 or not 0 < args.top < 1:
        p.error("--images must be positive, --grid at least 2 and --top in (0, 1)")
    if not args.classifiers and (args.dataset != "phantom" or not args.work):
        p.error("--classifiers is needed for any data set but the built-in phantoms (which need --work)")
    return args


def _q(a: np.ndarray) -> dict:
    return {"median": round(float(np.median(a)), 4), "p90": round(float(np.quantile(a, 0.9)), 4)}


def top_overlap(a: np.ndarray, b: np.ndarray, share: float) -> np.ndarray:
    """Per image, the share of the top ``share`` pixels of max(a, 0) that are top pixels of max(b, 0)."""
    a, b = np.clip(a, 0, None).reshape(len(a), -1), np.clip(b, 0, None).reshape(len(b), -1)
    k = max(1, int(share * a.shape[1]))
    ta, tb = np.argsort(-a, axis=1)[:, :k], np.argsort(-b, axis=1)[:, :k]
    return np.array([len(np.intersect1d(x, y)) / k for x, y in zip(ta, tb)])


def run(args: argparse.Namespace) -> dict:
    device = resolve_device(args.device)
    classifiers, root = args.classifiers, args.root
    if not classifiers:
        data, folder, _ = phantom_ensemble(Path(args.work), size=args.image_size or 64, images=160, arch="resnet18",
                                           members=2, epochs=4, device=args.device)
        classifiers, root = str(folder), str(data)
    members, classes = load_ensemble(classifiers, device)
    cls = args.cls or next(c for c in classes if c not in NORMAL_CLASSES)
    if cls not in classes:
        raise SystemExit(f"ig_path: --class {cls!r} is not one of the classifiers' classes: {', '.join(classes)}")
    c = classes.index(cls)
    size = args.image_size or members[0][1]["image_size"]
    _, arrays = load_split(args.dataset, root, args.split or None, size, progress=False)
    positive = np.flatnonzero(labels_of(arrays, len(classes))[:, c] == 1)
    if not len(positive):
        raise SystemExit(f"ig_path: no image of split {args.split!r} is positive for {cls!r}")
    chosen = positive[np.unique(np.linspace(0, len(positive) - 1, min(args.images, len(positive))).round().astype(int))]
    images = arrays.images[chosen]
    if members[0][1].get("lung_model"):  # as the classifiers saw them in training and `doll explain`
        images = mask_images(images, predict_lung_fields(members[0][1]["lung_model"], images, device, args.batch_size))
    x = to_tensor(images).to(device)
    b = make_baseline(x, args.baseline)
    diff = x - b
    alphas = np.linspace(0, 1, args.grid)
    normal = normal_class(classes, args.evidence)
    out = {}
    for model, _, info in members:
        f = EvidenceOutput(model, args.evidence, normal).eval()
        with torch.no_grad():
            path = np.stack([np.concatenate([f(b[i:i + args.batch_size] + a * diff[i:i + args.batch_size])[:, c]
                                             .float().cpu().numpy() for i in range(0, len(x), args.batch_size)])
                             for a in alphas]).astype(np.float64)  # (grid, images)
        delta = path[-1] - path[0]
        row = {"path": {"mean": path.mean(1).round(3).tolist(), "p10": np.quantile(path, 0.1, axis=1).round(3).tolist(),
                        "p90": np.quantile(path, 0.9, axis=1).round(3).tolist()},
               "abs_delta_median": round(float(np.median(np.abs(delta))), 4),
               "path_variation_median": round(float(np.median(np.abs(np.diff(path, axis=0)).sum(0))), 4),
               "by_steps": {}}
        maps = {}
        for steps in args.steps:
            ig = IntegratedGradients(steps=steps, baseline=args.baseline, batch_size=args.batch_size, precision="fp32")
            maps[steps] = np.stack([m[0] for m in ig.attribute(f, x, [[c]] * len(x))])
            err = np.abs(maps[steps].sum(axis=(1, 2)) - delta)
            row["by_steps"][str(steps)] = {"abs_error": _q(err), "rel_error": _q(err / np.maximum(np.abs(delta), 1e-6))}
        for steps in args.steps[:-1]:
            row["by_steps"][str(steps)]["top_overlap"] = round(float(top_overlap(maps[steps], maps[args.steps[-1]], args.top).mean()), 4)
        out[info["folder"]] = row
    return {"classifiers": classifiers, "dataset": args.dataset, "split": args.split, "class": cls,
            "evidence": args.evidence, "baseline": args.baseline, "images": len(x), "reference_steps": args.steps[-1],
            "top": args.top, "alphas": alphas.round(4).tolist(), "members": out}


def main(argv=None) -> int:
    return json_main(parse_args, run, argv)


if __name__ == "__main__":
    sys.exit(main())
