"""benchmarks/label_efficiency.py, a thin wrapper of `doll study`: its flags mapped onto doll
study's settings, the flags it refuses, a tiny three-arm run through doll study; the reader
benchmarks/compare_arms.py; and the statistics both use (doll.studies.stats) on made-up
numbers."""
from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

from doll.studies import stats as ps

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"
SCRIPT = BENCH / "label_efficiency.py"
sys.path.insert(0, str(BENCH))


# ------------------------------------------------------------------ the statistics


def t_quantile_numeric(df: int, p: float = 0.975) -> float:
    """Student's t quantile by integrating the density (trapezoid on a fine grid) and bisection."""
    logc = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)

    def cdf(x: float) -> float:
        t = np.linspace(0.0, x, 200_001)
        f = np.exp(logc - (df + 1) / 2 * np.log1p(t * t / df))
        return 0.5 + float(np.sum((f[1:] + f[:-1]) / 2 * np.diff(t)))

    lo, hi = 0.0, 20.0
    for _ in range(50):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if cdf(mid) < p else (lo, mid)
    return (lo + hi) / 2


@pytest.mark.parametrize("df", [1, 2, 4, 9, 29, 30, 31, 45, 100])
def test_t_quantile(df):
    assert ps.t_quantile(df) == pytest.approx(t_quantile_numeric(df), abs=2e-4 if df == 1 else 2e-5)


def test_t_interval_known_values():
    # 1, 2, 3: mean 2, sd 1, half-width t(2) / sqrt(3) = 4.302653 / 1.732051 = 2.484138
    r = ps.t_interval([1.0, 2.0, 3.0])
    assert r["n"] == 3 and r["mean"] == pytest.approx(2.0) and r["sd"] == pytest.approx(1.0)
    assert r["interval"] == pytest.approx([2 - 2.484138, 2 + 2.484138], abs=1e-5)
    r = ps.t_interval([0.02, 0.05, 0.03, 0.04, 0.06])  # mean .04, sd .0158114, t(4) 2.776445
    half = 2.776445 * 0.0158113883 / math.sqrt(5)
    assert r["interval"] == pytest.approx([0.04 - half, 0.04 + half], abs=1e-7)
    one = ps.t_interval([0.3])
    assert one["mean"] == 0.3 and one["sd"] is None and one["interval"] is None
    with pytest.raises(ValueError):
        ps.t_quantile(0)


def test_bootstrap_paired():
    rng = np.random.default_rng(1)
    base = rng.uniform(0.3, 0.9, size=200)  # per test image; arm A is 0.05 better with noise, 3 seeds
    diffs = [base + 0.05 + rng.normal(0, 0.1, 200) - base for _ in range(3)]
    r = ps.bootstrap_paired(diffs, resamples=2000, seed=0)
    mean = float(np.mean([d.mean() for d in diffs]))
    assert r["estimate"] == pytest.approx(mean)
    lo, hi = r["interval"]
    assert lo < mean < hi and lo > 0 and hi - lo < 0.05
    assert ps.bootstrap_paired(diffs, resamples=2000, seed=0) == r  # seeded
    # the standard error of a mean of 200 N(0, .1 / sqrt 3) values: about .0041
    assert r["sd"] == pytest.approx(0.1 / math.sqrt(3) / math.sqrt(200), rel=0.2)
    # test sets of different sizes (a hold-out split per seed): resampled seed by seed
    uneven = [diffs[0][:150], diffs[1], diffs[2][:90]]
    r2 = ps.bootstrap_paired(uneven, resamples=500, seed=3, shared=True)
    m2 = float(np.mean([d.mean() for d in uneven]))
    assert r2["interval"][0] < m2 < r2["interval"][1]
    const = ps.bootstrap_paired([np.full(10, 0.2)], resamples=200)  # no spread: the interval is the point
    assert const["interval"] == pytest.approx([0.2, 0.2])


