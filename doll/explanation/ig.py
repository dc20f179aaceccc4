"""Integrated Gradients, batched over images x steps x targets.

Same quadrature as ``captum.attr.IntegratedGradients(method="gausslegendre")``: the
path ``b + a (x - b)`` is sampled at Gauss-Legendre nodes ``a_k`` on [0, 1] with weights
``w_k`` and ``IG_c(x) = (x - b) * sum_k w_k d f_c(b + a_k (x - b)) / dx`` (f = logits).

Speed at equal output: all targets of an image share one forward pass over its
interpolation path, and the targets' backward passes run in a loop over that retained
graph. The loop beat batching the backward passes with vmap
(``torch.autograd.grad(..., is_grads_batched=True)``) on both an H100 and a 2-core CPU,
and giving every target its own path (Captum's batched targets) on both
(``benchmarks/ig_variants.py``; figures in benchmarks/README.md). ``batch_size`` caps the number of interpolated images per forward,
so peak memory is set by it, not by steps x targets.

Precision: float32 on the CPU (equal to Captum to ~1e-6). On CUDA, ``precision="auto"``
runs the model under float16 autocast with channels_last; the backward is seeded with
``GRAD_SCALE`` so small input gradients do not underflow, and a chunk whose gradients
come out non-finite is redone in float32. float16 rather than bfloat16: at the same
speed its IG completeness error matched float32's, bfloat16's was 1.7x larger (H100,
DenseNet-121). ``precision="fp32"`` turns autocast off.

Completeness errors ``|sum IG - (f(x) - f(b))| / |f(x) - f(b)|``, one per explained
target, come back with the maps (``Attribution.diagnostics["completeness_rel_error"]``).
"""
from __future__ import annotations

import hashlib

import cv2
import numpy as np
import torch

from doll.data.dataset import MEAN, STD
from doll.errors import DollError
from doll.explanation.base import Attribution, Explainer

BASELINES = ("zero", "blur", "mean")


def gauss_legendre(steps: int) -> tuple[np.ndarray, np.ndarray]:
    x, w = np.polynomial.legendre.leggauss(steps)
    return 0.5 * (x + 1), 0.5 * w


def make_baseline(images: torch.Tensor, kind: str) -> torch.Tensor:
    """``zero``: a black image (no attenuation); ``blur``: the image blurred with
    sigma = size/10; ``mean``: the image's mean intensity everywhere."""
    if kind == "zero":
        return torch.full_like(images, (0.0 - MEAN) / STD)
    if kind == "mean":
        return images.mean(dim=(-2, -1), keepdim=True).expand_as(images).clone()
    if kind == "blur":
        sigma = images.shape[-1] / 10
        arr = images.detach().float().cpu().numpy()
        out = np.stack([[cv2.GaussianBlur(ch, (0, 0), sigma) for ch in img] for img in arr])
        return torch.as_tensor(out, dtype=images.dtype, device=images.device)
    raise DollError(f"unknown --baseline {kind!r}; choose one of {', '.join(BASELINES)}")


PRECISIONS = {"auto": torch.float16, "fp16": torch.float16, "bf16": torch.bfloat16, "fp32": None}
GRAD_SCALE = 1024.0  # seeds the backward under float16 so that small input gradients stay representable


def check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise DollError(f"unknown --precision {precision!r}; choose one of {', '.join(PRECISIONS)}")


def default_batch_size(device: torch.device) -> int:
    """Interpolated images per forward when ``--batch-size`` is not given: the GPU needs
    big batches to be busy, but gains little beyond 256 (DenseNet-121 at 224 px, float16,
    3 targets, H100: 0.0156 s/image at 256 points per forward, 0.0148 at 1024; peak
    17.6 GB at 256). The CPU is fastest with small ones (ResNet-18, 128 px, 14 targets,
    2 cores: 2.49 s/image at 16 points, 2.68 at 32, 3.26 at 64; and `doll explain` on
    64 px phantoms: 0.45 s/image at 16, 0.52 at 64)."""
    return 256 if device.type == "cuda" else 16


