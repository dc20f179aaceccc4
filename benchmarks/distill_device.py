"""explain's distillation in torch, on the device that explained the maps, against the OpenCV +
NumPy code it replaced on 2026-12-06 (issue 37: explain's CPU side).

Explains ``--images`` images of a data set with a classifier ensemble (IG, each image's
positive classes, as ``doll explain`` does by default), distils every image's maps both
ways and prints one JSON object: how many saliency values differ and by how much, how many
pixel labels (the label file's rule) differ, and the time per map of each way on this
machine's CPU, and on CUDA where there is one::

    python benchmarks/distill_device.py --classifiers CLS --dataset covidqu --root DIR --images 64 > distill.json

``--synthetic N`` needs no classifiers or data: N smooth random signed maps per member (2
members, ``--size`` px) instead of IG's; ``benchmarks/gpu.sh`` runs it, so the first GPU
also says whether the distillation on CUDA (float64 products) gives the CPU's numbers::

    python benchmarks/distill_device.py --synthetic 512 > distill.json

The reference (``reference_distill``) is the code of ``doll.explanation.distill`` before
2026-12-06: ``cv2.GaussianBlur`` and ``np.percentile`` per map.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import cv2
import numpy as np
import torch

from doll.data import labels_of, load_split
from doll.explanation.base import NORMAL_CLASSES, EvidenceOutput
from doll.explanation.distill import distill, distill_maps
from doll.explanation.ig import IntegratedGradients
from doll.labels.rule import apply_rule
from doll.models.ensemble import load_ensemble
from doll.utils import to_tensor


def reference_distill(member_maps: list[np.ndarray], smooth: float = 0.03) -> np.ndarray:
    """doll.explanation.distill.distill before 2026-12-06 (sign positive, no field)."""
    def normalise(a):
        a = cv2.GaussianBlur(np.maximum(a, 0).astype(np.float32), (0, 0), smooth * a.shape[-1])
        scale = np.percentile(a, 99)
        return np.zeros_like(a) if scale <= 0 else np.clip(a / scale, 0, 1)

    mean = np.stack([[normalise(m) for m in maps] for maps in member_maps]).mean(axis=0)
    return np.round(mean * 255).astype(np.uint8)


def explain(args) -> tuple[list[list[np.ndarray]], list[list[int]], int]:
    """Per image with a positive class, every member's IG maps (T, H, W) of its positive classes."""
    members, classes = load_ensemble(args.classifiers, torch.device("cpu"))
    size = members[0][1]["image_size"]
    _, arrays = load_split(args.dataset, args.root, args.split, size, progress=False)
    raw = labels_of(arrays, len(classes))
    allowed = np.array([c not in NORMAL_CLASSES for c in classes])
    chosen = [(i, np.flatnonzero((raw[i] == 1) & allowed).tolist()) for i in range(len(raw))]
    chosen = [(i, t) for i, t in chosen if t][:args.images]
    ig = IntegratedGradients(steps=args.steps, batch_size=16)
    per_image: list[list[np.ndarray]] = [[] for _ in chosen]
    for model, _, _ in members:
        for lo in range(0, len(chosen), 8):
            batch = chosen[lo:lo + 8]
            x = to_tensor(np.stack([arrays.images[i] for i, _ in batch]))  # normalised as explain does
            maps = ig.attribute(EvidenceOutput(model, "class", None), x, [t for _, t in batch])
            for j, m in enumerate(maps):
                per_image[lo + j].append(m)
    return per_image, [t for _, t in chosen], size


def synthetic(n: int, size: int, members: int = 2, seed: int = 0) -> tuple[list[list[np.ndarray]], list[list[int]], int]:
    """Per image one smooth random signed map per member (an IG map's scale: about 1e-3)."""
    rng = np.random.default_rng(seed)
    sigma = max(1.0, size / 100)
    per_image = [[cv2.GaussianBlur(rng.standard_normal((1, size, size), dtype=np.float32)[0], (0, 0), sigma)[None] * 1e-3
                  for _ in range(members)] for _ in range(n)]
    return per_image, [[0]] * n, size


