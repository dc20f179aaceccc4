"""benchmarks/label_efficiency.py as a paired experiment: a tiny two-arm run (random init and
the session's pretrained network), resumability, the report; and its statistics
(benchmarks/paired_stats.py) on made-up numbers."""
from __future__ import annotations

import importlib.util
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import doll

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"
SCRIPT = BENCH / "label_efficiency.py"
sys.path.insert(0, str(BENCH))
import paired_stats as ps  # noqa: E402


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
    sys.modules[spec.name] = mod  # its dataclass looks the module up
    spec.loader.exec_module(mod)
    return mod


def made_up_cell(init, seed, final, curve, per_image, positives=None):
    cell = {"init": init, "mode": "full", "fraction": 0.05, "seed": seed, "n_train": 6, "n_test": len(per_image),
            "test_split": "test", "mean_iou": final, "curve": [{"step": s, "val_iou": v} for s, v in curve],
            "per_image_iou": np.asarray(per_image, float)}
    if positives is not None:
        cell["positives_mean_iou"], cell["test_positive"] = positives
    return cell


def test_summary_on_made_up_cells():
    le = load_bench()
    cells = []
    for seed, (r, d) in enumerate([(0.50, 0.60), (0.55, 0.62), (0.52, 0.58)]):
        cells.append(made_up_cell("random", seed, r, [(10, 0.1), (25, 0.3), (50, 0.45), (100, r)],
                                  [[r - 0.1], [r + 0.1]], positives=(r - 0.1, [True, False])))
        cells.append(made_up_cell("doll", seed, d, [(10, 0.4), (25, r), (50, 0.57), (100, d)],
                                  [[d - 0.1], [d + 0.1]], positives=(d - 0.1, [True, False])))
    summary = le.summarize(cells, "random", 100, resamples=500, boot_seed=0)
    by = {e["init"]: e for e in summary}
    ref, arm = by["random"]["mean_iou"], by["doll"]["mean_iou"]
    assert ref["paired"] is None and by["random"]["is_reference"]
    p = arm["paired"]
    assert p["per_seed"] == pytest.approx([0.10, 0.07, 0.06]) and p["mean"] == pytest.approx(0.23 / 3)
    assert p["t_interval"] == pytest.approx(ps.t_interval([0.10, 0.07, 0.06])["interval"])
    assert p["bootstrap_interval"][0] <= p["mean"] <= p["bootstrap_interval"][1]
    assert arm["final"]["mean"] == pytest.approx(0.60) and arm["final"]["sd"] == pytest.approx(0.02)
    at = {x["budget_fraction"]: x for x in arm["efficiency"]["iou_at"]}
    assert at[0.1]["mean"] == pytest.approx(0.4) and at[0.25]["steps"] == [25, 25, 25]
    assert at[0.5]["mean"] == pytest.approx(0.57)
    to = arm["efficiency"]["steps_to_reference"]
    assert to["per_seed"] == [25, 25, 25] and to["median"] == 25 and to["reached"] == 3
    assert ref["efficiency"]["steps_to_reference"]["per_seed"] == [100, 100, 100]
    pos = by["doll"]["positives_mean_iou"]
    assert pos["paired"]["mean"] == pytest.approx(0.23 / 3) and pos["paired"]["t_interval"]
    assert pos["paired"]["bootstrap_interval"] is not None and pos["efficiency"] is None
    for c in cells:  # a finetune that does not record which test images are positive: no bootstrap for them
        del c["test_positive"]
    pos = {e["init"]: e for e in le.summarize(cells, "random", 100, resamples=500)}["doll"]["positives_mean_iou"]
    assert pos["paired"]["t_interval"] and pos["paired"]["bootstrap_interval"] is None
    assert "positive" in pos["paired"]["bootstrap_note"]
    text = le.report({"settings": {"task": "covid", "max_steps": 100}, "cells": cells, "summary": summary})
    assert "(b) Paired difference" in text and "+0.077" in text and "positive" in text


# ------------------------------------------------------------------ the benchmark, end to end


def run(le, capsys, *args) -> tuple[str, str]:
    """The benchmark in-process (a subprocess would spend most of this test importing torch):
    (stdout, stderr)."""
    capsys.readouterr()
    le.main([str(x) for x in args])
    got = capsys.readouterr()
    return got.out, got.err


