"""Masks or labels? Claims (c) and (d) as paired experiments: segmentation for classification
against a classifier at few masks (``--task seg4cls``), and alternating mask / image-label
training against segmentation only (``--task mixed``), every network with the same budget
in optimiser steps, several seeds, paired differences over seeds.

``doll study`` (docs/study.md) refuses ``--task seg4cls|mixed`` for now; this script is what
``doll study --task seg4cls`` (and ``mixed``) will become. Until then it keeps its own runs
and tables, with doll's statistics (``doll.studies.stats``) and settings: a flag left out
takes ``doll finetune``'s default, except ``--max-steps``, which every run needs (seg4cls
and mixed default to a budget in epochs).

For each seed ``--seed .. --seed+N-1`` one ``doll finetune --task seg4cls`` run at
``--seg4cls-fraction`` (``--summarizer``) and one ``--task mixed`` run at each of
``--mixed-fractions`` (``--pooling``), all with the same ``--max-steps``, ``--batch-size``,
``--image-size``, ``--encoder`` and ``--init``. Inside one run every network (segmenter,
classifier, multitask; segmentation only, alternating max / amp-mlp) trains ``--max-steps``
optimiser steps (``doll.finetuning.settings.engine_settings``); the seed draws the mask subset
(and the initialisation), which all methods of one run share: they form a pair. Layout::

    OUT/seg4cls_<fraction:g>/seed_<s>/   one `doll finetune --task seg4cls` output
    OUT/mixed_<fraction:g>/seed_<s>/     one `doll finetune --task mixed` output
    OUT/masks_or_labels.json             {"settings", "command", "rows", "runs", "summary"}

Mind what an equal step budget means for ``--task mixed``: an alternating network spends
half its steps on segmentation batches, the segmentation-only baseline all of them. In
``--task seg4cls`` the classifier and the multitask net report the weights of their best
validation AUROC (``best_step`` in the rows), the segmenter its last weights.

A run whose ``metrics.json`` exists, whose networks all trained ``--max-steps`` steps and
whose ``config.json`` has this benchmark's settings is not run again (the benchmark
resumes); one with other settings stops it. The JSON is rewritten (atomically) after every
run, and one JSON line per finished run is printed to stdout (the stages' chatter goes to
stderr). ``--report`` prints markdown tables of the JSON.

    python benchmarks/masks_or_labels.py --dataset phantom --root PH --init random \\
        --encoder resnet18 --image-size 64 --batch-size 16 --max-steps 300 --seeds 3 --out runs/mol
"""
from __future__ import annotations

import argparse
import contextlib
import json
import shlex
import sys
import time
from dataclasses import MISSING, asdict, fields
from pathlib import Path

from doll.studies import stats as ps
from doll.studies.report import _f as fmt  # the study tables' number formats
from doll.studies.report import _iv as fmt_interval

NAME = "masks_or_labels.json"
REFERENCE_C = "classifier"  # claim (c): classifier − method
REFERENCE_D = "segmentation_only"  # claim (d): method − segmentation only
# the flags that are doll finetune settings of the same name (left out: finetune's default)
FINETUNE_FLAGS = ("init", "encoder", "image_size", "val_every", "batch_size", "lr", "summarizer", "pooling")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="phantom")
    p.add_argument("--root", default="", help="the data set's folder")
    p.add_argument("--seg4cls-fraction", type=float, default=0.1, help="the mask fraction of --task seg4cls (0.1)")
    p.add_argument("--mixed-fractions", default="0.05,0.1",
                   help="comma-separated mask fractions of --task mixed (0.05,0.1)")
    p.add_argument("--max-steps", type=int, default=None, help="optimiser steps of every network (required)")
    for flag, kind in (("--init", str), ("--encoder", str), ("--image-size", int), ("--val-every", int),
                       ("--batch-size", int), ("--lr", float), ("--summarizer", str), ("--pooling", str)):
        p.add_argument(flag, type=kind, default=None, help="as doll finetune's (default: doll finetune's)")
    p.add_argument("--seeds", type=int, default=3, help="seeds: --seed .. --seed+N-1 (default 3)")
    p.add_argument("--seed", type=int, default=0, help="first seed")
    p.add_argument("--device", default="auto")
    p.add_argument("--out", default="artifacts/masks_or_labels")
    p.add_argument("--report", action="store_true", help=f"print markdown tables of OUT/{NAME} and exit")
    a = p.parse_args(argv)
    a.argv = list(sys.argv if argv is None else [sys.argv[0], *argv])
    if a.report:
        return a
    if not a.root or a.max_steps is None:
        p.error("--root and --max-steps are required")
    if not 0 < a.seg4cls_fraction <= 1:
        p.error("--seg4cls-fraction must be in (0, 1]")
    if a.seeds < 1 or a.max_steps < 1:
        p.error("--seeds and --max-steps must be positive")
    return a