def test_curve_efficiency():
    curve = [{"step": s, "val_iou": v} for s, v in [(60, 0.2), (120, 0.5), (180, 0.61), (240, 0.6), (600, 0.7)]]
    assert ps.curve_at(curve, 0.1 * 600) == {"step": 60, "value": 0.2}
    assert ps.curve_at(curve, 0.25 * 600) == {"step": 180, "value": 0.61}  # the first evaluation at or after 150
    assert ps.curve_at(curve, 601) is None
    assert ps.steps_to_reach(curve, 0.6) == 180
    assert ps.steps_to_reach(curve, 0.7) == 600
    assert ps.steps_to_reach(curve, 0.71) is None
    assert ps.median_steps([180, None, 120]) == 180
    assert ps.median_steps([180, None, None]) is None
    assert ps.median_steps([100, 200]) == 150
    assert ps.median_steps([]) is None


def load_bench():
    spec = importlib.util.spec_from_file_location("label_efficiency_bench", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# ------------------------------------------------------------------ the wrapper


def test_the_quoted_flags_map_onto_doll_study(pipeline, tmp_path):
    """A docs/results.md command: `doll` is --pretrained's folder, the reference is the first
    random arm, the random arm gets the pretrained folder's network and size, every flag left
    out is doll study's default, and the study always resumes."""
    from doll.models.checkpoint import read_config
    from doll.studies.options import StudySettings

    le = load_bench()
    pre = str(pipeline["pretrain"])
    s = le.study_settings(le.parse_args(["--task", "covid", "--dataset", "covidqu", "--root", str(tmp_path),
                                         "--batch-size", "8", "--max-steps", "300", "--val-every", "60", "--seeds", "3",
                                         "--inits", "short=" + pre + ",random,doll", "--pretrained", pre,
                                         "--modes", "full", "--fractions", "0.05", "--out", "le_covid"]))
    config = read_config(pre, kind="segmenter")["doll"]
    assert s.inits == f"short={pre},random,doll={pre}" and s.reference == "random"
    assert (s.task, s.dataset, s.root, s.batch_size, s.max_steps, s.val_every, s.seeds, s.modes, s.fractions,
            s.out) == ("covid", "covidqu", str(tmp_path), 8, 300, 60, 3, "full", "0.05", "le_covid")
    assert (s.encoder, s.image_size) == (config["encoder"], config["image_size"]) and s.decoder == "pspnet"
    defaults = StudySettings(root=".")
    assert (s.lr, s.fold, s.seed, s.bootstrap, s.device) == (defaults.lr, defaults.fold, defaults.seed,
                                                             defaults.bootstrap, defaults.device)
    assert s.resume and not s.overwrite
    plain = le.study_settings(le.parse_args(["--root", str(tmp_path), "--inits", "a=random,b=random",
                                             "--first-seed", "4"]))
    assert plain.reference == "a" and plain.seed == 4 and plain.encoder == defaults.encoder
    assert plain.max_steps == defaults.max_steps and plain.fractions == defaults.fractions
    assert (plain.transfer, plain.pretrained_lr) == ("all", 1.0)
    enc = le.study_settings(le.parse_args(["--root", str(tmp_path), "--transfer", "encoder", "--pretrained-lr", "0.1"]))
    assert (enc.transfer, enc.pretrained_lr) == ("encoder", 0.1)  # doll study has both since 2026-12-06


@pytest.mark.parametrize("args, words", [
    (["--epochs", "25"], "--max-steps N"),
    (["--phantom"], "doll demo --out D"),
    (["--rescan", "--report"], "the same command again"),
    (["--bootstrap-seed", "3"], "with --seed"),
    (["--busy-seconds", "0"], "locks each cell"),
])
def test_what_doll_study_lacks_is_refused_with_the_alternative(args, words, capsys):
    le = load_bench()
    with pytest.raises(SystemExit):
        le.parse_args(["--root", "r", *args])
    assert words in capsys.readouterr().err


def test_three_arms_through_doll_study(pipeline, tmp_path, capsys):
    """random, the session's pretrained network and a local ImageNet weight file (loaded into
    the encoder, never downloaded), one fraction and seed: doll study's cells and tables; the
    same command again trains nothing; --report prints summary.md; a folder of the script's
    former layout is refused."""
    import torch
    import torchvision

    from doll.models.checkpoint import load_state

    le = load_bench()
    torch.manual_seed(3)
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), tmp_path / "r18.pth")
    out = tmp_path / "le"
    args = ["--task", "jsrt", "--root", str(pipeline["phantom"] / "anatomy"), "--inits",
            f"random,doll,imagenet:{tmp_path / 'r18.pth'}", "--pretrained", str(pipeline["pretrain"]),
            "--modes", "full", "--fractions", "1.0", "--seeds", "1", "--max-steps", "2", "--val-every", "2",
            "--device", "cpu", "--bootstrap", "100", "--quiet", "--out", str(out)]
    doc = le.main(args)
    printed = capsys.readouterr()
    assert "running doll study --task jsrt" in printed.err
    assert printed.out == (out / "summary.md").read_text()
    cells = {c["init"]: c for c in doc["cells"]}
    assert set(cells) == {"random", "doll", "imagenet"} and doc["reference"] == "random"
    assert all(c["steps"] == 2 for c in cells.values())
    assert cells["imagenet"]["train_ids"] == cells["random"]["train_ids"]
    assert {c["init"] for c in doc["comparisons"]} == {"doll", "imagenet"}
    given = torch.load(tmp_path / "r18.pth", weights_only=True)["conv1.weight"].sum(dim=1, keepdim=True)
    trained = {arm: load_state(out / "cells" / cells[arm]["name"] / "model")["encoder.conv1.weight"]
               for arm in ("imagenet", "random")}
    assert (trained["imagenet"] - given).abs().max() < 0.02 < (trained["random"] - given).abs().max()

    stamps = {p: p.stat().st_mtime_ns for p in (out / "cells").rglob("metrics.json")}
    again = le.main(args)
    assert again["n_trained_now"] == 0 and {p: p.stat().st_mtime_ns for p in stamps} == stamps
    capsys.readouterr()
    le.main(["--report", "--out", str(out)])
    assert capsys.readouterr().out == (out / "summary.md").read_text()

    old = tmp_path / "old"
    old.mkdir()
    (old / "label_efficiency.json").write_text("{}")
    with pytest.raises(SystemExit, match="before it ran doll study"):
        le.main([*args[:-1], str(old)])
    with pytest.raises(SystemExit, match="git worktree add"):
        le.main(["--report", "--out", str(old)])


