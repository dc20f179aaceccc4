"""From finished cells to what a study reports: one group per init x mode x fraction (mean ± sd
over seeds) and one paired comparison per init other than the reference (the same mode,
fraction and seed: the same masks), at convergence and along the way."""
from __future__ import annotations

import numpy as np

from doll.studies import stats

BUDGET_POINTS = (0.1, 0.25, 0.5)  # IoU after these fractions of the step budget
# finetune's numbers a cell carries; the covid ones exist on --task covid only
CELL_METRICS = ("mean_iou", "mean_dice", "positives_mean_iou", "negatives_false_positive_area")
# the metrics compared between arms (lower is better for the false-positive area)
COMPARED = ("mean_iou", "positives_mean_iou", "negatives_false_positive_area")


def cell_record(metrics: dict, cell: dict) -> dict:
    """One finished cell for study.json: its place in the grid (``cell``: name, init, init_spec,
    mode, fraction, seed) and what its metrics.json says (per-image IoUs kept aside under
    ``_per_image``: they stay in the cell's folder)."""
    run = metrics["runs"][0]
    record = {**cell, "n_train": metrics.get("n_train"), "n_train_total": metrics.get("n_train_total"),
              "n_test": metrics.get("n_test"), "test_split": metrics.get("test_split"),
              "structures": metrics.get("structures"), "headline": metrics.get("headline"),
              "per_structure": metrics.get("per_structure"), "train_ids": run.get("train_ids"),
              "steps": run.get("steps"), "max_steps": run.get("max_steps"), "images_seen": run.get("images_seen"),
              "train_seconds": run.get("train_seconds"), "trainable_params": run.get("trainable_params"),
              "curve": [{"step": r.get("step"), "test_iou": r.get("test_iou", r.get("val_iou"))}
                        for r in run.get("curve") or []]}
    for key in CELL_METRICS:
        if metrics.get(key) is not None:
            record[key] = metrics[key]
    if run.get("per_image_iou") is not None:
        record["_per_image"] = np.asarray(run["per_image_iou"], np.float64).reshape(len(run["per_image_iou"]), -1)
    return record


def public(record: dict) -> dict:
    return {k: v for k, v in record.items() if not k.startswith("_")}


def _key(c: dict) -> tuple:
    return c["init"], c["mode"], c["fraction"]


def _group_cells(cells: list[dict]) -> dict[tuple, list[dict]]:
    groups: dict[tuple, list[dict]] = {}
    for c in cells:
        groups.setdefault(_key(c), []).append(c)
    return {k: sorted(v, key=lambda c: c["seed"]) for k, v in groups.items()}


def _spread(values: list) -> dict:
    values = [v for v in values if v is not None]
    mean, sd = stats.mean_sd(values)
    t = stats.t_interval(values) if len(values) > 1 else {"interval": None}
    return {"mean": mean, "sd": sd, "ci95_t": t["interval"], "n": len(values), "per_seed": values}


def groups(cells: list[dict], max_steps: int) -> list[dict]:
    """Per init x mode x fraction: every metric's mean ± sd over seeds (sd and the 95 %
    t-interval of the mean with >= 2 seeds only), the IoU after 10 / 25 / 50 % of the budget,
    the mean curve, and the per-structure IoU."""
    out = []
    for (init, mode, fraction), group in _group_cells(cells).items():
        entry = {"init": init, "mode": mode, "fraction": fraction, "n_masks": group[0].get("n_train"),
                 "seeds": [c["seed"] for c in group], "n_seeds": len(group)}
        for metric in CELL_METRICS:
            if any(c.get(metric) is not None for c in group):
                entry[metric] = _spread([c.get(metric) for c in group])
        entry["iou_at"] = []
        for frac in BUDGET_POINTS:
            points = [stats.curve_at(c["curve"], frac * max_steps) for c in group]
            entry["iou_at"].append({"budget_fraction": frac, "steps": [p["step"] if p else None for p in points],
                                    **_spread([p["value"] if p else None for p in points])})
        steps = sorted({r["step"] for c in group for r in c["curve"] if r.get("step") is not None})
        entry["curve"] = [{"step": st, "test_iou": stats.mean_sd([(stats.curve_at(c["curve"], st) or {}).get("value")
                                                                  for c in group])[0]} for st in steps]
        names = group[0].get("structures") or []
        entry["per_structure"] = {n: _spread([((c.get("per_structure") or {}).get(n) or {}).get("iou")
                                              for c in group]) for n in names}
        out.append(entry)
    return out