def other_settings(folder: Path, want) -> list[str]:
    """The settings (names) in which the run in ``folder`` (its config.json) differs from
    ``want`` (a FinetuneSettings), as ``doll study`` compares a finished cell; a setting newer
    than the run counts as run with its default."""
    from doll.utils import RUN_ONLY_SETTINGS, differing_keys, read_json

    if not (folder / "config.json").is_file():
        return ["config.json missing"]
    stored = {**{f.name: f.default for f in fields(want) if f.default is not MISSING}, **read_json(folder / "config.json")}
    given = json.loads(json.dumps(asdict(want)))
    return differing_keys(stored, given, [k for k in given if k not in RUN_ONLY_SETTINGS])


# --------------------------------------------------------------------------- the runs


def run_dir(out: Path, task: str, fraction: float, seed: int) -> Path:
    return out / f"{task}_{fraction:g}" / f"seed_{seed}"


def networks(task: str, metrics: dict) -> list[str]:
    """The network folders of a run (their own metrics.json records the steps trained)."""
    if task == "mixed":
        return ["segmentation_only", *(m for m in metrics.get("mean_iou", {}) if m != "segmentation_only")]
    names = ["segmenter"]
    if "classifier" in (metrics.get("mean_auroc") or {}):
        names += ["classifier", "multitask"]
    return names


def training(folder: Path, task: str, metrics: dict) -> dict | None:
    """{network: {"steps", "max_steps", "best_step"}} when every network finished, else None."""
    from doll.utils import read_json

    out = {}
    for net in networks(task, metrics):
        path = folder / net / "metrics.json"
        try:
            m = read_json(path)
        except (OSError, ValueError):
            return None
        if not m.get("finished"):
            return None
        out[net] = {"steps": m.get("steps"), "max_steps": m.get("max_steps"), "best_step": m.get("best_step"),
                    "monitor": m.get("monitor")}
    return out


def finished(folder: Path, task: str, max_steps: int | None) -> tuple[dict, dict] | None:
    """(metrics, training) of a finished run that trained every network ``max_steps`` steps
    (with None: whatever budget, all networks the same)."""
    from doll.utils import read_json

    try:
        metrics = read_json(folder / "metrics.json")
    except (OSError, ValueError):
        return None
    if metrics.get("task") != task:
        return None
    nets = training(folder, task, metrics)
    if nets is None:
        return None
    budget = max_steps if max_steps is not None else next(iter(nets.values()))["max_steps"]
    if any(n["steps"] != budget or n["max_steps"] != budget for n in nets.values()):
        return None
    return metrics, nets


def rows_of(task: str, fraction: float, seed: int, folder: str, metrics: dict, nets: dict) -> list[dict]:
    """One row per method of a run: its AUROC, IoU and F1 as metrics.json gives them."""
    base = {"task": task, "fraction": fraction, "seed": seed, "n_train": metrics.get("n_train"),
            "n_masks": metrics.get("n_masks"), "n_test": metrics.get("n_test"), "folder": folder}
    rows = []
    for method, auroc in metrics["mean_auroc"].items():
        row = {**base, "method": method, "mean_auroc": auroc}
        if task == "mixed":
            row.update(mean_iou=metrics["mean_iou"].get(method), mean_f1=metrics["mean_f1"].get(method),
                       network=method)
        else:  # the summarizers score the segmenter's maps: its IoU on the test positives; no F1
            seg = method.startswith("seg4cls_")
            row.update(mean_iou=metrics.get("mean_iou") if seg else None, mean_f1=None,
                       network="segmenter" if seg else method)
        net = nets.get(row["network"]) or {}
        row.update(steps=net.get("steps"), best_step=net.get("best_step") if net.get("monitor") != "step" else None)
        rows.append(row)
    return rows


# --------------------------------------------------------------------------- the summary


