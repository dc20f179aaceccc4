"""`doll study` (issue 36): the paired label-efficiency study as a command. On the phantoms with
two inits (random and the session's pretrained network), two fractions, two seeds and one mode:
8 cells, paired comparisons with intervals, the same masks for the inits of a seed, resume that
retrains only the missing cell, the summary and the report's figures; and the scheduler
without GPUs."""
from __future__ import annotations

import json
import shutil
import threading
import time

import pytest

from conftest import cli
from doll_cli.main import main
from doll.errors import DollError


def test_study_on_the_phantoms(phantom, pipeline, tmp_path, capsys):
    out = tmp_path / "study"
    args = ["study", "--task", "jsrt", "--dataset", "jsrt", "--root", phantom / "anatomy",
            "--inits", f"random,pre={pipeline['pretrain']}", "--fractions", "0.25,1", "--seeds", 2, "--modes", "full",
            "--max-steps", 4, "--val-every", 2, "--image-size", 32, "--encoder", "resnet18", "--device", "cpu",
            "--bootstrap", 200, "--out", out]
    cli(*args)
    printed = capsys.readouterr().out
    doc = json.loads((out / "study.json").read_text())
    cells = doc["cells"]
    assert len(cells) == 8 and doc["reference"] == "random"
    assert {(c["init"], c["fraction"], c["seed"]) for c in cells} == {
        (i, f, s) for i in ("random", "pre") for f in (0.25, 1.0) for s in (0, 1)}
    for c in cells:
        assert c["steps"] == 4 and c["mode"] == "full" and [p["step"] for p in c["curve"]] == [2, 4]
        metrics = json.loads((out / "cells" / c["name"] / "metrics.json").read_text())
        assert metrics["runs"][0]["train_ids"] == c["train_ids"]
    by = {(c["init"], c["fraction"], c["seed"]): c for c in cells}
    for f in (0.25, 1.0):  # the inits of a seed trained on the same masks
        for s in (0, 1):
            assert by["random", f, s]["train_ids"] == by["pre", f, s]["train_ids"]
    assert by["random", 0.25, 0]["train_ids"] != by["random", 0.25, 1]["train_ids"]
    assert by["random", 0.25, 0]["n_train"] < by["random", 1.0, 0]["n_train"]

    groups = {(g["init"], g["fraction"]): g for g in doc["groups"]}
    g = groups["pre", 0.25]
    assert g["n_seeds"] == 2 and g["mean_iou"]["sd"] is not None and len(g["iou_at"]) == 3
    comps = {c["fraction"]: c for c in doc["comparisons"]}
    assert set(comps) == {0.25, 1.0}
    for f, comp in comps.items():
        assert comp["init"] == "pre" and comp["reference"] == "random" and comp["same_masks"]
        d = comp["final"]["mean_iou"]
        diffs = [by["pre", f, s]["mean_iou"] - by["random", f, s]["mean_iou"] for s in (0, 1)]
        assert d["per_seed"] == pytest.approx(diffs)
        lo, hi = d["ci95_t"]
        assert lo <= d["mean"] <= hi
        blo, bhi = d["ci95_bootstrap"]
        assert blo - 1e-3 <= d["bootstrap"]["estimate"] <= bhi + 1e-3
        assert [p["budget_fraction"] for p in comp["along_the_way"]] == [0.1, 0.25, 0.5]
        assert comp["steps_to_reference_final"]["n"] == 2
    assert "pre - random, full" in printed

    summary = (out / "summary.md").read_text()
    assert "doll study --task jsrt" in summary and "Paired difference" in summary and "| full | " in summary
    assert "95 % interval (seeds, t)" in summary
    page = (out / "report.html").read_text()
    figures = sorted(p.name for p in (out / "figures").iterdir())
    assert {"mean_iou_vs_masks.png", "iou_vs_steps.png", "per_structure.png"} <= set(figures)
    for name in figures:
        assert (out / "figures" / name).read_bytes()[:4] == b"\x89PNG" and f"figures/{name}" in page

    # resume after one cell's folder is gone: only that cell trains again
    gone = by["pre", 1.0, 1]["name"]
    shutil.rmtree(out / "cells" / gone)
    killed = by["random", 0.25, 1]["name"]  # killed after its last checkpoint, before metrics.json
    (out / "cells" / killed / "metrics.json").unlink()
    before = {c["name"]: (out / "cells" / c["name"] / "metrics.json").stat().st_mtime_ns for c in cells
              if c["name"] not in (gone, killed)}
    capsys.readouterr()
    main([*map(str, args), "--resume"])  # not --quiet: the progress lines
    err = capsys.readouterr().err
    assert "6 finished before, reused), 2 to train" in err and "cell 8/8 done: " + gone in err
    after = {name: (out / "cells" / name / "metrics.json").stat().st_mtime_ns for name in before}
    assert after == before
    again = json.loads((out / "study.json").read_text())
    assert again["n_trained_now"] == 2 and len(again["cells"]) == 8
    assert (out / "cells" / gone / "metrics.json").is_file() and (out / "cells" / killed / "metrics.json").is_file()
    resumed = {c["name"]: c for c in again["cells"]}[killed]
    assert resumed["mean_iou"] == pytest.approx(by["random", 0.25, 1]["mean_iou"], abs=1e-6)  # continued, same model

    # without --resume a finished study is not replaced; with other shared settings it is not resumed
    with pytest.raises(SystemExit):
        cli(*args)
    with pytest.raises(SystemExit):
        cli(*[a if a != 4 else 5 for a in args], "--resume")


