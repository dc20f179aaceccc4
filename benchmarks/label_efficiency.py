"""Label efficiency as a paired experiment: fine-tuning IoU vs the fraction of labelled masks,
every arm with the same budget in optimiser steps, several seeds, paired differences.

**Replaced by ``doll study``** (doll/studies/, docs/study.md): the same design as a library
stage and command, with resumable cells, parallel devices, study.json, summary.md and a
report.html. This script stays for the tables in docs/results.md that it made (and reads
their folders: ``--report --rescan``); its statistics are doll's (``doll.studies.stats``,
re-exported by ``paired_stats.py``). New studies: ``doll study``.

Cells are init x mode x fraction x seed. Every cell is one ``doll finetune`` run (one seed)
with the same ``--max-steps``, ``--val-every``, ``--batch-size``, ``--lr``, ``--image-size``,
``--encoder`` and ``--decoder``; the seed draws the mask subset and the initialisation, so
the arms (inits) of one seed see the same masks and form a pair. Layout::

    OUT/<init>_<mode>_<fraction:g>/seed_<seed>/   one `doll finetune` output (metrics.json, model/)
    OUT/label_efficiency.json                     {"settings", "command", "cells", "summary"}
    OUT/label_efficiency.png                      IoU vs masks; IoU vs steps at the smallest fraction

A cell whose ``seed_<s>/metrics.json`` records ``steps == --max-steps`` (with the same
settings) is not run again: the benchmark resumes, and analyses cells run by anyone with
``doll finetune --out OUT/<init>_<mode>_<fraction>/seed_<s> --seed <s> --max-steps N``.
The JSON is rewritten (atomically) after every cell, and one JSON line per finished cell is
printed to stdout (the stages' chatter goes to stderr). ``--report`` prints markdown tables
of the JSON (or of the cell folders, re-scanned); ``--phantom`` builds its own setup first.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import re
import shlex
import sys
import time
from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import paired_stats as ps  # noqa: E402  (benchmarks/ is not a package)

MODES = ("full", "adapter", "head")
BUDGET_POINTS = (0.1, 0.25, 0.5)  # training efficiency: IoU after these fractions of the budget
DEFAULT_MAX_STEPS = 600  # doll finetune's default budget for jsrt / lung / covid
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
CELL_DIR = re.compile(r"^(?P<init>.+)_(?P<mode>full|adapter|head)_(?P<fraction>[0-9.e+-]+)$")
PRIVATE = ("per_image_iou", "test_positive", "run_settings")  # read from the cell folders, not copied to the JSON
# what a rescan reads from each cell's config.json to describe the runs (they should agree)
SHARED_SETTINGS = ("task", "dataset", "root", "fold", "batch_size", "lr", "image_size_used", "val_every", "accumulate")


@dataclass
class Arm:
    name: str  # the name in folder names and tables
    init: str  # random | imagenet:FILE | a `doll pretrain` folder


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def floats(text: str) -> list[float]:
    try:
        vals = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
    if not vals or any(not 0 < v <= 1 for v in vals):
        raise argparse.ArgumentTypeError(f"label fractions must be in (0, 1], got {text!r}")
    return list(dict.fromkeys(vals))


def names(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


def parse_inits(items: list[str], pretrained: str) -> list[Arm]:
    """``random``, ``doll`` (= ``--pretrained``), ``imagenet:FILE``, ``NAME=FOLDER``,
    ``NAME=imagenet:FILE`` or ``NAME=random``."""
    arms = []
    for item in items:
        name, _, spec = item.partition("=")
        if not spec:
            name, spec = {"random": ("random", "random"), "doll": ("doll", pretrained)}.get(item, (None, item))
            if name is None and item.startswith("imagenet:"):
                name = "imagenet"
            if item == "doll" and not pretrained:
                raise ValueError("--inits doll needs --pretrained DIR (a `doll pretrain` folder), or write doll=DIR")
            if name is None:
                raise ValueError(f"--inits {item}: name a pretrained folder, e.g. doll={item}")
        if not NAME.match(name) or not spec:
            raise ValueError(f"--inits {item}: expected random, doll, imagenet:FILE or NAME=FOLDER "
                             "(NAME: letters, digits, . _ -)")
        arms.append(Arm(name, spec))
    dup = sorted({a.name for a in arms if [b.name for b in arms].count(a.name) > 1})
    if dup:
        raise ValueError(f"--inits names {', '.join(dup)} twice")
    return arms


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--fractions", type=floats, default=floats("0.05,0.1,0.25,1.0"),
                   help="comma-separated label fractions (default 0.05,0.1,0.25,1.0)")
    p.add_argument("--inits", type=names, default=None,
                   help="comma-separated arms: random, doll (with --pretrained), NAME=FOLDER (a `doll pretrain` "
                        "folder), imagenet:FILE or NAME=imagenet:FILE (default: random,doll with --pretrained / "
                        "--phantom, else random)")
    p.add_argument("--pretrained", default="", help="the `doll pretrain` folder of the arm named doll")
    p.add_argument("--reference", default="",
                   help="the arm paired differences are taken against (default: the first random arm)")
    p.add_argument("--modes", type=names, default=["full", "adapter"], help="comma-separated: full, adapter, head")
    p.add_argument("--seeds", type=int, default=3, help="seeds per cell: --seed .. --seed+N-1 (default 3)")
    p.add_argument("--seed", "--first-seed", dest="seed", type=int, default=0,
                   help="first seed (also the --phantom setup's seed)")
    p.add_argument("--task", default="jsrt", help="jsrt, lung or covid")
    p.add_argument("--dataset", default="jsrt")
    p.add_argument("--root", default="", help="the fine-tuning data set's folder")
    p.add_argument("--fold", type=int, default=1)
    p.add_argument("--max-steps", type=int, default=None,
                   help=f"the budget in optimiser steps, the same for every cell (default {DEFAULT_MAX_STEPS})")
    p.add_argument("--epochs", type=int, default=None, help=argparse.SUPPRESS)  # the old budget: refused below
    p.add_argument("--val-every", type=int, default=0,
                   help="optimiser steps between evaluations (0: finetune's default, about ten per run)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--encoder", default="",
                   help="encoder of random / imagenet arms (default: the first pretrained folder's, else resnet34)")
    p.add_argument("--decoder", default="",
                   help="decoder of random / imagenet arms (default: the first pretrained folder's, else pspnet)")
    p.add_argument("--transfer", default="all", choices=("all", "encoder"),
                   help="what the pretrained arms bring: all (encoder and decoder, the method) or encoder "
                        "(a new decoder and head, as random init makes them)")
    p.add_argument("--pretrained-lr", type=float, default=1.0,
                   help="the pretrained arms' pretrained layers train at this multiple of --lr (full mode; "
                        "the new head keeps --lr; default 1)")
    p.add_argument("--image-size", type=int, default=0,
                   help="0: the first pretrained folder's size for every arm, else finetune's default")
    p.add_argument("--device", default="auto")
    p.add_argument("--out", default="artifacts/label_efficiency")
    p.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples of the test images (default 2000)")
    p.add_argument("--bootstrap-seed", type=int, default=0)
    p.add_argument("--busy-seconds", type=float, default=600,
                   help="an unfinished cell folder written to less than this long ago is taken as running "
                        "elsewhere and skipped, not overwritten (0: never)")
    p.add_argument("--phantom", action="store_true",
                   help="build phantoms, classifiers, DoLL labels and a pretrained network under OUT/setup first "
                        "(doll demo's full plan; existing steps are skipped) and sweep them")
    p.add_argument("--report", action="store_true",
                   help="print markdown tables of OUT/label_efficiency.json (re-scanning the cell folders when "
                        "it is missing) and exit")
    p.add_argument("--rescan", action="store_true",
                   help="with --report: rebuild cells and summary from the cell folders, rewrite the JSON and PNG")
    a = p.parse_args(argv)
    a.argv = list(sys.argv if argv is None else [sys.argv[0], *argv])
    if a.epochs is not None:
        p.error("--epochs: every cell's budget is in optimiser steps now, the same at every fraction; "
                "use --max-steps N")
    if a.report or a.rescan:
        return a
    if a.max_steps is None:
        a.max_steps = DEFAULT_MAX_STEPS
    if a.phantom and (a.root or a.pretrained):
        p.error("--phantom sets --root and --pretrained itself; give neither")
    if a.phantom:
        a.pretrained = str(Path(a.out) / "setup" / "pretrain")
    if a.inits is None:
        a.inits = ["random", "doll"] if a.pretrained else ["random"]
    try:
        a.arms = parse_inits(a.inits, a.pretrained)
    except ValueError as exc:
        p.error(str(exc))
    if a.reference and a.reference not in [arm.name for arm in a.arms]:
        p.error(f"--reference {a.reference} is not one of the --inits ({', '.join(x.name for x in a.arms)})")
    bad = [m for m in a.modes if m not in MODES]
    if bad or not a.modes:
        p.error(f"--modes takes {', '.join(MODES)}, got {','.join(a.modes)}")
    if a.seeds < 1 or a.max_steps < 1 or a.val_every < 0 or a.batch_size < 1 or a.bootstrap < 100:
        p.error("--seeds, --max-steps and --batch-size must be positive, --val-every >= 0, --bootstrap >= 100")
    if not a.phantom and not a.root:
        p.error("--root is required (or --phantom)")
    return a


def default_reference(arms: list[Arm], given: str = "") -> str | None:
    if given:
        return given
    return next((x.name for x in arms if x.init == "random"), None)


def phantom_setup(out: Path, seed: int, device: str) -> tuple[str, str]:
    """doll demo's full plan up to pretraining, under ``out``; steps already done are skipped."""
    import doll
    from doll.demonstration import FULL as plan

    out.mkdir(parents=True, exist_ok=True)
    data, cls, labels, pre = out / "phantoms", out / "classifiers", out / "doll_labels.h5", out / "pretrain"
    common = {"device": device, "progress": False, "seed": seed}

    def step(name, done: bool, fn, *a, **k):
        if done:
            log(f"== setup: {name}: exists, skipped")
            return
        t = time.time()
        log(f"== setup: {name} ...")
        with contextlib.redirect_stdout(sys.stderr):  # the stages' epoch lines; stdout is the table
            fn(*a, **k)
        log(f"== setup: {name} done in {time.time() - t:.0f} s")

    step("phantoms", (data / "phantom.json").exists(), doll.make_phantoms, data, n=plan.n, size=plan.size,
         seed=seed, progress=False)
    step("train-classifiers", (cls / "metrics.json").exists(), doll.train_classifiers, dataset="phantom",
         root=str(data), out=str(cls), members=plan.members, epochs=plan.cls_epochs, image_size=plan.size,
         overwrite=True, **common)
    step("explain", labels.exists() and Path(str(labels) + ".metrics.json").exists(), doll.explain,
         classifiers=str(cls), dataset="phantom", root=str(data), out=str(labels), steps=plan.steps,
         overwrite=True, **common)
    step("pretrain", (pre / "metrics.json").exists(), doll.pretrain, labels=str(labels), out=str(pre),
         encoder=plan.encoder, epochs=plan.pretrain_epochs, overwrite=True, **common)
    return str(data / "anatomy"), str(pre)