class IntegratedGradients(Explainer):
    name = "ig"

    def __init__(self, steps: int = 16, baseline: str = "zero", batch_size: int = 64, precision: str = "auto",
                 **settings):
        if steps <= 0:
            raise DollError(f"--steps must be positive, got {steps}")
        if baseline not in BASELINES:
            raise DollError(f"unknown --baseline {baseline!r}; choose one of {', '.join(BASELINES)}")
        check_precision(precision)
        super().__init__(steps=steps, baseline=baseline, batch_size=batch_size, precision=precision, **settings)
        self.steps, self.baseline, self.batch_size, self.precision = steps, baseline, max(1, batch_size), precision
        self.alphas, self.weights = gauss_legendre(steps)

    def _grads(self, model, points: torch.Tensor, tmat: torch.Tensor, exact: bool = False,
               diagnostics: dict | None = None) -> torch.Tensor:
        """Gradients of the targets' logits at ``points`` (P, 1, H, W).

        ``tmat`` (T, P, C) selects, per target slot, which logit each point contributes.
        One forward, T backward passes over its graph; returns float32 (T, P, 1, H, W).
        ``exact``: float32 whatever ``precision`` says (the redo after a float16 overflow).
        """
        dtype = PRECISIONS[self.precision] if points.is_cuda and not exact else None
        if points.is_cuda:
            points = points.contiguous(memory_format=torch.channels_last)
        points = points.detach().requires_grad_(True)
        scale = GRAD_SCALE if dtype == torch.float16 else 1.0
        with torch.autocast(points.device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            logits = model(points).float()
        seeds = tmat * scale
        g = torch.stack([torch.autograd.grad(logits, points, grad_outputs=t, retain_graph=i < len(seeds) - 1)[0]
                         for i, t in enumerate(seeds)])
        g = g.float() / scale
        if dtype is not None and not torch.isfinite(g).all():  # float16 overflowed: redo this chunk exactly
            if diagnostics is not None:
                diagnostics["fp32_fallbacks"] = diagnostics.get("fp32_fallbacks", 0) + 1
            return self._grads(model, points, tmat, exact=True, diagnostics=diagnostics)
        return g

    def attribute(self, model, images: torch.Tensor, targets: list[list[int]]) -> Attribution:
        model.eval()
        diagnostics = {"completeness_rel_error": [], "fp32_fallbacks": 0}
        device = images.device
        baselines = make_baseline(images, self.baseline)
        n, steps = len(images), self.steps
        alphas = torch.as_tensor(self.alphas, dtype=images.dtype, device=device)
        weights = torch.as_tensor(self.weights, dtype=torch.float32, device=device)
        results: list[np.ndarray] = [np.zeros((len(t), *images.shape[-2:]), np.float32) for t in targets]
        todo = [i for i in range(n) if targets[i]]
        per_chunk = max(1, self.batch_size // steps)  # images per forward (each brings `steps` points)
        for start in range(0, len(todo), per_chunk):
            idx = todo[start:start + per_chunk]
            x, b = images[idx], baselines[idx]
            diff = x - b
            points = (b[:, None] + alphas[None, :, None, None, None] * diff[:, None]).reshape(-1, *x.shape[1:])
            with torch.no_grad():  # f(x) and f(b), for the completeness check
                ends = model(torch.cat([x, b])).float()
            fx, fb = ends[:len(idx)], ends[len(idx):]
            n_classes = ends.shape[1]
            tmax = max(len(targets[i]) for i in idx)
            tmat = torch.zeros(tmax, len(idx), steps, n_classes, device=device)
            slot_t, slot_j, slot_c = zip(*[(t, j, c) for j, i in enumerate(idx) for t, c in enumerate(targets[i])])
            tmat[list(slot_t), list(slot_j), :, list(slot_c)] = 1.0
            grads = self._grads(model, points, tmat.reshape(tmax, len(idx) * steps, n_classes), diagnostics=diagnostics)
            grads = grads.reshape(tmax, len(idx), steps, *x.shape[1:])
            avg = (grads * weights[None, None, :, None, None, None]).sum(dim=2)  # (T, B, 1, H, W)
            attr = (avg * diff[None].float()).sum(dim=2).detach()  # channel sum -> (T, B, H, W)
            st, sj, sc = (torch.as_tensor(v, device=device) for v in (slot_t, slot_j, slot_c))
            delta = fx[sj, sc] - fb[sj, sc]
            err = (attr[st, sj].sum(dim=(-2, -1)) - delta).abs() / delta.abs().clamp_min(1e-6)
            diagnostics["completeness_rel_error"].extend(err.cpu().tolist())
            attr = attr.cpu().numpy()  # one transfer per chunk
            for j, i in enumerate(idx):
                results[i] = attr[:len(targets[i]), j]
            self.report_images(len(idx) / getattr(self, "samples", 1))  # ig-smooth passes each image `samples` times
        return Attribution(results, **diagnostics)


class SmoothIntegratedGradients(IntegratedGradients):
    """IG averaged over ``samples`` noisy copies of each image (noise std ``noise`` x that
    image's std). The noise comes from a generator restarted from (seed, block, member)."""

    name = "ig-smooth"

    def __init__(self, samples: int = 4, noise: float = 0.1, seed: int = 0, **settings):
        super().__init__(**settings)
        self.samples, self.noise, self.seed = samples, noise, seed
        self.settings.update(samples=samples, noise=noise)
        self.gen = torch.Generator().manual_seed(seed)

    def reseed(self, *key) -> None:
        digest = hashlib.sha256(repr((self.seed, *key)).encode()).hexdigest()
        self.gen = torch.Generator().manual_seed(int(digest[:15], 16))

    def attribute(self, model, images, targets) -> Attribution:
        total = None
        diagnostics = {"completeness_rel_error": [], "fp32_fallbacks": 0}
        scale = self.noise * images.std(dim=tuple(range(1, images.ndim)), keepdim=True)
        for _ in range(self.samples):
            eps = torch.randn(images.shape, generator=self.gen).to(images.device) * scale
            maps = super().attribute(model, images + eps, targets)
            diagnostics["completeness_rel_error"].extend(maps.diagnostics["completeness_rel_error"])
            diagnostics["fp32_fallbacks"] += maps.diagnostics["fp32_fallbacks"]
            total = maps if total is None else [a + m for a, m in zip(total, maps)]
        return Attribution([a / self.samples for a in total], **diagnostics)
