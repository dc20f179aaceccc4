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

    assert doll.study.__module__ == "doll.studies.run" and callable(doll.study)


def test_run_cells_keeps_one_cell_per_device():
    """The scheduler over --devices, without GPUs: every cell runs once, never two on one device."""
    from doll.studies.run import run_cells

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
    from doll.studies.run import StudySettings, plan

    def grid(**kw):
        return plan(StudySettings(root=str(tmp_path), **kw))

    inits, ref, cells = grid(inits="random,a=/x/pre,imagenet:/w.pt", fractions="1,0.1", seeds=2, modes="full")
    assert [i.name for i in inits] == ["random", "a", "imagenet"] and ref == "random" and len(cells) == 12
    assert cells[0].name == "random_full_f0.1_s0"
    for kw, message in [({"task": "seg4cls"}, "not supported by it yet"), ({"inits": "random,random"}, "twice"),
                        ({"fractions": "0,1"}, "fractions"), ({"modes": "full,lora"}, "modes"),
                        ({"reference": "doll"}, "--reference doll")]:
        with pytest.raises(DollError, match=message):
            grid(**kw)


def test_a_cell_from_before_a_new_finetune_setting_counts_as_run_with_its_default(tmp_path):
    """A finished cell whose config.json lacks a newer finetune setting ran with its default:
    reused, not refused; a stored value that differs is refused, naming it."""
    from doll.studies.run import Cell, Init, StudySettings, cell_settings, finished

    s = StudySettings(root=str(tmp_path), max_steps=4, image_size=32, encoder="resnet18")
    want = cell_settings(s, Cell("random_full_f1_s0", Init("random", "random"), "full", 1.0, 0), tmp_path)
    folder = tmp_path / "cell"
    folder.mkdir()
    stored = json.loads(json.dumps(__import__("dataclasses").asdict(want)))
    del stored["pretrained_lr"]
    (folder / "config.json").write_text(json.dumps({"command": "finetune", **stored, "image_size_used": 32}))
    (folder / "metrics.json").write_text(json.dumps({"mean_iou": 0.5, "runs": [{"steps": 4}]}))
    assert finished(folder, want)["mean_iou"] == 0.5
    (folder / "config.json").write_text(json.dumps({**stored, "lr": 0.5}))
    with pytest.raises(DollError, match=r"other settings \(lr\)"):
        finished(folder, want)
    (folder / "metrics.json").write_text(json.dumps({"mean_iou": 0.5, "runs": [{"steps": 2}]}))
    assert finished(folder, want) is None  # stopped before the end of its budget


def test_covid_tables_on_made_up_cells(tmp_path):
    """--task covid: the headline numbers (IoU on positive images, false-positive area on the
    others) get their own tables and paired differences; the report draws its figures."""
    import numpy as np

    from doll.studies import report, summary

    cells = []
    for init, gain in (("random", 0.0), ("doll", 0.05)):
        for seed in (0, 1, 2):
            per_image = np.full((10, 1), 0.4 + gain + 0.01 * seed)
            cells.append({"name": f"{init}_full_f0.1_s{seed}", "init": init, "mode": "full", "fraction": 0.1,
                          "seed": seed, "n_train": 5, "n_test": 10, "test_split": "valid", "structures": ["infection"],
                          "train_ids": [f"s{seed}"], "mean_iou": 0.4 + gain + 0.01 * seed,
                          "positives_mean_iou": 0.3 + gain, "negatives_false_positive_area": 0.02 - gain / 10,
                          "per_structure": {"infection": {"iou": 0.4 + gain}},
                          "curve": [{"step": 10, "test_iou": 0.1 + 7 * gain}, {"step": 50, "test_iou": 0.4 + gain}],
                          "_per_image": per_image})
    comps = summary.comparisons(cells, "random", 100, resamples=200)
    assert len(comps) == 1 and comps[0]["same_masks"]
    final = comps[0]["final"]
    assert final["positives_mean_iou"]["mean"] == pytest.approx(0.05)
    assert final["negatives_false_positive_area"]["mean"] == pytest.approx(-0.005)
    assert final["mean_iou"]["ci95_bootstrap"] == pytest.approx([0.05, 0.05])
    assert comps[0]["steps_to_reference_final"]["median"] == 10  # doll reaches random's final IoU at step 10 of 50
    doc = {"settings": {"task": "covid", "dataset": "covidqu", "max_steps": 100, "batch_size": 8},
           "doll_command": "doll study --task covid", "machine": "test", "date": "today", "n_cells": 6,
           "reference": "random", "inits": [{"name": "random"}, {"name": "doll"}],
           "cells": [summary.public(c) for c in cells], "groups": summary.groups(cells, 100), "comparisons": comps}
    text = report.markdown(doc)
    assert "IoU on the test images with a mask" in text and "false-positive area" in text
    assert "| full | 5 (0.1) | doll | 3 | +0.050 |" in text
    figs = report.figures(tmp_path, doc)
    assert {f for f, _ in figs} == {"mean_iou_vs_masks.png", "positives_mean_iou_vs_masks.png", "iou_vs_steps.png",
                                    "per_structure.png"}


def test_transfer_and_pretrained_lr_reach_the_cells_they_apply_to(tmp_path):
    """--transfer for the pretrain-folder inits only, --pretrained-lr for pretrained inits in mode
    full only: the other cells keep finetune's defaults (finetune refuses them there). Before
    2026-12-06 doll study had neither flag (benchmarks/label_efficiency.py refused them)."""
    from doll.studies.run import Cell, Init, StudySettings, cell_settings

    s = StudySettings(root=str(tmp_path), transfer="encoder", pretrained_lr=0.1)
    pre, rnd, img = Init("doll", str(tmp_path / "pre")), Init("random", "random"), Init("imagenet", "imagenet:/w.pt")
    got = {(i.name, mode): cell_settings(s, Cell("c", i, mode, 1.0, 0), tmp_path)
           for i in (pre, rnd, img) for mode in ("full", "adapter")}
    assert (got["doll", "full"].transfer, got["doll", "full"].pretrained_lr) == ("encoder", 0.1)
    assert (got["doll", "adapter"].transfer, got["doll", "adapter"].pretrained_lr) == ("encoder", 1.0)
    assert (got["random", "full"].transfer, got["random", "full"].pretrained_lr) == ("all", 1.0)
    assert (got["imagenet", "full"].transfer, got["imagenet", "full"].pretrained_lr) == ("all", 0.1)