def test_label_efficiency_paired(tmp_path, pipeline, capsys):
    le = load_bench()
    doll.make_phantoms(tmp_path / "ph", n=40, size=32, progress=False)
    out = tmp_path / "le"
    args = ["--root", tmp_path / "ph" / "anatomy", "--inits", f"random,pre={pipeline['pretrain']}",
            "--modes", "full", "--fractions", "0.25,1.0", "--seeds", 2, "--seed", 5, "--max-steps", 3,
            "--val-every", 1, "--image-size", 32, "--encoder", "resnet18", "--device", "cpu",
            "--bootstrap", 200, "--out", out]
    first, _ = run(le, capsys, *args)
    doc = json.loads((out / "label_efficiency.json").read_text())
    cells = doc["cells"]
    assert len(cells) == 8
    assert {(c["init"], c["fraction"], c["seed"]) for c in cells} == {
        (i, f, s) for i in ("random", "pre") for f in (0.25, 1.0) for s in (5, 6)}
    for c in cells:
        assert c["steps"] == 3 and c["max_steps"] == 3 and c["mode"] == "full"
        assert [p["step"] for p in c["curve"]] == [1, 2, 3]
        assert c["curve"][-1]["test_iou"] == pytest.approx(c["mean_iou"], abs=1e-9)
        assert (out / f"{c['init']}_full_{c['fraction']:g}" / f"seed_{c['seed']}" / "metrics.json").is_file()
        assert "per_image_iou" not in c
    by = {(c["init"], c["fraction"], c["seed"]): c for c in cells}
    for f in (0.25, 1.0):  # the arms of a seed share the mask subset
        for s in (5, 6):
            assert by[("random", f, s)]["n_train"] == by[("pre", f, s)]["n_train"]
    assert by[("random", 0.25, 5)]["n_train"] < by[("random", 1.0, 5)]["n_train"]
    assert doc["settings"]["reference"] == "random" and doc["settings"]["max_steps"] == 3
    summary = {(e["init"], e["fraction"]): e for e in doc["summary"]}
    assert set(summary) == {(i, f) for i in ("random", "pre") for f in (0.25, 1.0)}
    for f in (0.25, 1.0):
        e = summary[("pre", f)]
        assert e["n_seeds"] == 2 and e["seeds"] == [5, 6]
        block = e["mean_iou"]
        p = block["paired"]
        diffs = [by[("pre", f, s)]["mean_iou"] - by[("random", f, s)]["mean_iou"] for s in (5, 6)]
        assert p["reference"] == "random" and p["n_pairs"] == 2 and p["per_seed"] == pytest.approx(diffs)
        assert p["mean"] == pytest.approx(np.mean(diffs))
        lo, hi = p["t_interval"]
        assert lo <= p["mean"] <= hi
        blo, bhi = p["bootstrap_interval"]
        assert blo - 1e-4 <= p["bootstrap"]["estimate"] <= bhi + 1e-4
        assert p["bootstrap"]["estimate"] == pytest.approx(p["mean"], abs=1e-4)  # per-image IoUs are rounded
        eff = block["efficiency"]
        assert [x["budget_fraction"] for x in eff["iou_at"]] == [0.1, 0.25, 0.5]
        assert [x["steps"] for x in eff["iou_at"]] == [[1, 1], [1, 1], [2, 2]]
        to = eff["steps_to_reference"]
        assert to["reference"] == "random" and len(to["per_seed"]) == 2 and "median" in to
        assert summary[("random", f)]["mean_iou"]["paired"] is None
    lines = [json.loads(ln) for ln in first.splitlines() if ln.strip()]
    assert [(c["init"], c["fraction"], c["seed"]) for c in lines] == [
        (c["init"], c["fraction"], c["seed"]) for c in cells]

    # the same command again: every cell is finished, none is trained again
    t = time.time()
    again, err = run(le, capsys, *args)
    assert time.time() - t < 10
    assert again == first
    assert "training" not in err and err.count("not run again") == 8
    assert json.loads((out / "label_efficiency.json").read_text())["summary"] == doc["summary"]

    report, _ = run(le, capsys, "--report", "--out", out)
    assert "(a) Final mean IoU" in report and "(b) Paired difference" in report and "(c) Training efficiency" in report
    assert "| full | 0.25 |" in report and "| pre | random | 2 |" in report
    rescanned, _ = run(le, capsys, "--report", "--rescan", "--out", out)
    assert rescanned.split("\n", 1)[1] == report.split("\n", 1)[1]  # the tables, from the folders alone

    # finished runs made with other settings are neither reused nor deleted: refused before anything is written
    before = (out / "label_efficiency.json").read_bytes()
    with pytest.raises(SystemExit, match=r"other settings \(lr\)"):
        le.main([str(x) for x in args] + ["--lr", "0.01"])
    assert (out / "label_efficiency.json").read_bytes() == before

    if importlib.util.find_spec("matplotlib") is not None:
        assert (out / "label_efficiency.png").read_bytes()[:4] == b"\x89PNG"


def test_compare_arms_pairs_cells_across_outputs_by_mode_fraction_and_seed(tmp_path, capsys):
    """benchmarks/compare_arms.py: only cells with the same mode, fraction and seed form pairs."""
    import compare_arms

    def write(out, decoder, values):
        cells = [{"init": "random", "mode": m, "fraction": f, "seed": s, "mean_iou": v} for (m, f, s), v in values.items()]
        (tmp_path / out).mkdir()
        (tmp_path / out / "label_efficiency.json").write_text(json.dumps({"settings": {"decoder": decoder}, "cells": cells}))

    write("a", "pspnet", {("full", 0.05, 0): 0.60, ("full", 0.05, 1): 0.64, ("full", 0.05, 2): 0.62,
                          ("adapter", 0.05, 0): 0.5})
    write("b", "unet", {("full", 0.05, 0): 0.70, ("full", 0.05, 1): 0.76, ("full", 0.05, 3): 0.99})
    rows = compare_arms.main([f"{tmp_path / 'a'}:random", f"{tmp_path / 'b'}:random"])
    assert len(rows) == 1 and rows[0]["seeds"] == [0, 1]  # seed 2, seed 3 and the adapter cell have no partner
    assert rows[0]["diff"]["mean"] == pytest.approx(0.11) and rows[0]["diff"]["interval"] is not None
    assert "| full | 0.05 | 2 | 0.620 ± 0.028 | 0.730 ± 0.042 | +0.110 |" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="no finished cell of arm 'doll'"):
        compare_arms.main([f"{tmp_path / 'a'}:doll", f"{tmp_path / 'b'}:random"])