# --------------------------------------------------------------------------- the cells


def cell_dir(out: Path, init: str, mode: str, fraction: float, seed: int) -> Path:
    return out / f"{init}_{mode}_{fraction:g}" / f"seed_{seed}"


def effective_val_every(val_every: int, max_steps: int) -> int:
    from doll.train.engine import EVALUATIONS

    return val_every or max(1, math.ceil(max_steps / EVALUATIONS))


def settings_differences(folder: Path, want, max_steps: int) -> list[str]:
    """What in the run in ``folder`` (its config.json) differs from the settings ``want``
    (a FinetuneSettings) this benchmark would run the cell with."""
    from doll.finetuning.settings import image_size, init_is_folder
    from doll.utils import RUN_ONLY_SETTINGS, differing_keys, read_json

    config = folder / "config.json"
    if not config.is_file():
        return ["config.json missing"]
    stored, given = read_json(config), json.loads(json.dumps(asdict(want)))
    # a setting newer than the stored run: it ran with that setting's default
    stored = {**{f.name: f.default for f in fields(want) if f.name not in stored and f.default is not MISSING},
              **stored}
    skip = {*RUN_ONLY_SETTINGS, "epochs", "max_steps", "val_every", "image_size"}
    if init_is_folder(want.init):
        skip |= {"encoder", "decoder"}  # a pretrained folder fixes its network; these are ignored
    diff = differing_keys(stored, given, [k for k in given if k not in skip])
    if stored.get("image_size_used") != image_size(want):
        diff.append(f"image size {stored.get('image_size_used')} (want {image_size(want)})")
    stored_val = effective_val_every(int(stored.get("val_every") or 0), max_steps)
    if stored_val != effective_val_every(want.val_every, max_steps):
        diff.append(f"val_every {stored_val} (want {effective_val_every(want.val_every, max_steps)})")
    return diff


