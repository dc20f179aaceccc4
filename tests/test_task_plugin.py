"""A fine-tuning task of one's own through ``--task package.module:ClassName`` (issue 35): one
file with a ``TaskRunner`` subclass, no change to doll. Fails before the stage template: there
``--task`` took only the five built-in names ("unknown --task")."""
from __future__ import annotations

import json
import textwrap

import pytest

from conftest import SIZE, cli_exit

HEART_TASK = '''
from doll.finetuning.segment import Segment


class Heart(Segment):
    """The heart alone, from the JSRT masks: one hook overridden."""

    default_steps = 3  # the task's own budget when neither --epochs nor --max-steps is given

    def structures(self, task, available):
        return [("heart", ["heart"])]
'''


@pytest.fixture
def heart_task(tmp_path, monkeypatch):
    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / "heart_task.py").write_text(textwrap.dedent(HEART_TASK))
    monkeypatch.syspath_prepend(str(tmp_path / "plugins"))
    return "heart_task:Heart"


def test_a_task_of_ones_own_runs_through_the_stage_template(phantom, heart_task, tmp_path, capsys):
    out = tmp_path / "heart"
    code, err = cli_exit(capsys, "finetune", "--task", heart_task, "--dataset", "jsrt", "--root",
                         phantom / "anatomy", "--encoder", "resnet18", "--image-size", SIZE, "--out", out,
                         "--quiet")
    assert code == 0, err
    m = json.loads((out / "metrics.json").read_text())
    assert m["structures"] == ["heart"] and m["task"] == heart_task
    assert m["steps"] == 3  # the task's default budget
    assert 0 <= m["mean_iou"] <= 1 and m["headline"]["metric"] == "mean_iou"
    config = json.loads((out / "config.json").read_text())
    assert config["command"] == "finetune" and config["task"] == heart_task
    model = json.loads((out / "model" / "config.json").read_text())["doll"]
    assert model["classes"] == ["heart"] and model["decoder"] == "pspnet"


def test_a_task_of_ones_own_is_checked_like_a_built_in_one(phantom, heart_task, tmp_path, capsys):
    common = ["--dataset", "jsrt", "--root", phantom / "anatomy", "--out", tmp_path / "x", "--quiet"]
    code, err = cli_exit(capsys, "finetune", "--task", heart_task, "--summarizer", "rule", *common)
    assert code == 2 and "--summarizer applies to --task seg4cls only, not --task heart_task:Heart" in err
    code, err = cli_exit(capsys, "finetune", "--task", "heart_task:Lungs", *common)
    assert code == 2 and "module heart_task has no class of that name" in err
    code, err = cli_exit(capsys, "finetune", "--task", "doll.finetuning.options:FinetuneSettings", *common)
    assert code == 2 and "is not a subclass of doll.finetuning.tasks.TaskRunner" in err
    code, err = cli_exit(capsys, "finetune", "--task", "lungs", *common)
    assert code == 2 and "unknown --task 'lungs'" in err and "package.module:ClassName" in err
    assert not (tmp_path / "x").exists()


def test_doll_study_runs_a_segmentation_task_of_ones_own(phantom, heart_task, tmp_path, capsys):
    out = tmp_path / "study"
    code, err = cli_exit(capsys, "study", "--task", heart_task, "--dataset", "jsrt", "--root", phantom / "anatomy",
                         "--inits", "random", "--fractions", "0.5", "--seeds", 1, "--modes", "full", "--max-steps", 2,
                         "--encoder", "resnet18", "--image-size", SIZE, "--out", out, "--quiet")
    assert code == 0, err
    study = json.loads((out / "study.json").read_text())
    assert len(study["cells"]) == 1
    cell = json.loads(next((out / "cells").glob("*/metrics.json")).read_text())
    assert cell["structures"] == ["heart"] and cell["steps"] == 2