def _paired(values: list[tuple[float, float]]) -> dict:
    diffs = [a - b for a, b in values]
    t = stats.t_interval(diffs)
    return {"per_seed": diffs, "mean": t["mean"], "sd": t["sd"], "ci95_t": t["interval"]}


def comparisons(cells: list[dict], reference: str, max_steps: int, resamples: int = 2000,
                boot_seed: int = 0) -> list[dict]:
    """Per init other than ``reference``, mode and fraction: the paired differences (arm minus
    reference, seed by seed) with a 95 % t-interval over seeds and, for mean IoU, a 95 %
    percentile bootstrap over test images (paired by image); the same along the way
    (IoU after 10 / 25 / 50 % of the budget) and the steps each arm needs to reach the
    reference's final IoU of its seed."""
    grouped = _group_cells(cells)
    out = []
    for (init, mode, fraction), group in grouped.items():
        if init == reference or (reference, mode, fraction) not in grouped:
            continue
        ref = {c["seed"]: c for c in grouped[reference, mode, fraction]}
        pairs = [(c, ref[c["seed"]]) for c in group if c["seed"] in ref]
        if not pairs:
            continue
        entry = {"init": init, "reference": reference, "mode": mode, "fraction": fraction,
                 "n_masks": group[0].get("n_train"), "seeds": [c["seed"] for c, _ in pairs],
                 "same_masks": all(c.get("train_ids") == r.get("train_ids") for c, r in pairs), "final": {}}
        for metric in COMPARED:
            vals = [(c.get(metric), r.get(metric)) for c, r in pairs]
            if all(a is not None and b is not None for a, b in vals):
                entry["final"][metric] = _paired(vals)
        entry["final"]["mean_iou"].update(_bootstrap(pairs, resamples, boot_seed))
        entry["along_the_way"] = []
        for frac in BUDGET_POINTS:
            vals = [((stats.curve_at(c["curve"], frac * max_steps) or {}).get("value"),
                     (stats.curve_at(r["curve"], frac * max_steps) or {}).get("value")) for c, r in pairs]
            vals = [(a, b) for a, b in vals if a is not None and b is not None]
            entry["along_the_way"].append({"budget_fraction": frac, "target_step": frac * max_steps,
                                           **(_paired(vals) if vals else {"per_seed": [], "mean": None})})
        arm = [stats.steps_to_reach(c["curve"], r["mean_iou"]) for c, r in pairs]
        own = [stats.steps_to_reach(r["curve"], r["mean_iou"]) for _, r in pairs]
        entry["steps_to_reference_final"] = {
            "per_seed": arm, "median": stats.median_steps(arm), "reached": sum(v is not None for v in arm),
            "n": len(arm), "reference_per_seed": own, "reference_median": stats.median_steps(own), "budget": max_steps}
        out.append(entry)
    return out


def _bootstrap(pairs: list[tuple[dict, dict]], resamples: int, seed: int) -> dict:
    """The paired bootstrap of the mean-IoU difference over test images, or a note why not."""
    diffs = []
    for c, r in pairs:
        a, b = c.get("_per_image"), r.get("_per_image")
        if a is None or b is None or a.shape != b.shape or not len(a):
            return {"ci95_bootstrap": None, "bootstrap_note": "per-image IoUs missing or of different shapes in a pair"}
        diffs.append(a.mean(axis=1) - b.mean(axis=1))
    shared = len({(c.get("n_test"), c.get("test_split")) for pair in pairs for c in pair}) == 1
    boot = stats.bootstrap_paired(diffs, resamples=resamples, seed=seed, shared=shared)
    return {"ci95_bootstrap": boot["interval"],
            "bootstrap": {"unit": "test image", "resamples": resamples, "seed": seed,
                          "same_test_images_every_seed": shared, "estimate": boot["estimate"], "sd": boot["sd"]}}