def finished_run(folder: Path, max_steps: int | None) -> dict | None:
    """The cell's metrics.json when it holds one run that trained the whole budget
    (``max_steps``, or its own budget when None), else None."""
    from doll.utils import read_json

    path = folder / "metrics.json"
    if not path.is_file():
        return None
    try:
        metrics = read_json(path)
    except (OSError, ValueError):
        return None
    runs = metrics.get("runs") or []
    if len(runs) != 1:
        return None
    run = runs[0]
    budget = run.get("max_steps", metrics.get("steps"))
    if run.get("steps") != budget or (max_steps is not None and budget != max_steps):
        return None
    return metrics


def busy(folder: Path, seconds: float) -> bool:
    """An unfinished cell folder written to in the last ``seconds``: a run in progress elsewhere."""
    if seconds <= 0 or not folder.is_dir():
        return False
    times = [p.stat().st_mtime for p in folder.rglob("*") if p.is_file()]
    return bool(times) and time.time() - max(times) < seconds


def cell_entry(metrics: dict, init: str, mode: str, fraction: float, seed: int, folder: str) -> dict:
    """One finished run as a cell of the JSON (plus the private per-image arrays)."""
    run = metrics["runs"][0]
    cell = {"init": init, "mode": mode, "fraction": fraction, "seed": seed, "n_train": metrics.get("n_train"),
            "n_test": metrics.get("n_test"), "test_split": metrics.get("test_split"),
            "mean_iou": metrics["mean_iou"], "per_structure": metrics.get("per_structure")}
    for key in ("positives_mean_iou", "negatives_false_positive_area"):
        if key in metrics:
            cell[key] = metrics[key]
    cell.update({"steps": run.get("steps"), "max_steps": run.get("max_steps"), "images_seen": run.get("images_seen"),
                 "train_seconds": run.get("train_seconds"), "trainable_params": run.get("trainable_params"),
                 "init_spec": metrics.get("init"), "folder": folder, "curve": run.get("curve") or []})
    if run.get("per_image_iou") is not None:
        cell["per_image_iou"] = np.asarray(run["per_image_iou"], np.float64)
    if run.get("test_positive") is not None:  # per-test-image positive flags, where a finetune records them
        cell["test_positive"] = np.asarray(run["test_positive"], bool)
    return cell


