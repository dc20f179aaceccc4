"""The JSON files doll reads back from a run folder go through doll/schema.py: a run's
metrics.json (``--resume`` of a fit, a study's cells, an earlier ``evaluate-labels --out``)
and its config.json (``--resume``, a study's cells). A damaged or tampered one is one
``error: <file>: <field> is <found>; expected ..., <fix>`` line and exit code 2 through the
CLI: never a traceback, never a run resumed, re-run or reported from garbage."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from conftest import SIZE, cli
from test_schema import one_error, save_labels

NOT_JSON = "the content is not JSON"


def _finetune_args(phantom: Path, out: Path) -> list:
    return ["finetune", "--task", "jsrt", "--dataset", "jsrt", "--root", phantom / "anatomy", "--init", "random",
            "--max-steps", 1, "--image-size", SIZE, "--encoder", "resnet18", "--device", "cpu", "--out", out]


def _study_args(phantom: Path, out: Path) -> list:
    return ["study", "--task", "jsrt", "--dataset", "jsrt", "--root", phantom / "anatomy", "--inits", "random",
            "--fractions", 1, "--seeds", 1, "--modes", "full", "--max-steps", 1, "--image-size", SIZE,
            "--encoder", "resnet18", "--device", "cpu", "--bootstrap", 10, "--out", out]


def _copy_run(src: Path, dst: Path) -> Path:
    """A copy of a run folder whose weights and states are hard links (the tests replace, never
    edit in place, the JSON files they tamper)."""
    def copy(a, b):
        return os.link(a, b) if a.endswith((".pt", ".safetensors")) else shutil.copy2(a, b)
    shutil.copytree(src, dst, copy_function=copy)
    return dst


def _tamper(path: Path, edit) -> None:
    """Replace ``path`` with ``edit(its JSON)`` (a string is written as it is)."""
    doc = edit(json.loads(path.read_text()))
    path.unlink()
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))


def _set(key, value):
    return lambda doc: {**doc, key: value}


@pytest.fixture(scope="module")
def finetuned(phantom, tmp_path_factory) -> Path:
    """One finished `doll finetune` run (one step): out/config.json, out/model/metrics.json
    (the engine's, "finished": true) and out/model/last.pt."""
    out = tmp_path_factory.mktemp("run_json") / "ft"
    cli(*_finetune_args(phantom, out))
    return out


@pytest.fixture(scope="module")
def studied(phantom, tmp_path_factory) -> Path:
    """One finished `doll study` of one cell (one step)."""
    out = tmp_path_factory.mktemp("run_json") / "study"
    cli(*_study_args(phantom, out))
    return out


# --resume of a fit: the engine reads its metrics.json ("finished") and, without last.pt, returns it
ENGINE_EDITS = {
    "not JSON": (lambda doc: "finished: yes", NOT_JSON),
    "a JSON list": (lambda doc: [doc], "the content is [{"),
    "finished text": (_set("finished", "yes"), "finished is 'yes'; expected true or false"),
    "steps text": (_set("steps", "1"), "steps is '1'; expected a step count"),
}


@pytest.mark.parametrize("edit", ENGINE_EDITS)
def test_tampered_engine_metrics_on_resume(finetuned, phantom, tmp_path, capsys, edit):
    out = _copy_run(finetuned, tmp_path / "ft")
    change, fragment = ENGINE_EDITS[edit]
    _tamper(out / "model" / "metrics.json", change)
    one_error(capsys, [f"{out / 'model' / 'metrics.json'}: {fragment}", "--resume"],
              *_finetune_args(phantom, out), "--resume")


def test_tampered_metrics_of_a_finished_fit_without_last_state(finetuned, phantom, tmp_path, capsys):
    """A finished fit without last.pt returns its metrics.json as the fit's result: checked
    first (the history the stage turns into its curve)."""
    out = _copy_run(finetuned, tmp_path / "ft")
    (out / "model" / "last.pt").unlink()
    _tamper(out / "model" / "metrics.json", _set("history", ["step 1"]))
    one_error(capsys, [f"{out / 'model' / 'metrics.json'}: history[0] is 'step 1'; expected a list of objects"],
              *_finetune_args(phantom, out), "--resume")


# --resume compares the settings with the run's config.json (doll.utils.prepare_out_dir)
CONFIG_EDITS = {
    "not JSON": (lambda doc: "{'command': 'finetune'}", NOT_JSON),
    "a JSON list": (lambda doc: [doc], "the content is [{"),
    "doll a number": (lambda doc: {"doll": 3}, "doll is 3; expected an object"),
    "doll.run a list": (lambda doc: {"doll": {"run": [doc]}}, "doll.run is [{"),
}


@pytest.mark.parametrize("edit", CONFIG_EDITS)
def test_tampered_run_config_on_resume(finetuned, phantom, tmp_path, capsys, edit):
    out = _copy_run(finetuned, tmp_path / "ft")
    change, fragment = CONFIG_EDITS[edit]
    _tamper(out / "config.json", change)
    one_error(capsys, [f"{out / 'config.json'}: {fragment}", "--overwrite"], *_finetune_args(phantom, out), "--resume")


# a study's cell: its metrics.json (finished? the numbers the study aggregates) and config.json (same settings?)
CELL_EDITS = {
    "metrics not JSON": ("metrics.json", lambda doc: "", NOT_JSON),
    "metrics a JSON list": ("metrics.json", lambda doc: [doc], "the content is [{"),
    "steps text": ("metrics.json", lambda doc: {**doc, "runs": [{**doc["runs"][0], "steps": "many"}]},
                   "runs[0].steps is 'many'; expected a step count"),
    "mean IoU text": ("metrics.json", _set("mean_iou", "high"), "mean_iou is 'high'; expected a finite number"),
    "curve step text": ("metrics.json", lambda doc: {**doc, "runs": [{**doc["runs"][0], "curve": [{"step": "1"}]}]},
                        "runs[0].curve[0].step is '1'"),
    "config not JSON": ("config.json", lambda doc: "{", NOT_JSON),
    "config a JSON list": ("config.json", lambda doc: [doc], "the content is [{"),
}


@pytest.mark.parametrize("edit", CELL_EDITS)
def test_tampered_study_cell(studied, phantom, tmp_path, capsys, edit):
    out = _copy_run(studied, tmp_path / "study")
    name, change, fragment = CELL_EDITS[edit]
    cell = next((out / "cells").iterdir())
    _tamper(cell / name, change)
    tampered = (cell / name).read_bytes()
    line = one_error(capsys, [f"{cell / name}: {fragment}", "--resume"], *_study_args(phantom, out), "--resume")
    assert (f"delete {cell} and" in line) == (name == "config.json"), line
    assert (cell / name).read_bytes() == tampered  # the cell was not run again over it


# evaluate-labels --out: an existing metrics file is replaced only when it is an earlier evaluation
EVALUATION_EDITS = {
    "not JSON": ("nan nan", NOT_JSON),
    "a JSON list": ("[1, 2]", "the content is [1, 2]"),
    "command a number": ('{"command": 5}', "command is 5; expected the command that wrote it (text)"),
}


@pytest.mark.parametrize("edit", EVALUATION_EDITS)
def test_tampered_earlier_evaluation(tmp_path, capsys, edit):
    text, fragment = EVALUATION_EDITS[edit]
    target = tmp_path / "evaluation.json"
    target.write_text(text)
    one_error(capsys, [f"{target}: {fragment}", "choose another --out"], "evaluate-labels",
              "--labels", save_labels(tmp_path / "labels.h5"), "--out", target)
    assert target.read_text() == text


def test_valid_files_still_resume(finetuned, studied, phantom, tmp_path):
    """Untouched files pass: a finished run and a finished study resume without training again."""
    out = _copy_run(finetuned, tmp_path / "ft")
    cli(*_finetune_args(phantom, out), "--resume")
    assert json.loads((out / "metrics.json").read_text())["runs"][0]["steps"] == 1
    study = _copy_run(studied, tmp_path / "study")
    cli(*_study_args(phantom, study), "--resume")
    assert json.loads((study / "study.json").read_text())["n_trained_now"] == 0