def stats(rows: list[dict], key: str) -> dict:
    vals = [r[key] for r in rows if r.get(key) is not None]
    mean, sd = ps.mean_sd(vals)
    return {"mean": mean, "sd": sd, "n": len(vals), "per_seed": [r.get(key) for r in rows],
            "seeds": [r["seed"] for r in rows]}


def paired(rows: dict[int, dict], refs: dict[int, dict], key: str, sign: int) -> dict | None:
    """The paired difference over seeds: sign * (row - reference) of ``key``, with its t-interval."""
    seeds = [s for s in sorted(rows) if s in refs and rows[s].get(key) is not None and refs[s].get(key) is not None]
    if not seeds:
        return None
    diffs = [sign * (rows[s][key] - refs[s][key]) for s in seeds]
    t = ps.t_interval(diffs)
    return {"n_pairs": t["n"], "seeds": seeds, "per_seed": diffs, "mean": t["mean"], "sd": t["sd"],
            "t_interval": t["interval"]}


def by_method(rows: list[dict]) -> dict[str, dict[int, dict]]:
    out: dict[str, dict[int, dict]] = {}
    for r in rows:
        out.setdefault(r["method"], {})[r["seed"]] = r
    return out


def summarize(rows: list[dict]) -> dict:
    c_rows = [r for r in rows if r["task"] == "seg4cls"]
    claim_c = []
    for fraction in dict.fromkeys(r["fraction"] for r in c_rows):
        group = by_method([r for r in c_rows if r["fraction"] == fraction])
        ref = group.get(REFERENCE_C, {})
        for method, seeds in group.items():
            rs = [seeds[s] for s in sorted(seeds)]
            claim_c.append({"fraction": fraction, "method": method, "n_seeds": len(rs),
                            "n_masks": [r["n_masks"] for r in rs], "n_train": rs[0]["n_train"],
                            "mean_auroc": stats(rs, "mean_auroc"),
                            "segmenter_iou": stats(rs, "mean_iou") if method.startswith("seg4cls_") else None,
                            "paired_auroc": None if method == REFERENCE_C else paired(seeds, ref, "mean_auroc", -1)})
    d_rows = [r for r in rows if r["task"] == "mixed"]
    claim_d = []
    for fraction in sorted(dict.fromkeys(r["fraction"] for r in d_rows)):
        group = by_method([r for r in d_rows if r["fraction"] == fraction])
        ref = group.get(REFERENCE_D, {})
        for method, seeds in group.items():
            rs = [seeds[s] for s in sorted(seeds)]
            entry = {"fraction": fraction, "method": method, "n_seeds": len(rs), "n_masks": [r["n_masks"] for r in rs],
                     "n_train": rs[0]["n_train"]}
            for key in ("mean_iou", "mean_f1", "mean_auroc"):
                entry[key] = stats(rs, key)
                entry[f"paired_{key}"] = None if method == REFERENCE_D else paired(seeds, ref, key, 1)
            claim_d.append(entry)
    return {"c": {"reference": REFERENCE_C, "difference": f"{REFERENCE_C} − method", "methods": claim_c},
            "d": {"reference": REFERENCE_D, "difference": f"method − {REFERENCE_D}", "methods": claim_d}}


# --------------------------------------------------------------------------- the report


def mean_sd_text(s: dict | None) -> str:
    if not s or s["mean"] is None:
        return "–"
    return f"{fmt(s['mean'])} ± {fmt(s['sd'])}"


def diff_text(p: dict | None) -> str:
    if not p:
        return "–"
    return f"{fmt(p['mean'], sign=True)} {fmt_interval(p['t_interval'])}"


def per_seed_text(p: dict | None) -> str:
    return "–" if not p else ", ".join(fmt(v, sign=True) for v in p["per_seed"])