def public(cell: dict, curve: bool = True) -> dict:
    return {k: v for k, v in cell.items() if k not in PRIVATE and (curve or k != "curve")}


def stdout_line(cell: dict) -> str:
    return json.dumps(public(cell, curve=False))


# --------------------------------------------------------------------------- the summary


def group_key(cell: dict) -> tuple:
    return cell["init"], cell["mode"], cell["fraction"]


def metric_block(metric: str, cells: list[dict], ref_cells: dict[int, dict] | None, ref_name: str | None,
                 is_reference: bool, max_steps: int, resamples: int, boot_seed: int) -> dict:
    """final / paired / efficiency of one arm x mode x fraction for ``metric``
    (``mean_iou``, or ``positives_mean_iou`` for --task covid)."""
    cells = [c for c in cells if c.get(metric) is not None]
    values = [c[metric] for c in cells]
    mean, sd = ps.mean_sd(values)
    block = {"final": {"mean": mean, "sd": sd, "per_seed": values, "seeds": [c["seed"] for c in cells]}}
    positives = metric == "positives_mean_iou"

    paired = None
    if ref_cells is not None and not is_reference:
        pairs = [(c, ref_cells[c["seed"]]) for c in cells if c["seed"] in ref_cells
                 and ref_cells[c["seed"]].get(metric) is not None]
        if pairs:
            t = ps.t_interval([c[metric] - r[metric] for c, r in pairs])
            paired = {"reference": ref_name, "n_pairs": len(pairs), "seeds": [c["seed"] for c, _ in pairs],
                      "per_seed": [c[metric] - r[metric] for c, r in pairs], "mean": t["mean"], "sd": t["sd"],
                      "t_interval": t["interval"], "bootstrap_interval": None, "bootstrap": None}
            diffs, note = [], None
            for c, r in pairs:
                a, b = c.get("per_image_iou"), r.get("per_image_iou")
                if a is None or b is None or a.shape != b.shape:
                    note = "per_image_iou missing or of different shapes in a pair"
                    break
                d = a.mean(axis=1) - b.mean(axis=1)
                if positives:
                    pos_a, pos_b = c.get("test_positive"), r.get("test_positive")
                    if pos_a is None or pos_b is None or not np.array_equal(pos_a, pos_b):
                        note = ("metrics.json does not record which test images are positive (runs[i].test_positive): "
                                "no bootstrap over the positive test images")
                        break
                    d = d[pos_a]
                diffs.append(d)
            if note is None and all(len(d) for d in diffs):
                shared = len({(c["n_test"], c["test_split"]) for pair in pairs for c in pair}) == 1
                boot = ps.bootstrap_paired(diffs, resamples=resamples, seed=boot_seed, shared=shared)
                paired["bootstrap_interval"] = boot["interval"]
                paired["bootstrap"] = {"unit": "test image", "resamples": resamples, "seed": boot_seed,
                                       "same_test_images_every_seed": shared, "estimate": boot["estimate"],
                                       "sd": boot["sd"]}
            else:
                paired["bootstrap_note"] = note or "no test images"
    block["paired"] = paired

    if positives:
        block["efficiency"] = None
        block["efficiency_note"] = "the evaluation curve records the IoU over all test images only"
        return block
    iou_at = []
    for frac in BUDGET_POINTS:
        points = [ps.curve_at(c["curve"], frac * max_steps) for c in cells]
        vals = [p["value"] for p in points if p is not None]
        m, s = ps.mean_sd(vals)
        iou_at.append({"budget_fraction": frac, "target_step": frac * max_steps,
                       "steps": [p["step"] if p else None for p in points], "mean": m, "sd": s,
                       "per_seed": [p["value"] if p else None for p in points]})
    to_ref = None
    if ref_cells is not None:
        pairs = [(c, ref_cells[c["seed"]]) for c in cells if c["seed"] in ref_cells]
        if pairs:
            per_seed = [ps.steps_to_reach(c["curve"], r["mean_iou"]) for c, r in pairs]
            to_ref = {"reference": ref_name, "seeds": [c["seed"] for c, _ in pairs],
                      "reference_final": [r["mean_iou"] for _, r in pairs], "per_seed": per_seed,
                      "median": ps.median_steps(per_seed), "reached": sum(v is not None for v in per_seed),
                      "n": len(per_seed), "budget": max_steps}
    block["efficiency"] = {"iou_at": iou_at, "steps_to_reference": to_ref}
    return block