def test_a_cell_another_process_is_writing_is_skipped_not_a_crash(tmp_path, capsys):
    """Two instances of the benchmark on one --out share its cells: a cell whose output lock
    another writer holds is skipped (it crashed with 'in use' before)."""
    import threading

    from doll.outputs import lock_output, release_outputs

    le = load_bench()
    doll.make_phantoms(tmp_path / "ph", n=40, size=32, progress=False)
    out = tmp_path / "le"
    taken, done = threading.Event(), threading.Event()

    def other_writer():  # another thread counts as another writer
        lock_output(out / "random_full_1" / "seed_0")
        taken.set()
        done.wait(120)
        release_outputs()

    t = threading.Thread(target=other_writer)
    t.start()
    taken.wait(30)
    try:
        _, err = run(le, capsys, "--root", tmp_path / "ph" / "anatomy", "--inits", "random", "--modes", "full",
                     "--fractions", "1.0", "--seeds", 2, "--max-steps", 1, "--image-size", 32, "--encoder",
                     "resnet18", "--device", "cpu", "--bootstrap", 100, "--out", out)
    finally:
        done.set()
        t.join()
    doc = json.loads((out / "label_efficiency.json").read_text())
    assert doc["skipped"] == ["random_full_1/seed_0"] and [c["seed"] for c in doc["cells"]] == [1]
    assert "is in use by" in err


def test_a_cell_run_before_a_setting_existed_counts_as_run_with_its_default(tmp_path):
    """A finished cell whose config.json predates a finetune setting (e.g. --pretrained-lr)
    ran with that setting's default: it is reused, not refused as 'other settings'; a stored
    value that differs is still a difference."""
    from doll.finetuning.settings import FinetuneSettings

    le = load_bench()
    want = FinetuneSettings(task="lung", dataset="covidqu", root=str(tmp_path), image_size=32, max_steps=10,
                            encoder="resnet18")
    stored = {**json.loads(json.dumps(__import__("dataclasses").asdict(want))), "image_size_used": 32}
    del stored["pretrained_lr"]
    (tmp_path / "config.json").write_text(json.dumps(stored))
    assert le.settings_differences(tmp_path, want, 10) == []
    (tmp_path / "config.json").write_text(json.dumps({**stored, "pretrained_lr": 0.1}))
    assert le.settings_differences(tmp_path, want, 10) == ["pretrained_lr"]


def test_an_imagenet_weight_file_is_an_arm(tmp_path, capsys):
    """Issue 28: a user's local ImageNet weights (`--inits random,imagenet:FILE`) form an arm
    paired with random init; the file is loaded into the encoder, never downloaded."""
    import torch
    import torchvision

    from doll.models.checkpoint import load_state

    le = load_bench()
    doll.make_phantoms(tmp_path / "ph", n=24, size=32, progress=False)
    torch.manual_seed(3)
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), tmp_path / "r18.pth")
    out = tmp_path / "le"
    run(le, capsys, "--root", tmp_path / "ph" / "anatomy", "--inits", f"random,imagenet:{tmp_path / 'r18.pth'}",
        "--modes", "full", "--fractions", "1.0", "--seeds", 1, "--max-steps", 2, "--val-every", 2,
        "--image-size", 32, "--encoder", "resnet18", "--device", "cpu", "--bootstrap", 100, "--out", out)
    cells = {c["init"]: c for c in json.loads((out / "label_efficiency.json").read_text())["cells"]}
    assert set(cells) == {"random", "imagenet"} and cells["imagenet"]["steps"] == 2
    assert cells["imagenet"]["init_spec"] == f"imagenet:{tmp_path / 'r18.pth'}"
    assert cells["imagenet"]["n_train"] == cells["random"]["n_train"]
    config = json.loads((out / "imagenet_full_1" / "seed_0" / "config.json").read_text())
    assert config["init"] == f"imagenet:{tmp_path / 'r18.pth'}"
    given = torch.load(tmp_path / "r18.pth", weights_only=True)["conv1.weight"].sum(dim=1, keepdim=True)
    trained = {arm: load_state(out / f"{arm}_full_1" / "seed_0" / "model")["encoder.conv1.weight"]
               for arm in ("imagenet", "random")}
    assert (trained["imagenet"] - given).abs().max() < 0.02 < (trained["random"] - given).abs().max()
