"""Integrated Gradients speed: doll's batched engine against Captum, at equal output.

One classifier (``build_classifier``, random init, eval mode), the same seeded images
(uniform noise in [0, 1] normalised with the dataset's MEAN/STD, like real images), the
same targets (the first ``--targets`` classes for every image), the same number of steps
and the same quadrature (Gauss-Legendre; ``method="gausslegendre"`` in Captum) and the
same ``zero`` baseline (``doll.explanation.ig.make_baseline``). Three ways, each timed after
one untimed warm-up (on CUDA the same inputs, on the CPU the first image):

* ``doll``: one ``IntegratedGradients.attribute`` call over all images and targets;
* ``captum_naive``: ``captum.attr.IntegratedGradients`` once per (image, target);
* ``captum_batched``: per image, the image repeated T times with ``target=[c0, c1, ...]``
  (Captum's way of batching targets).

On the CPU all three run in float32. On CUDA the model and images are channels_last for
all three, and doll's engine also runs under float16 autocast (``--precision``), as
``doll explain`` does, so the maps differ there by rounding. The maps (channel-summed) are
checked against the naive Captum ones: ``max_rel_diff`` = max over maps of
``max|a - b| / max|b|`` (one pixel decides it) and ``rel_l2_diff_by_method`` = max over
maps of ``||a - b|| / ||b||``. One JSON object goes to stdout; see benchmarks/README.md.

    python benchmarks/explain_speed.py                      # CPU defaults
    python benchmarks/explain_speed.py --device cuda --arch densenet121 --image-size 224
"""
from __future__ import annotations

import argparse
import json
import resource
import sys
import time

import numpy as np
import torch

from doll.data.dataset import MEAN, STD
from doll.explanation.ig import PRECISIONS, IntegratedGradients, default_batch_size, make_baseline
from doll.models.classifier import CLASSIFIER_ARCHS, build_classifier
from doll.utils import resolve_device

SLOWER_WARNING = 1.2  # warn when doll_s_per_image is > 20 % above the baseline's


def compare_to_baseline(result: dict, key: str, baseline_json: str, what: str, value: float | None = None) -> None:
    """Set ``result["baseline_ratio"]`` (``value``, default ``result[key]``, over the stored
    result's ``key``) and warn on stderr when it is above ``SLOWER_WARNING``."""
    with open(baseline_json) as fh:
        base = json.load(fh)
    ratio = (result[key] if value is None else value) / base[key]
    result["baseline_ratio"] = round(ratio, 3)
    if ratio > SLOWER_WARNING:
        print(f"warning: {what} is {100 * (ratio - 1):.0f}% slower than the baseline "
              f"({result[key]} vs {base[key]} s/image, {baseline_json})", file=sys.stderr)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", default="resnet18", choices=CLASSIFIER_ARCHS)
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--classes", type=int, default=14, help="logits of the classifier")
    p.add_argument("--targets", type=int, default=14, help="targets per image: the first K classes")
    p.add_argument("--images", type=int, default=4)
    p.add_argument("--steps", type=int, default=16)
    p.add_argument("--batch-size", type=int, default=None,
                   help="doll's batch_size and Captum's internal_batch_size (interpolated images per forward); "
                        "default: doll explain's (256 on a GPU, 16 on the CPU)")
    p.add_argument("--precision", default="auto", choices=list(PRECISIONS), help="doll's IG arithmetic on CUDA")
    p.add_argument("--device", default="auto", help="auto|cpu|cuda")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--baseline-json", default=None, help="a stored result of this script to compare against")
    p.add_argument("--skip-captum-batched", action="store_true")
    a = p.parse_args(argv)
    for name in ("image_size", "classes", "targets", "images", "steps", "batch_size"):
        if getattr(a, name) is not None and getattr(a, name) <= 0:
            p.error(f"--{name.replace('_', '-')} must be positive")
    if a.targets > a.classes:
        p.error(f"--targets {a.targets} exceeds --classes {a.classes}")
    return a


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, device: torch.device) -> tuple[object, float, float | None]:
    """(result, seconds, peak CUDA MiB of this call or None)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    _sync(device)
    t0 = time.perf_counter()
    out = fn()
    _sync(device)
    dt = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    return out, dt, peak


def run_doll(model, x, targets, args):
    ig = IntegratedGradients(steps=args.steps, baseline="zero", batch_size=args.batch_size, precision=args.precision)
    return [np.asarray(m, np.float32) for m in ig.attribute(model, x, targets)]


def run_captum_naive(cig, x, b, targets, args):
    maps = []
    for i in range(len(x)):
        per = []
        for c in targets[i]:
            a = cig.attribute(x[i:i + 1], baselines=b[i:i + 1], target=c, n_steps=args.steps,
                              method="gausslegendre", internal_batch_size=args.batch_size)
            per.append(a.sum(dim=1)[0].detach().float().cpu().numpy())
        maps.append(np.stack(per))
    return maps


def run_captum_batched(cig, x, b, targets, args):
    maps = []
    for i in range(len(x)):
        t = len(targets[i])
        fmt = torch.channels_last if x.device.type == "cuda" else torch.contiguous_format
        xi = x[i:i + 1].expand(t, *x.shape[1:]).contiguous(memory_format=fmt)
        bi = b[i:i + 1].expand(t, *b.shape[1:]).contiguous(memory_format=fmt)
        a = cig.attribute(xi, baselines=bi, target=list(targets[i]), n_steps=args.steps,
                          method="gausslegendre", internal_batch_size=args.batch_size)
        maps.append(a.sum(dim=1).detach().float().cpu().numpy())
    return maps


def rel_l2_diff(maps, ref) -> float:
    """Worst map's ||a - b|| / ||b||: robust to a few pixels, unlike max_rel_diff."""
    return max(float(np.linalg.norm(a - b) / max(float(np.linalg.norm(b)), 1e-12))
               for a_img, b_img in zip(maps, ref) for a, b in zip(a_img, b_img))