def report(doc: dict) -> str:
    s, summary = doc.get("settings") or {}, doc.get("summary") or {}
    runs = doc.get("runs") or []
    seconds = sum(r.get("seconds") or 0 for r in runs)
    every = s.get("val_every_used") or s.get("val_every")  # val_every_used: the JSON before 2026-12-06
    evaluated = f"evaluated every {every}" if every else "evaluated about ten times"
    lines = [(f"Masks or labels: {s.get('dataset', '?')} ({s.get('root', '?')}), init {s.get('init', '?')}, "
              f"{s.get('encoder', '?')}, {s.get('image_size_used') or s.get('image_size') or '?'} px, "
              f"{s.get('max_steps', '?')} optimiser steps per network ({evaluated}), "
              f"batch {s.get('batch_size', '?')}, "
              f"lr {s.get('lr', '?')}, seeds {s.get('seeds', '?')}; {len(runs)} finished runs "
              f"({seconds:.0f} s of training and scoring)."), ""]
    c = (summary.get("c") or {}).get("methods") or []
    lines += ["### (c) Segmentation for classification vs a classifier: mean AUROC over seeds (paired by seed)", "",
              ("| fraction | masks (per seed) | method | seeds | mean AUROC, mean ± sd | classifier − method, mean "
               "[95 % t-interval] | per seed |"), "|---|---|---|---|---|---|---|"]
    for e in c:
        lines.append(f"| {e['fraction']:g} | {', '.join(str(n) for n in e['n_masks'])} | {e['method']} | "
                     f"{e['n_seeds']} | {mean_sd_text(e['mean_auroc'])} | {diff_text(e['paired_auroc'])} | "
                     f"{per_seed_text(e['paired_auroc'])} |")
    if not c:
        lines.append("| (no finished seg4cls run) |||||||")
    seg = next((e["segmenter_iou"] for e in c if e.get("segmenter_iou")), None)
    if seg:
        lines += ["", f"Segmenter IoU on the test positives (the summarizers' maps): {mean_sd_text(seg)}."]
    d = (summary.get("d") or {}).get("methods") or []
    lines += ["", "### (d) Alternating mask / image-label training vs segmentation only: mean ± sd over seeds", "",
              "| fraction | masks (per seed) | method | seeds | IoU | F1 | AUROC |", "|---|---|---|---|---|---|---|"]
    for e in d:
        lines.append(f"| {e['fraction']:g} | {', '.join(str(n) for n in e['n_masks'])} | {e['method']} | "
                     f"{e['n_seeds']} | {mean_sd_text(e['mean_iou'])} | {mean_sd_text(e['mean_f1'])} | "
                     f"{mean_sd_text(e['mean_auroc'])} |")
    if not d:
        lines.append("| (no finished mixed run) |||||||")
    lines += ["", ("### (d) Paired difference, method − segmentation only (same fraction and seed): mean "
                   "[95 % t-interval over seeds]"), "",
              "| fraction | method | pairs | Δ IoU | Δ IoU per seed | Δ F1 | Δ AUROC |", "|---|---|---|---|---|---|---|"]
    any_pair = False
    for e in d:
        if e["method"] == REFERENCE_D:
            continue
        any_pair = True
        p = e["paired_mean_iou"]
        lines.append(f"| {e['fraction']:g} | {e['method']} | {p['n_pairs'] if p else 0} | {diff_text(p)} | "
                     f"{per_seed_text(p)} | {diff_text(e['paired_mean_f1'])} | {diff_text(e['paired_mean_auroc'])} |")
    if not any_pair:
        lines.append("| (no pairs) |||||||")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- running


def write(out: Path, doc: dict) -> None:
    from doll.utils import write_json

    write_json(out / NAME, doc)


def main_report(a: argparse.Namespace) -> dict:
    from doll.utils import read_json

    path = Path(a.out) / NAME
    if not path.is_file():
        raise SystemExit(f"masks_or_labels: {path} does not exist; run the benchmark first")
    doc = read_json(path)
    sys.stdout.write(report(doc))
    return doc