# ------------------------------------------------------------------ compare_arms.py


def test_compare_arms_pairs_cells_across_outputs_by_mode_fraction_and_seed(tmp_path, capsys):
    """benchmarks/compare_arms.py: only cells with the same mode, fraction and seed form pairs,
    across a doll study output (study.json) and one of the former script (label_efficiency.json)."""
    import compare_arms

    def write(out, name, decoder, values):
        cells = [{"init": "random", "mode": m, "fraction": f, "seed": s, "mean_iou": v} for (m, f, s), v in values.items()]
        (tmp_path / out).mkdir()
        (tmp_path / out / name).write_text(json.dumps({"settings": {"decoder": decoder}, "cells": cells}))

    write("a", "label_efficiency.json", "pspnet", {("full", 0.05, 0): 0.60, ("full", 0.05, 1): 0.64,
                                                   ("full", 0.05, 2): 0.62, ("adapter", 0.05, 0): 0.5})
    write("b", "study.json", "unet", {("full", 0.05, 0): 0.70, ("full", 0.05, 1): 0.76, ("full", 0.05, 3): 0.99})
    rows = compare_arms.main([f"{tmp_path / 'a'}:random", f"{tmp_path / 'b'}:random"])
    assert len(rows) == 1 and rows[0]["seeds"] == [0, 1]  # seed 2, seed 3 and the adapter cell have no partner
    assert rows[0]["diff"]["mean"] == pytest.approx(0.11) and rows[0]["diff"]["interval"] is not None
    assert "| full | 0.05 | 2 | 0.620 ± 0.028 | 0.730 ± 0.042 | +0.110 |" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="no finished cell of arm 'doll'"):
        compare_arms.main([f"{tmp_path / 'a'}:doll", f"{tmp_path / 'b'}:random"])
    with pytest.raises(SystemExit, match="neither study.json nor label_efficiency.json"):
        compare_arms.main([f"{tmp_path}:random", f"{tmp_path / 'b'}:random"])
