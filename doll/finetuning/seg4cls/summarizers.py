"""seg4cls summarizers: from a segmenter's probability maps to image labels."""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from doll.finetuning.seg4cls.models import MaskCNN, PerClassLinear
from doll.train.losses import masked_bce

SUMMARIZERS = ("rule", "linear", "pool-linear", "cnn-mask", "embedding")
RULE_T = (0.3, 0.5, 0.7, 0.9)
RULE_Q = tuple(np.round(np.arange(0, 1.0, 0.1), 2))
EMBEDDING_L2 = 0.05

def rule_counts(prob: np.ndarray, t: float) -> np.ndarray:
    """(N, C) number of pixels with probability > t."""
    return (np.asarray(prob, np.float32) > t).sum(axis=(2, 3)).astype(np.float64)


def balanced_accuracy(pred: np.ndarray, y: np.ndarray) -> float:
    pos, neg = y == 1, y == 0
    return 0.5 * (pred[pos].mean() + (~pred[neg]).mean())


def fit_summary_rule(prob: np.ndarray, raw: np.ndarray) -> list[dict]:
    """Per class, the (t, tau) with the best validation balanced accuracy (see the module doc)."""
    out = []
    counts = {t: rule_counts(prob, t) for t in RULE_T}
    for c in range(prob.shape[1]):
        y = raw[:, c]
        if not ((y == 1).any() and (y == 0).any()):
            out.append({"t": 0.5, "tau": 0.0, "val_balanced_accuracy": None, "fallback": True})
            continue
        best = None
        for t in RULE_T:
            n = counts[t][:, c]
            taus = sorted({0.0, *(max(0.0, math.ceil(v) - 1.0) for v in np.quantile(n[y == 1], RULE_Q))})
            for tau in taus:
                ba = balanced_accuracy(n > tau, y)
                if best is None or ba > best["val_balanced_accuracy"] + 1e-12:
                    best = {"t": t, "tau": float(tau), "val_balanced_accuracy": float(ba), "fallback": False}
        out.append(best)
    return out


def apply_summary_rule(prob: np.ndarray, params: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """(scores, decisions): pixel counts above each class's t, and count > tau."""
    scores = np.stack([rule_counts(prob[:, c:c + 1], p["t"])[:, 0] for c, p in enumerate(params)], 1)
    return scores, scores > np.array([p["tau"] for p in params])[None]


def _features(prob: torch.Tensor, kind: str) -> torch.Tensor:
    """(N, C, F) per-class features of the probability maps."""
    if kind == "linear":
        return F.adaptive_avg_pool2d(prob, 8).flatten(2)
    flat = prob.flatten(2)
    k = max(1, int(round(0.01 * flat.shape[-1])))
    return torch.stack([flat.amax(-1), flat.mean(-1), flat.topk(k, dim=-1).values.mean(-1)], -1)


def train_summarizer(kind: str, prob: np.ndarray, raw: np.ndarray, seed: int = 0, steps: int = 200):
    """Fit a trained summarizer on (N, C, H, W) maps (``embedding``: (N, D) decoder
    features) and raw labels; returns a scoring function of the same kind of input."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the models are tiny: more threads only add overhead
    try:
        return _train_summarizer(kind, prob, raw, seed, steps)
    finally:
        torch.set_num_threads(threads)


def _train_summarizer(kind, prob, raw, seed, steps):
    torch.manual_seed(seed)
    x = torch.as_tensor(np.asarray(prob, np.float32))
    y = torch.as_tensor((raw == 1).astype(np.float32))
    w = torch.as_tensor(((raw == 1) | (raw == 0)).astype(np.float32))
    C = y.shape[1]
    if kind == "cnn-mask":
        model, feat = MaskCNN(C), (lambda p: p)
    elif kind == "embedding":
        model, feat = nn.Linear(x.shape[1], C), (lambda p: p)
    else:
        f0 = _features(x[:1], kind)
        model, feat = PerClassLinear(C, f0.shape[-1]), (lambda p: _features(p, kind))
    fx = feat(x)
    mu = fx.mean(0, keepdim=True) if kind != "cnn-mask" else 0.0
    sd = fx.std(0, keepdim=True).clamp_min(1e-3) if kind != "cnn-mask" and len(fx) > 1 else 1.0
    opt = torch.optim.AdamW(model.parameters(), lr=0.02 if kind != "cnn-mask" else 0.005, weight_decay=1e-2)
    bs = 64
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randperm(len(x), generator=g)[:bs]
        loss = masked_bce(model((fx[idx] - mu) / sd), y[idx], w[idx])
        if kind == "embedding":  # hundreds of features, few labelled images: a ridge penalty
            loss = loss + EMBEDDING_L2 * model.weight.square().sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()

    def score(p: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return torch.sigmoid(model((feat(torch.as_tensor(np.asarray(p, np.float32))) - mu) / sd)).numpy()

    return score
