"""Training budgets in optimiser steps: the same steps at every label fraction, --epochs and
--max-steps agreeing, evaluation that never changes the training, and resume in the middle
of a budget (mid-epoch) that ends where an uninterrupted run ends."""
from __future__ import annotations

import json

import pytest
import torch
from conftest import SIZE, Points, ShrinkTask, cli

from doll.models.checkpoint import load_state


class _Task(ShrinkTask):
    """A dropout network shrinking its outputs: training draws from the random stream every step."""

    def metrics(self, outputs):
        return {"size": float(abs(outputs["y"]).mean())}


def _net():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.Dropout(0.5), torch.nn.Linear(32, 2))


def _fit(out, resume=False, **settings):
    from doll.train.engine import Engine, EngineSettings

    es = EngineSettings(**{"batch_size": 4, "device": "cpu", "progress": False, "monitor": "step",
                           "monitor_mode": "max", **settings})
    engine = Engine(_net(), _Task(), es, out, {"kind": "classifier"})
    return engine.fit(Points(), Points(8), resume=resume), engine


def _weights(engine):
    return {k: v.clone() for k, v in engine.model.state_dict().items()}


def test_epochs_and_max_steps_describe_one_budget(tmp_path):
    a, ea = _fit(tmp_path / "epochs", epochs=3)  # 16 images / batch 4: 4 steps an epoch
    b, eb = _fit(tmp_path / "steps", max_steps=12)
    assert a["steps"] == b["steps"] == a["max_steps"] == 12
    assert [r["step"] for r in a["history"]] == [r["step"] for r in b["history"]]
    assert [r["train_loss"] for r in a["history"]] == [r["train_loss"] for r in b["history"]]
    for k, v in _weights(ea).items():
        assert torch.equal(v, _weights(eb)[k]), k


def test_evaluating_more_often_does_not_change_the_training(tmp_path):
    _, rare = _fit(tmp_path / "rare", max_steps=10, val_every=10)
    m, often = _fit(tmp_path / "often", max_steps=10, val_every=1)
    assert [r["step"] for r in m["history"]] == list(range(1, 11))
    for k, v in _weights(rare).items():
        assert torch.equal(v, _weights(often)[k]), k


def test_default_cadence_is_about_ten_evaluations_and_the_last_step(tmp_path):
    m, _ = _fit(tmp_path / "d", max_steps=25)
    assert [r["step"] for r in m["history"]] == [3, 6, 9, 12, 15, 18, 21, 24, 25]
    assert m["images_seen"] == 25 * 4 and m["finished"] and m["train_seconds"] >= 0 and m["eval_seconds"] >= 0


def test_resume_in_the_middle_of_an_epoch_continues_identically(tmp_path, monkeypatch):
    from doll.train import engine as eng

    ref, e_ref = _fit(tmp_path / "ref", max_steps=14, val_every=3)  # checkpoints at steps 3, 6, ...: mid-epoch
    calls = {"n": 0}
    real = eng.Engine._evaluate

    def stop_after_two(self, *a, **k):
        result = real(self, *a, **k)
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt  # as if killed right after the step-6 checkpoint
        return result

    monkeypatch.setattr(eng.Engine, "_evaluate", stop_after_two)
    with pytest.raises(KeyboardInterrupt):
        _fit(tmp_path / "cut", max_steps=14, val_every=3)
    monkeypatch.setattr(eng.Engine, "_evaluate", real)
    cut = tmp_path / "cut"
    assert not json.loads((cut / "metrics.json").read_text())["finished"]
    assert not (cut / "model.safetensors").exists()  # a killed run leaves no weights under the final name
    resumed, e_res = _fit(cut, resume=True, max_steps=14, val_every=3)
    assert resumed["finished"] and resumed["steps"] == 14
    assert [r["train_loss"] for r in resumed["history"]] == [r["train_loss"] for r in ref["history"]]
    for k, v in _weights(e_ref).items():
        assert torch.equal(v, _weights(e_res)[k]), k
    saved, expected = load_state(cut), load_state(tmp_path / "ref")
    assert all(torch.equal(saved[k], expected[k]) for k in expected)


def test_a_step_budget_gives_every_label_fraction_the_same_steps(phantom, tmp_path):
    steps = {}
    for frac in (0.05, 0.5):
        out = tmp_path / f"f{frac}"
        cli("finetune", "--task", "jsrt", "--dataset", "jsrt", "--root", phantom / "anatomy", "--init", "random",
            "--encoder", "resnet18", "--image-size", SIZE, "--max-steps", 4, "--val-every", 2,
            "--label-fraction", frac, "--batch-size", 4, "--out", out)
        m = json.loads((out / "metrics.json").read_text())
        run = m["runs"][0]
        steps[frac] = (m["steps"], [c["step"] for c in run["curve"]])
        assert len(run["per_image_iou"]) == m["n_test"]
        assert run["images_seen"] == 4 * min(4, m["n_train"]) and run["train_seconds"] > 0
    assert steps[0.05] == steps[0.5] == (4, [2, 4])