def summarize(cells: list[dict], reference: str | None, max_steps: int, resamples: int = 2000,
              boot_seed: int = 0) -> list[dict]:
    """One entry per init x mode x fraction (in the order the cells first appear)."""
    groups: dict[tuple, list[dict]] = {}
    for c in cells:
        groups.setdefault(group_key(c), []).append(c)
    covid = any(c.get("positives_mean_iou") is not None for c in cells)
    summary = []
    for (init, mode, fraction), group in groups.items():
        group = sorted(group, key=lambda c: c["seed"])
        ref = groups.get((reference, mode, fraction)) if reference else None
        ref_cells = {c["seed"]: c for c in ref} if ref else None
        entry = {"init": init, "mode": mode, "fraction": fraction, "n_train": group[0]["n_train"],
                 "n_test": group[0]["n_test"], "n_seeds": len(group), "seeds": [c["seed"] for c in group],
                 "reference": reference, "is_reference": init == reference}
        metrics = ("mean_iou", "positives_mean_iou") if covid else ("mean_iou",)
        for metric in metrics:
            entry[metric] = metric_block(metric, group, ref_cells, reference, init == reference, max_steps,
                                         resamples, boot_seed)
        summary.append(entry)
    return summary


# --------------------------------------------------------------------------- the report


def fmt(v, digits: int = 3, sign: bool = False) -> str:
    if v is None:
        return "–"
    return f"{v:+.{digits}f}" if sign else f"{v:.{digits}f}"


def fmt_interval(iv, sign: bool = True) -> str:
    return "–" if not iv else f"[{fmt(iv[0], sign=sign)}, {fmt(iv[1], sign=sign)}]"


def fmt_steps(v) -> str:
    return "never" if v is None else f"{v:g}"


def report(doc: dict) -> str:
    summary = doc.get("summary") or []
    settings = doc.get("settings") or {}
    lines = [f"Label efficiency: task {settings.get('task', '?')} ({settings.get('dataset', '?')}), "
             f"{settings.get('max_steps', '?')} optimiser steps per cell, batch {settings.get('batch_size', '?')}, "
             f"lr {settings.get('lr', '?')}, {settings.get('image_size_used', settings.get('image_size', '?'))} px, "
             f"reference {settings.get('reference') or 'none'}; {len(doc.get('cells') or [])} finished runs.", ""]
    if doc.get("skipped"):
        lines += [f"Skipped (unfinished, running elsewhere?): {', '.join(doc['skipped'])}.", ""]
    if not summary:
        return "\n".join(lines + ["No finished cells."]) + "\n"
    inits = list(dict.fromkeys(e["init"] for e in summary))
    rows = list(dict.fromkeys((e["mode"], e["fraction"]) for e in summary))
    by = {(e["init"], e["mode"], e["fraction"]): e for e in summary}
    metrics = ["mean_iou"] + (["positives_mean_iou"] if any("positives_mean_iou" in e for e in summary) else [])
    for metric in metrics:
        title = "mean IoU" if metric == "mean_iou" else "mean IoU on the COVID-positive test images"
        lines += [f"### (a) Final {title} (last evaluation), mean ± sd over seeds (n seeds)", "",
                  "| mode | fraction | masks | " + " | ".join(inits) + " |",
                  "|---|---|---|" + "---|" * len(inits)]
        for mode, frac in rows:
            n_train = next(by[(i, mode, frac)]["n_train"] for i in inits if (i, mode, frac) in by)
            cells = []
            for i in inits:
                e = by.get((i, mode, frac))
                f = e[metric]["final"] if e and metric in e else None
                cells.append("–" if not f or f["mean"] is None else
                             f"{fmt(f['mean'])} ± {fmt(f['sd'])} ({len(f['per_seed'])})")
            lines.append(f"| {mode} | {frac:g} | {n_train} | " + " | ".join(cells) + " |")
        lines += ["", f"### (b) Paired difference in final {title}, arm − reference (same mode, fraction, seed)", "",
                  "| mode | fraction | arm | vs | pairs | mean diff | sd | 95 % t-interval (seeds) | "
                  "95 % bootstrap (test images) |", "|---|---|---|---|---|---|---|---|---|"]
        any_pair = False
        for mode, frac in rows:
            for i in inits:
                e = by.get((i, mode, frac))
                p = e[metric]["paired"] if e and metric in e else None
                if not p:
                    continue
                any_pair = True
                lines.append(f"| {mode} | {frac:g} | {i} | {p['reference']} | {p['n_pairs']} | "
                             f"{fmt(p['mean'], sign=True)} | {fmt(p['sd'])} | {fmt_interval(p['t_interval'])} | "
                             f"{fmt_interval(p['bootstrap_interval'])} |")
        if not any_pair:
            lines.append("| (no pairs: no reference arm, or no seed in common) |||||||||")
        if metric == "positives_mean_iou":
            lines += ["", "(No efficiency table for the positives: the evaluation curve records the IoU over all "
                          "test images only.)", ""]
            continue
        pts = "/".join(f"{int(f * 100)} %" for f in BUDGET_POINTS)
        lines += ["", f"### (c) Training efficiency: mean IoU after {pts} of the budget, final, and the steps to "
                      "reach the reference's final IoU (per seed; median)", "",
                  "| mode | fraction | arm | " + " | ".join(f"IoU @{int(f * 100)} %" for f in BUDGET_POINTS)
                  + " | final | steps to reference final (median; per seed) |",
                  "|---|---|---|" + "---|" * len(BUDGET_POINTS) + "---|---|"]
        for mode, frac in rows:
            for i in inits:
                e = by.get((i, mode, frac))
                if not e:
                    continue
                b = e["mean_iou"]
                eff = b.get("efficiency") or {}
                ats = [fmt(x["mean"]) for x in eff.get("iou_at") or []]
                tr = eff.get("steps_to_reference")
                to = "–" if not tr else (f"{fmt_steps(tr['median'])}; "
                                         f"[{', '.join(fmt_steps(v) for v in tr['per_seed'])}] of {tr['budget']}")
                lines.append(f"| {mode} | {frac:g} | {i} | " + " | ".join(ats) + f" | {fmt(b['final']['mean'])} | "
                             f"{to} |")
        lines.append("")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- the plot