def test_the_api_name():
    import doll

    assert doll.study.__module__ == "doll.study.run" and callable(doll.study)


def test_run_cells_keeps_one_cell_per_device():
    """The scheduler over --devices, without GPUs: every cell runs once, never two on one device."""
    from doll.study.run import run_cells

    busy, seen, lock = set(), [], threading.Lock()
    overlap = []

    def run_one(cell, device):
        with lock:
            if device in busy:
                overlap.append(device)
            busy.add(device)
        time.sleep(0.01 * (cell % 3))
        with lock:
            busy.discard(device)
        return device

    done = []
    run_cells(list(range(12)), ["cuda:0", "cuda:1", "cuda:2"], run_one, lambda c, d: done.append((c, d)))
    assert sorted(c for c, _ in done) == list(range(12)) and not overlap
    assert len({d for _, d in done}) > 1
    order = []
    run_cells([1, 2, 3], ["cpu"], lambda c, d: d, lambda c, d: order.append((c, d)))
    assert order == [(1, "cpu"), (2, "cpu"), (3, "cpu")]

    def failing(cell, device):
        if cell == 2:
            raise DollError("cell 2 failed")
        return device

    with pytest.raises(DollError, match="cell 2 failed"):
        run_cells(list(range(6)), ["cuda:0", "cuda:1"], failing, lambda c, d: None)


def test_study_refuses_bad_grids(tmp_path):
    from doll.study.run import StudySettings, plan

    def grid(**kw):
        return plan(StudySettings(root=str(tmp_path), **kw))

    inits, ref, cells = grid(inits="random,a=/x/pre,imagenet:/w.pt", fractions="1,0.1", seeds=2, modes="full")
    assert [i.name for i in inits] == ["random", "a", "imagenet"] and ref == "random" and len(cells) == 12
    assert cells[0].name == "random_full_f0.1_s0"
    for kw, message in [({"task": "seg4cls"}, "not supported yet"), ({"inits": "random,random"}, "twice"),
                        ({"fractions": "0,1"}, "fractions"), ({"modes": "full,lora"}, "modes"),
                        ({"reference": "doll"}, "--reference doll")]:
        with pytest.raises(DollError, match=message):
            grid(**kw)