def main(argv=None) -> dict:
    a = parse_args(argv)
    if a.report:
        return main_report(a)
    import doll
    from doll.errors import DollError
    from doll.finetuning.settings import FinetuneSettings, check_settings, image_size
    from doll.studies.run import parse_fractions
    from doll.utils import resolve_paths

    try:
        mixed_fractions = parse_fractions(a.mixed_fractions)
    except DollError as exc:
        raise SystemExit(f"masks_or_labels: --mixed-fractions: {exc}") from None
    given = {k: getattr(a, k) for k in FINETUNE_FLAGS if getattr(a, k) is not None}
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    seeds = list(range(a.seed, a.seed + a.seeds))
    plan = [x for seed in seeds for x in [(seed, "seg4cls", a.seg4cls_fraction),
                                         *((seed, "mixed", f) for f in mixed_fractions)]]

    def settings_for(task: str, fraction: float, seed: int) -> FinetuneSettings:
        own = {k: v for k, v in given.items() if k != ("pooling" if task == "seg4cls" else "summarizer")}
        s = FinetuneSettings(task=task, dataset=a.dataset, root=a.root, max_steps=a.max_steps,
                             label_fraction=fraction, seed=seed, device=a.device,
                             out=str(run_dir(out, task, fraction, seed)), overwrite=True, progress=False, **own)
        resolve_paths(s, "root", "init")
        return s

    for task in ("seg4cls", "mixed"):  # refuse bad settings before anything runs
        try:
            check_settings(settings_for(task, plan[0][2] if task == "seg4cls" else mixed_fractions[0], seeds[0]))
        except DollError as exc:
            raise SystemExit(f"masks_or_labels: --task {task}: {exc}") from None
    first = settings_for("seg4cls", a.seg4cls_fraction, seeds[0])
    mixed = settings_for("mixed", mixed_fractions[0], seeds[0])
    settings = {"dataset": a.dataset, "root": first.root, "init": first.init, "encoder": first.encoder,
                "image_size": first.image_size, "image_size_used": image_size(first), "max_steps": a.max_steps,
                "val_every": first.val_every, "batch_size": first.batch_size, "lr": first.lr, "seeds": seeds,
                "seg4cls_fraction": a.seg4cls_fraction, "summarizer": first.summarizer,
                "mixed_fractions": mixed_fractions, "pooling": mixed.pooling,
                "device": a.device, "budget": "every network of a run trains --max-steps optimiser steps",
                "order": "seed, then seg4cls and the mixed fractions (the methods of a pair share one run)"}

    def state(seed: int, task: str, fraction: float) -> tuple[dict, dict] | None:
        folder = run_dir(out, task, fraction, seed)
        done = finished(folder, task, a.max_steps)
        if done is not None:
            diff = other_settings(folder, settings_for(task, fraction, seed))
            if diff:
                raise SystemExit(f"masks_or_labels: {folder} holds a finished run with other settings "
                                 f"({'; '.join(diff)}); remove it or choose another --out")
            return done
        other = finished(folder, task, None)
        if other is not None:
            steps = sorted({n["max_steps"] for n in other[1].values()})
            raise SystemExit(f"masks_or_labels: {folder} holds a finished run of {steps[0]} steps, not "
                             f"{a.max_steps}; remove it or choose another --out")
        return None

    for item in plan:  # refuse unusable folders before anything is written
        state(*item)
    doc = {"settings": settings, "command": shlex.join(a.argv), "runs": [], "rows": [], "summary": {}}
    write(out, doc)
    for seed, task, fraction in plan:
        folder = run_dir(out, task, fraction, seed)
        name = str(folder.relative_to(out))
        done = state(seed, task, fraction)
        ran = done is None
        if ran:
            t = time.time()
            log(f"== {name}: training every network {a.max_steps} steps ...")
            with contextlib.redirect_stdout(sys.stderr):  # the stages' lines; stdout is the JSON lines
                doll.finetune(settings_for(task, fraction, seed))
            log(f"== {name}: done in {time.time() - t:.0f} s")
            done = finished(folder, task, a.max_steps)
            if done is None:
                raise SystemExit(f"masks_or_labels: {folder}: not every network trained {a.max_steps} steps; "
                                 "see its metrics.json files")
        else:
            log(f"== {name}: finished ({a.max_steps} steps), not run again")
        metrics, nets = done
        rows = rows_of(task, fraction, seed, name, metrics, nets)
        run = {"task": task, "fraction": fraction, "seed": seed, "folder": name, "ran_now": ran,
               "n_train": metrics.get("n_train"), "n_masks": metrics.get("n_masks"), "n_test": metrics.get("n_test"),
               "seconds": metrics.get("seconds"), "networks": nets}
        doc["runs"].append(run)
        doc["rows"] += rows
        doc["summary"] = summarize(doc["rows"])
        write(out, doc)
        print(json.dumps({**{k: v for k, v in run.items() if k != "networks"},
                          "methods": {r["method"]: {k: r[k] for k in ("mean_auroc", "mean_iou", "mean_f1")}
                                      for r in rows}}), flush=True)
    return doc


if __name__ == "__main__":
    main()
