"""The statistics of a paired experiment (``doll study``), in numpy alone.

* ``t_quantile`` / ``t_interval``: Student's t interval of a mean over a few seeds (scipy is
  not a dependency: the 0.975 quantiles for 1..30 degrees of freedom are tabulated, beyond
  30 a Cornish-Fisher expansion of the normal quantile, exact to about 1e-5);
* ``bootstrap_paired``: a percentile bootstrap over test images of the mean over seeds of
  the difference of two arms' mean IoU, each resample shared by both arms of a pair;
* ``curve_at`` / ``steps_to_reach`` / ``median_steps``: training efficiency read off the
  evaluation curve of a run.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

# Student's t, 0.975 quantile (two-sided 95 %), degrees of freedom 1..30
T975 = (12.706205, 4.302653, 3.182446, 2.776445, 2.570582, 2.446912, 2.364624, 2.306004, 2.262157, 2.228139,
        2.200985, 2.178813, 2.160369, 2.144787, 2.131450, 2.119905, 2.109816, 2.100922, 2.093024, 2.085963,
        2.079614, 2.073873, 2.068658, 2.063899, 2.059539, 2.055529, 2.051831, 2.048407, 2.045230, 2.042272)
Z975 = 1.959963984540054


def t_quantile(df: int) -> float:
    """The 0.975 quantile of Student's t with ``df`` degrees of freedom (the half-width
    factor of a two-sided 95 % interval)."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    if df <= len(T975):
        return T975[df - 1]
    z, n = Z975, float(df)  # Cornish-Fisher expansion around the normal quantile
    return (z + (z ** 3 + z) / (4 * n) + (5 * z ** 5 + 16 * z ** 3 + 3 * z) / (96 * n ** 2)
            + (3 * z ** 7 + 19 * z ** 5 + 17 * z ** 3 - 15 * z) / (384 * n ** 3))


def mean_sd(values: Sequence[float]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (n - 1); sd is None for fewer than two values."""
    v = np.asarray([x for x in values if x is not None], np.float64)
    if not len(v):
        return None, None
    return float(v.mean()), (float(v.std(ddof=1)) if len(v) > 1 else None)


def t_interval(values: Sequence[float]) -> dict:
    """{"n", "mean", "sd", "interval": [lo, hi]}: the 95 % t-interval of the mean of
    ``values`` (e.g. one paired difference per seed); interval None for fewer than two."""
    v = [float(x) for x in values]
    mean, sd = mean_sd(v)
    interval = None
    if sd is not None:
        half = t_quantile(len(v) - 1) * sd / math.sqrt(len(v))
        interval = [mean - half, mean + half]
    return {"n": len(v), "mean": mean, "sd": sd, "interval": interval}


def bootstrap_paired(diffs: Sequence[np.ndarray], resamples: int = 2000, seed: int = 0,
                     shared: bool = True, level: float = 0.95) -> dict:
    """Percentile bootstrap over test images of ``mean over seeds of mean(diffs[s])``.

    ``diffs[s]`` is, for seed ``s``, the per-test-image difference between the two arms of a
    pair (arm A's IoU of the image minus arm B's, each the mean over structures): the mean
    of it is arm A's mean IoU minus arm B's. One resample of test-image indices is applied to
    both arms of a pair (so the difference is resampled, not each arm apart); with
    ``shared`` (every seed scored the same test images, the usual case) the same resample
    is applied to every seed as well, else each seed's test set is resampled on its own.
    Returns {"estimate", "interval": [lo, hi], "sd", "resamples", "seed"}."""
    arrays = [np.asarray(d, np.float64).reshape(-1) for d in diffs]
    if not arrays or any(len(a) == 0 for a in arrays):
        raise ValueError("bootstrap_paired needs at least one non-empty difference vector")
    rng = np.random.default_rng(seed)
    estimate = float(np.mean([a.mean() for a in arrays]))
    if shared and len({len(a) for a in arrays}) == 1:
        parts = [np.mean(arrays, axis=0)]  # the same indices for every seed: resample the mean over seeds
    else:
        parts = arrays
    stats = np.zeros(resamples)
    chunk = max(1, 4_000_000 // max(len(a) for a in parts))
    for start in range(0, resamples, chunk):
        n = min(chunk, resamples - start)
        stats[start:start + n] = np.mean([a[rng.integers(0, len(a), size=(n, len(a)))].mean(axis=1) for a in parts],
                                         axis=0)
    alpha = (1 - level) / 2
    lo, hi = np.quantile(stats, [alpha, 1 - alpha])
    return {"estimate": estimate, "interval": [float(lo), float(hi)], "sd": float(stats.std(ddof=1)),
            "resamples": resamples, "seed": seed}


def _iou(row: dict, key: str):
    """A curve row's IoU: finetune's curves say ``test_iou`` (before 2026-12-06: ``val_iou``)."""
    return row.get(key, row.get("val_iou")) if key == "test_iou" else row.get(key)


def curve_at(curve: Sequence[dict], step: float, key: str = "test_iou") -> dict | None:
    """The curve point at the first evaluation step >= ``step`` ({"step", "value"}), None if none."""
    curve = [{**row, key: _iou(row, key)} for row in curve]
    for row in curve:
        if row.get("step") is not None and row["step"] >= step - 1e-9 and row.get(key) is not None:
            return {"step": int(row["step"]), "value": float(row[key])}
    return None


def steps_to_reach(curve: Sequence[dict], target: float, key: str = "test_iou", tol: float = 1e-9) -> int | None:
    """The first evaluation step at which the curve reaches ``target`` (None if it never does)."""
    curve = [{**row, key: _iou(row, key)} for row in curve]
    for row in curve:
        if row.get(key) is not None and row[key] >= target - tol:
            return int(row["step"])
    return None


def median_steps(values: Sequence[int | None]) -> float | None:
    """Median of per-seed steps, a seed that never got there counting as infinitely many;
    None when the median itself is 'never' (or there are no values)."""
    if not values:
        return None
    med = float(np.median([math.inf if v is None else float(v) for v in values]))
    return None if math.isinf(med) or math.isnan(med) else med