def max_rel_diff(maps, ref) -> float:
    worst = 0.0
    for a_img, b_img in zip(maps, ref):
        for a, b in zip(a_img, b_img):
            worst = max(worst, float(np.abs(a - b).max() / max(float(np.abs(b).max()), 1e-12)))
    return worst


def main(argv=None) -> int:
    args = parse_args(argv)
    from captum.attr import (
        IntegratedGradients as CaptumIG,  # imported late: argument errors stay fast
    )

    device = resolve_device(args.device)
    args.batch_size = args.batch_size or default_batch_size(device)
    torch.manual_seed(args.seed)
    model = build_classifier(args.arch, args.classes).to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)  # gradients w.r.t. the input only, as in doll explain
    gen = torch.Generator().manual_seed(args.seed)
    x = ((torch.rand(args.images, 1, args.image_size, args.image_size, generator=gen) - MEAN) / STD).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    b = make_baseline(x, "zero")
    targets = [list(range(args.targets)) for _ in range(args.images)]
    cig = CaptumIG(model)

    ways = {
        "doll": lambda xs, bs, ts: run_doll(model, xs, ts, args),
        "captum_naive": lambda xs, bs, ts: run_captum_naive(cig, xs, bs, ts, args),
    }
    if not args.skip_captum_batched:
        ways["captum_batched"] = lambda xs, bs, ts: run_captum_batched(cig, xs, bs, ts, args)

    seconds, peaks, maps = {}, {}, {}
    for name, fn in ways.items():
        if device.type == "cuda":  # warm-up on the timed inputs: CUDA kernels and allocator see the timed shapes
            fn(x, b, targets)
        else:  # the CPU has no per-shape state worth a second full run: the first image, all its targets
            fn(x[:1], b[:1], targets[:1])
        maps[name], seconds[name], peaks[name] = _timed(lambda fn=fn: fn(x, b, targets), device)

    ref = maps["captum_naive"]
    diffs = {f"{k}_vs_captum_naive": max_rel_diff(maps[k], ref) for k in maps if k != "captum_naive"}
    per_image = {k: v / args.images for k, v in seconds.items()}
    sig = lambda v: float(f"{v:.4g}")  # noqa: E731
    result = {
        "doll_s_per_image": sig(per_image["doll"]),
        "captum_naive_s_per_image": sig(per_image["captum_naive"]),
        "captum_batched_s_per_image": sig(per_image["captum_batched"]) if "captum_batched" in per_image else None,
        "speedup_vs_naive": round(per_image["captum_naive"] / per_image["doll"], 3),
        "speedup_vs_batched": (round(per_image["captum_batched"] / per_image["doll"], 3)
                               if "captum_batched" in per_image else None),
        "max_rel_diff": max(diffs.values()),
        "max_rel_diff_by_method": diffs,
        "rel_l2_diff_by_method": {f"{k}_vs_captum_naive": round(rel_l2_diff(maps[k], ref), 5)
                                  for k in maps if k != "captum_naive"},
    }
    if device.type == "cuda":
        result["peak_cuda_mb"] = round(max(peaks.values()), 1)
        result["peak_cuda_mb_by_method"] = {k: round(v, 1) for k, v in peaks.items()}
    else:
        rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
        result["peak_rss_mb"] = round(rss_kb / 1024 / (1024 if sys.platform == "darwin" else 1), 1)
    if device.type == "cuda":
        result["gpu"] = torch.cuda.get_device_name(device)
    result.update(device=device.type,
                  arch=args.arch, image_size=args.image_size, images=args.images, classes=args.classes,
                  targets=args.targets, steps=args.steps, batch_size=args.batch_size, precision=args.precision,
                  torch=torch.__version__, threads=torch.get_num_threads())
    if args.baseline_json:
        compare_to_baseline(result, "doll_s_per_image", args.baseline_json, "doll IG", value=per_image["doll"])
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
