"""Integrated Gradients, batched over images x steps x targets.

Same quadrature as ``captum.attr.IntegratedGradients(method="gausslegendre")``: the
path ``b + a (x - b)`` is sampled at Gauss-Legendre nodes ``a_k`` on [0, 1] with weights
``w_k`` and ``IG_c(x) = (x - b) * sum_k w_k d f_c(b + a_k (x - b)) / dx`` (f = logits).

Speed at equal output: all targets of an image share one forward pass over its
interpolation path; the backward passes of the targets run batched with
``torch.autograd.grad(..., is_grads_batched=True)`` (vmap). ``batch_size`` caps the
number of interpolated images per forward, so peak memory is set by it, not by
steps x targets. Completeness errors ``|sum IG - (f(x) - f(b))| / |f(x) - f(b)|`` are
collected in ``stats["completeness_rel_error"]``.
"""
from __future__ import annotations

import cv2
import numpy as np
import torch

from doll.data.dataset import MEAN, STD
from doll.errors import DollError
from doll.explain.base import Explainer

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


class IntegratedGradients(Explainer):
    name = "ig"

    def __init__(self, steps: int = 16, baseline: str = "zero", batch_size: int = 64, amp: bool = True, **settings):
        if steps <= 0:
            raise DollError(f"--steps must be positive, got {steps}")
        if baseline not in BASELINES:
            raise DollError(f"unknown --baseline {baseline!r}; choose one of {', '.join(BASELINES)}")
        super().__init__(steps=steps, baseline=baseline, batch_size=batch_size, **settings)
        self.steps, self.baseline, self.batch_size, self.amp = steps, baseline, max(1, batch_size), amp
        self.alphas, self.weights = gauss_legendre(steps)

    def _grads(self, model, points: torch.Tensor, tmat: torch.Tensor) -> torch.Tensor:
        """Gradients of the targets' logits at ``points`` (P, 1, H, W).

        ``tmat`` (T, P, C) selects, per target slot, which logit each point contributes.
        One forward, T backward passes batched with vmap; returns (T, P, 1, H, W).
        """
        points = points.detach().requires_grad_(True)
        if points.is_cuda:  # AMP + channels_last on the GPU; exact float32 on the CPU
            points = points.contiguous(memory_format=torch.channels_last)
        with torch.autocast(points.device.type, dtype=torch.bfloat16, enabled=points.is_cuda and self.amp):
            logits = model(points).float()
        try:
            (g,) = torch.autograd.grad(logits, points, grad_outputs=tmat, is_grads_batched=True)
        except RuntimeError:  # an op without a batching rule: fall back to one backward per target
            g = torch.stack([torch.autograd.grad(logits, points, grad_outputs=t, retain_graph=i < len(tmat) - 1)[0]
                             for i, t in enumerate(tmat)])
        return g

    def attribute(self, model, images: torch.Tensor, targets: list[list[int]]) -> list[np.ndarray]:
        model.eval()
        device = images.device
        baselines = make_baseline(images, self.baseline)
        n, steps = len(images), self.steps
        n_classes = None
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
            if n_classes is None:
                with torch.no_grad():
                    n_classes = model(points[:1]).shape[1]
            tmax = max(len(targets[i]) for i in idx)
            tmat = torch.zeros(tmax, len(idx), steps, n_classes, device=device)
            for j, i in enumerate(idx):
                for t, c in enumerate(targets[i]):
                    tmat[t, j, :, c] = 1.0
            grads = self._grads(model, points, tmat.reshape(tmax, len(idx) * steps, n_classes))
            grads = grads.reshape(tmax, len(idx), steps, *x.shape[1:]).float()
            avg = (grads * weights[None, None, :, None, None, None]).sum(dim=2)  # (T, B, 1, H, W)
            attr = (avg * diff[None].float()).sum(dim=2)  # channel sum -> (T, B, H, W)
            with torch.no_grad():
                fx = model(x).float()
                fb = model(b).float()
            for j, i in enumerate(idx):
                k = len(targets[i])
                results[i] = attr[:k, j].detach().cpu().numpy()
                for t, c in enumerate(targets[i]):
                    delta = float(fx[j, c] - fb[j, c])
                    total = float(attr[t, j].sum())
                    self.stats.setdefault("completeness_rel_error", []).append(abs(total - delta) / max(abs(delta), 1e-6))
        return results


class SmoothIntegratedGradients(IntegratedGradients):
    """IG averaged over ``samples`` noisy copies of the image (noise std ``noise`` x image std)."""

    name = "ig-smooth"

    def __init__(self, samples: int = 4, noise: float = 0.1, seed: int = 0, **settings):
        super().__init__(**settings)
        self.samples, self.noise = samples, noise
        self.settings.update(samples=samples, noise=noise)
        self.gen = torch.Generator().manual_seed(seed)

    def attribute(self, model, images, targets):
        total = None
        for _ in range(self.samples):
            eps = torch.randn(images.shape, generator=self.gen).to(images.device) * self.noise * images.std()
            maps = super().attribute(model, images + eps, targets)
            total = maps if total is None else [a + m for a, m in zip(total, maps)]
        return [a / self.samples for a in total]