def compare(ours: list[np.ndarray], theirs: list[np.ndarray]) -> dict:
    diff = np.concatenate([np.abs(a.astype(int) - b.astype(int)).ravel() for a, b in zip(ours, theirs)])
    return {"values": int(diff.size), "differing": int((diff > 0).sum()), "max_difference": int(diff.max())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--synthetic", type=int, default=0, help="N random maps instead of IG maps (no data needed)")
    ap.add_argument("--size", type=int, default=224, help="with --synthetic: the maps' size")
    ap.add_argument("--classifiers", default="")
    ap.add_argument("--dataset", default="covidqu")
    ap.add_argument("--root", default="")
    ap.add_argument("--split", default="train")
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--rule", default="otsu")
    args = ap.parse_args()
    t0 = time.time()
    if args.synthetic:
        per_image, targets, size = synthetic(args.synthetic, args.size)
    elif args.classifiers and args.root:
        per_image, targets, size = explain(args)
        print(f"explained {len(per_image)} images in {time.time() - t0:.0f} s", file=sys.stderr)
    else:
        ap.error("give --classifiers and --root (IG maps of real images), or --synthetic N")

    ours = [distill(maps) for maps in per_image]
    theirs = [reference_distill(maps) for maps in per_image]
    same = compare(ours, theirs)
    lab_ours = [apply_rule(s, args.rule) for s in ours]
    lab_theirs = [apply_rule(s, args.rule) for s in theirs]
    label_diff = sum(int((a != b).sum()) for a, b in zip(lab_ours, lab_theirs))
    label_pixels = sum(a.size for a in lab_ours)

    n_maps = sum(len(t) for t in targets)
    c0 = time.process_time()
    for maps in per_image:
        reference_distill(maps)
    ref_cpu = time.process_time() - c0
    stacked = [np.concatenate([maps[k] for maps in per_image]) for k in range(len(per_image[0]))]
    c0 = time.process_time()
    distill_maps(stacked)  # the whole set as one block, as explain distils a block
    ours_cpu = time.process_time() - c0
    out = {
        "benchmark": "distill_device", "date": time.strftime("%Y-%m-%d"), "machine": platform.machine(),
        "cpus": os.cpu_count(), "torch": torch.__version__,
        **({"maps_from": "synthetic"} if args.synthetic else {"maps_from": "ig", "classifiers": args.classifiers,
                                                                "dataset": args.dataset, "split": args.split,
                                                                "steps": args.steps}),
        "images": len(per_image), "maps": n_maps, "members": len(per_image[0]), "size": size,
        "saliency_values": same["values"], "saliency_values_differing": same["differing"],
        "saliency_max_difference": same["max_difference"],
        "label_rule": args.rule, "label_pixels": label_pixels, "label_pixels_differing": label_diff,
        "cpu_ms_per_map": {"opencv_numpy": round(ref_cpu / n_maps * 1e3, 3), "torch_cpu": round(ours_cpu / n_maps * 1e3, 3)},
    }
    if torch.cuda.is_available():
        device = torch.device("cuda")
        on_cuda = distill_maps(stacked, device=device)  # also the warm-up
        torch.cuda.synchronize()
        on_cpu = np.concatenate(ours)
        out["cuda_vs_opencv_numpy"] = compare([on_cuda], [np.concatenate(theirs)])
        out["cuda_vs_torch_cpu"] = compare([on_cuda], [on_cpu])
        t0, c0 = time.perf_counter(), time.process_time()
        distill_maps(stacked, device=device)
        torch.cuda.synchronize()
        out["cuda_ms_per_map"] = round((time.perf_counter() - t0) / n_maps * 1e3, 3)
        out["cuda_cpu_ms_per_map"] = round((time.process_time() - c0) / n_maps * 1e3, 3)
        out["cuda_device"] = torch.cuda.get_device_name(device)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