def plot(doc: dict, path: Path) -> bool:
    """IoU vs masks (left) and IoU vs optimiser steps at the smallest fraction (right);
    False (and a note) when matplotlib is not installed."""
    try:
        import matplotlib
    except ImportError:
        log(f"label_efficiency: matplotlib is not installed; {path.name} not written")
        return False
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary, cells, s = doc["summary"], doc["cells"], doc["settings"]
    if not summary:
        return False
    lines = list(dict.fromkeys((e["init"], e["mode"]) for e in summary))
    inits = list(dict.fromkeys(i for i, _ in lines))
    colours = {i: f"C{k % 10}" for k, i in enumerate(inits)}
    styles = {"full": "-", "adapter": "--", "head": ":"}
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2), dpi=120)
    fractions = sorted({e["fraction"] for e in summary})
    for k, (init, mode) in enumerate(lines):
        row = sorted((e for e in summary if (e["init"], e["mode"]) == (init, mode)), key=lambda e: e["fraction"])
        dodge = 1.04 ** (k - (len(lines) - 1) / 2)  # side by side, so that error bars do not hide each other
        left.errorbar([e["fraction"] * dodge for e in row], [e["mean_iou"]["final"]["mean"] for e in row],
                      yerr=[e["mean_iou"]["final"]["sd"] or 0.0 for e in row], color=colours[init],
                      linestyle=styles.get(mode, "-"), marker="o", capsize=3, label=f"{init}, {mode}")
    n_train = {e["fraction"]: e["n_train"] for e in summary}
    left.set_xscale("log")
    left.set_xticks(fractions)
    left.set_xticklabels([f"{f:g}\n({n_train[f]})" for f in fractions])
    left.minorticks_off()
    left.set_xlabel("label fraction (masks), log scale")
    left.set_ylabel("final mean IoU (test), ± sd over seeds")
    left.grid(True, alpha=0.3)
    left.legend(fontsize=7)
    smallest = fractions[0]
    for init, mode in lines:
        runs = [c for c in cells if (c["init"], c["mode"], c["fraction"]) == (init, mode, smallest)]
        if not runs:
            continue
        by_step: dict[int, list[float]] = {}
        for c in runs:
            for r in c["curve"]:
                iou = r.get("test_iou", r.get("val_iou"))  # finetune's curves before 2026-12-06: val_iou
                if iou is not None:
                    by_step.setdefault(r["step"], []).append(iou)
        steps = sorted(st for st, v in by_step.items() if len(v) == len(runs))
        right.plot(steps, [float(np.mean(by_step[st])) for st in steps], color=colours[init],
                   linestyle=styles.get(mode, "-"), marker=".", label=f"{init}, {mode} ({len(runs)} seeds)")
    right.set_xlabel("optimiser steps")
    right.set_ylabel("mean IoU (test), mean over seeds")
    right.set_title(f"fraction {smallest:g} ({n_train[smallest]} masks)", fontsize=9)
    right.grid(True, alpha=0.3)
    right.legend(fontsize=7)
    fig.suptitle(f"{s.get('task')} ({s.get('dataset')}), {s.get('max_steps')} steps per cell, "
                 f"{s.get('image_size_used') or s.get('image_size') or '?'} px", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


# --------------------------------------------------------------------------- scanning and running


def scan(out: Path, max_steps: int | None) -> list[dict]:
    """Every finished cell under ``out`` (``<init>_<mode>_<fraction>/seed_<s>/metrics.json``)."""
    from doll.utils import read_json

    found = []
    for d in sorted(p for p in out.iterdir() if p.is_dir()) if out.is_dir() else []:
        m = CELL_DIR.match(d.name)
        if not m:
            continue
        for sd in sorted(d.glob("seed_*")):
            try:
                seed = int(sd.name.removeprefix("seed_"))
                fraction = float(m["fraction"])
            except ValueError:
                continue
            metrics = finished_run(sd, max_steps)
            if metrics is None:
                log(f"label_efficiency: {sd.relative_to(out)}: not a finished run"
                    + (f" of {max_steps} steps" if max_steps else "") + "; left out")
                continue
            cell = cell_entry(metrics, m["init"], m["mode"], fraction, seed, str(sd.relative_to(out)))
            config = read_json(sd / "config.json") if (sd / "config.json").is_file() else {}
            cell["run_settings"] = {k: config.get(k) for k in SHARED_SETTINGS}
            cell["run_settings"]["val_every"] = effective_val_every(int(config.get("val_every") or 0),
                                                                    cell["max_steps"])
            found.append(cell)
    budgets = sorted({c["max_steps"] for c in found})
    if len(budgets) > 1:
        raise SystemExit(f"label_efficiency: cells in {out} have different budgets ({budgets}); pass --max-steps N")
    return found


def write(out: Path, doc: dict) -> None:
    from doll.utils import write_json

    write_json(out / "label_efficiency.json", {**doc, "cells": [public(c) for c in doc["cells"]]})


def main_report(a: argparse.Namespace) -> dict:
    from doll.utils import read_json

    out = Path(a.out)
    path = out / "label_efficiency.json"
    doc = read_json(path) if path.is_file() else None
    if doc is None or a.rescan:
        old = (doc or {}).get("settings") or {}
        max_steps = a.max_steps or old.get("max_steps")
        cells = scan(out, max_steps)
        if not cells:
            raise SystemExit(f"label_efficiency: no finished cells under {out}")
        max_steps = max_steps or cells[0]["max_steps"]
        names_ = sorted({c["init"] for c in cells})
        reference = a.reference or old.get("reference") or (
            "random" if "random" in names_ else next((c["init"] for c in cells if c["init_spec"] == "random"), None))
        if reference and reference not in names_:
            raise SystemExit(f"label_efficiency: --reference {reference}: no such arm under {out} "
                             f"({', '.join(names_)})")
        # the order a run makes them in: mode, fraction, seed, then the arms (as listed, else the reference first)
        listed = [x["name"] for x in old.get("inits") or []]
        arm_order = [n for n in listed if n in names_] + sorted(set(names_) - set(listed),
                                                                  key=lambda n: (n != reference, n))
        mode_order = [m for m in old.get("modes") or [] if m in MODES] + list(MODES)
        cells.sort(key=lambda c: (mode_order.index(c["mode"]), c["fraction"], c["seed"], arm_order.index(c["init"])))
        found = {k: sorted({json.dumps(c["run_settings"].get(k)) for c in cells}) for k in SHARED_SETTINGS}
        differing = [k for k, v in found.items() if len(v) > 1]
        if differing:
            log("label_efficiency: note: the cells were run with different " + "; ".join(
                f"{k} ({', '.join(found[k])})" for k in differing))
        from_runs = {k: json.loads(v[0]) for k, v in found.items() if len(v) == 1}
        from_runs["val_every_used"] = from_runs.pop("val_every", None)
        settings = {**from_runs, **old, "max_steps": max_steps, "reference": reference, "rescanned": True,
                    "differing_settings": differing}
        settings.setdefault("bootstrap", {"resamples": a.bootstrap, "seed": a.bootstrap_seed})
        boot = settings["bootstrap"]
        doc = {"settings": settings, "command": shlex.join(a.argv), "cells": cells,
               "summary": summarize(cells, reference, max_steps, boot["resamples"], boot["seed"])}
        write(out, doc)
        plot({**doc, "cells": [public(c) for c in cells]}, out / "label_efficiency.png")
    sys.stdout.write(report(doc))
    return doc


def main(argv=None) -> dict:
    a = parse_args(argv)
    if a.report or a.rescan:
        return main_report(a)
    import doll
    from doll.errors import DollError
    from doll.finetuning.settings import FinetuneSettings, check_settings, image_size, init_is_folder
    from doll.models.checkpoint import read_config
    from doll.models.segmenter import DEFAULT_DECODER, saved_decoder
    from doll.outputs import OutputInUse
    from doll.utils import resolve_paths

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    root = a.root
    if a.phantom:
        root, _ = phantom_setup(out / "setup", a.seed, a.device)
    arms, reference = a.arms, default_reference(a.arms, a.reference)
    folders = [x for x in arms if init_is_folder(x.init)]
    first = read_config(folders[0].init, kind="segmenter") if folders else None
    encoder = a.encoder or (first["doll"]["encoder"] if first else "resnet34")
    decoder = a.decoder or (saved_decoder(first) if first else DEFAULT_DECODER)
    size = a.image_size or (int(first["doll"].get("image_size") or 0) if first else 0)
    seeds = list(range(a.seed, a.seed + a.seeds))

    def settings_for(arm: Arm, mode: str, fraction: float, seed: int, folder: Path) -> FinetuneSettings:
        s = FinetuneSettings(task=a.task, dataset=a.dataset, root=root, init=arm.init, mode=mode, fold=a.fold,
                             label_fraction=fraction, encoder=encoder,
                             decoder=DEFAULT_DECODER if init_is_folder(arm.init) else decoder,
                             transfer=a.transfer if init_is_folder(arm.init) else "all",
                             pretrained_lr=a.pretrained_lr if arm.init != "random" and mode == "full" else 1.0,
                             image_size=size, max_steps=a.max_steps, val_every=a.val_every,
                             batch_size=a.batch_size, lr=a.lr, seeds=1, seed=seed, device=a.device,
                             out=str(folder), overwrite=True, progress=False)
        resolve_paths(s, "root", "init")
        return s

    sizes = {}
    for arm in arms:  # refuse bad arms before anything runs (in every mode: --pretrained-lr applies to full only)
        for mode in a.modes:
            s = settings_for(arm, mode, a.fractions[0], seeds[0], out)
            try:
                check_settings(s)
            except DollError as exc:
                raise SystemExit(f"label_efficiency: --inits {arm.name}: {exc}") from None
        sizes[arm.name] = image_size(s)
        if init_is_folder(arm.init):
            cfg = read_config(s.init, kind="segmenter")
            net = (cfg["doll"]["encoder"], saved_decoder(cfg))
            if net != (encoder, decoder):
                log(f"label_efficiency: note: arm {arm.name} is a {net[1]} / {net[0]}, the random / imagenet arms "
                    f"a {decoder} / {encoder}: the arms differ in architecture")
    if len(set(sizes.values())) > 1:
        log(f"label_efficiency: note: the arms train at different image sizes {sizes}; give --image-size")
    settings = {"task": a.task, "dataset": a.dataset, "root": str(Path(root).resolve()), "fold": a.fold,
                "inits": [{"name": x.name, "init": x.init} for x in arms], "reference": reference,
                "modes": a.modes, "fractions": a.fractions, "seeds": seeds, "max_steps": a.max_steps,
                "val_every": a.val_every, "val_every_used": effective_val_every(a.val_every, a.max_steps),
                "batch_size": a.batch_size, "lr": a.lr, "encoder": encoder, "decoder": decoder,
                "transfer": a.transfer, "pretrained_lr": a.pretrained_lr, "image_size": size, "image_size_used": sizes[arms[0].name], "device": a.device,
                "bootstrap": {"resamples": a.bootstrap, "seed": a.bootstrap_seed}, "phantom": a.phantom,
                "order": "mode, fraction, seed, init (the arms of a pair run one after another)"}
    grid = [(arm, mode, fraction, seed) for mode in a.modes for fraction in a.fractions for seed in seeds
            for arm in arms]  # the arms of a pair one after another

    def state(arm: Arm, mode: str, fraction: float, seed: int) -> tuple[str, dict | None]:
        """("done", metrics) | ("busy", None) | ("run", None); a finished run this benchmark
        cannot use (other settings or budget) stops it."""
        folder = cell_dir(out, arm.name, mode, fraction, seed)
        metrics = finished_run(folder, a.max_steps)
        if metrics is not None:
            diff = settings_differences(folder, settings_for(arm, mode, fraction, seed, folder), a.max_steps)
            if diff:
                raise SystemExit(f"label_efficiency: {folder} holds a finished run with other settings "
                                 f"({'; '.join(diff)}); remove it or choose another --out")
            return "done", metrics
        other = finished_run(folder, None)
        if other is not None:
            raise SystemExit(f"label_efficiency: {folder} holds a finished run of "
                             f"{other['runs'][0].get('max_steps')} steps, not {a.max_steps}; remove it or choose "
                             "another --out")
        return ("busy" if busy(folder, a.busy_seconds) else "run"), None

    for cell in grid:  # refuse unusable folders before anything is written
        state(*cell)
    doc = {"settings": settings, "command": shlex.join(a.argv), "cells": [], "summary": [], "skipped": []}
    write(out, doc)
    for arm, mode, fraction, seed in grid:
        folder = cell_dir(out, arm.name, mode, fraction, seed)
        name = folder.relative_to(out)
        what, metrics = state(arm, mode, fraction, seed)
        if what == "done":
            log(f"== {name}: finished ({a.max_steps} steps), not run again")
        elif what == "busy":
            log(f"== {name}: unfinished and written to in the last {a.busy_seconds:g} s (running elsewhere?): "
                "skipped; rerun later or pass --busy-seconds 0")
            doc["skipped"].append(str(name))
            write(out, doc)
            continue
        else:
            t = time.time()
            log(f"== {name}: training {a.max_steps} steps ...")
            try:
                with contextlib.redirect_stdout(sys.stderr):  # the stages' lines; stdout is the table
                    doll.finetune(settings_for(arm, mode, fraction, seed, folder))
            except OutputInUse as exc:  # another instance took this cell since state() looked
                log(f"== {name}: {exc}: skipped")
                doc["skipped"].append(str(name))
                write(out, doc)
                continue
            log(f"== {name}: done in {time.time() - t:.0f} s")
            metrics = finished_run(folder, a.max_steps)
            if metrics is None:
                raise SystemExit(f"label_efficiency: {folder} did not train {a.max_steps} steps (early stop?); "
                                 "see its metrics.json")
        cell = cell_entry(metrics, arm.name, mode, fraction, seed, str(name))
        doc["cells"].append(cell)
        doc["summary"] = summarize(doc["cells"], reference, a.max_steps, a.bootstrap, a.bootstrap_seed)
        write(out, doc)
        print(stdout_line(cell), flush=True)
    plot({**doc, "cells": [public(c) for c in doc["cells"]]}, out / "label_efficiency.png")
    return doc


if __name__ == "__main__":
    main()
