"""explain's distillation in torch, on the device that explained the maps, against the OpenCV +
NumPy code it replaced on 2026-12-06 (issue 37: explain's CPU side).

Explains ``--images`` images of a data set with a classifier ensemble (IG, each image's
positive classes, as ``doll explain`` does by default), distils every image's maps both
ways and prints one JSON object: how many saliency values differ and by how much, how many
pixel labels (the label file's rule) differ, and the time per map of each way on this
machine's CPU, and on CUDA where there is one::

    python benchmarks/distill_device.py --classifiers CLS --dataset covidqu --root DIR --images 64 > distill.json

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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--classifiers", required=True)
    ap.add_argument("--dataset", default="covidqu")
    ap.add_argument("--root", required=True)
    ap.add_argument("--split", default="train")
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--rule", default="otsu")
    args = ap.parse_args()
    t0 = time.time()
    per_image, targets, size = explain(args)
    print(f"explained {len(per_image)} images in {time.time() - t0:.0f} s", file=sys.stderr)

    ours = [distill(maps) for maps in per_image]
    theirs = [reference_distill(maps) for maps in per_image]
    diff = np.concatenate([np.abs(a.astype(int) - b.astype(int)).ravel() for a, b in zip(ours, theirs)])
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
        "cpus": os.cpu_count(), "torch": torch.__version__, "classifiers": args.classifiers, "dataset": args.dataset,
        "split": args.split, "images": len(per_image), "maps": n_maps, "members": len(per_image[0]), "size": size,
        "steps": args.steps,
        "saliency_values": int(diff.size), "saliency_values_differing": int((diff > 0).sum()),
        "saliency_max_difference": int(diff.max()),
        "label_rule": args.rule, "label_pixels": label_pixels, "label_pixels_differing": label_diff,
        "cpu_ms_per_map": {"opencv_numpy": round(ref_cpu / n_maps * 1e3, 3), "torch_cpu": round(ours_cpu / n_maps * 1e3, 3)},
    }
    if torch.cuda.is_available():
        device = torch.device("cuda")
        distill_maps(stacked, device=device)  # warm-up
        torch.cuda.synchronize()
        t0, c0 = time.perf_counter(), time.process_time()
        distill_maps(stacked, device=device)
        torch.cuda.synchronize()
        out["cuda_ms_per_map"] = round((time.perf_counter() - t0) / n_maps * 1e3, 3)
        out["cuda_cpu_ms_per_map"] = round((time.process_time() - c0) / n_maps * 1e3, 3)
        out["cuda_device"] = torch.cuda.get_device_name(device)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
