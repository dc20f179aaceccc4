"""The training engine: kill -9 and resume ends where an uninterrupted run ends; safe loading."""
from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from doll.errors import DollError
from doll.models.checkpoint import load_train_state, read_config

TRAIN = """
import sys
from doll.classify.train import train_classifiers
train_classifiers(dataset="phantom", root=sys.argv[1], out=sys.argv[2], members=1, epochs=4, image_size=32,
                  batch_size=16, device="cpu", progress=False, resume=len(sys.argv) > 3)
"""


def _train(phantom, out, resume=False, env=None):
    return subprocess.Popen([sys.executable, "-c", TRAIN, str(phantom), str(out)] + (["resume"] if resume else []),
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def test_kill9_then_resume_matches_uninterrupted_run(phantom, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ref = _train(phantom, tmp_path / "ref", env=env)
    assert ref.wait() == 0, ref.stderr.read().decode()
    killed = _train(phantom, tmp_path / "cut", env=env)
    last = tmp_path / "cut" / "member_0" / "last.pt"
    deadline = time.time() + 120
    while time.time() < deadline:
        if last.exists() and load_train_state(last)["state"]["epoch"] >= 2:
            break
        time.sleep(0.05)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert not json.loads((tmp_path / "cut" / "member_0" / "metrics.json").read_text())["finished"]
    resumed = _train(phantom, tmp_path / "cut", resume=True, env=env)
    assert resumed.wait() == 0, resumed.stderr.read().decode()
    a = json.loads((tmp_path / "ref" / "member_0" / "metrics.json").read_text())
    b = json.loads((tmp_path / "cut" / "member_0" / "metrics.json").read_text())
    assert b["finished"] and len(b["history"]) == 4
    for ra, rb in zip(a["history"], b["history"]):
        assert ra["train_loss"] == pytest.approx(rb["train_loss"], abs=1e-6)
        assert ra["val_auroc"] == pytest.approx(rb["val_auroc"], abs=1e-6)
    read_config(tmp_path / "cut" / "member_0", kind="classifier")  # the finished checkpoint loads


class Payload:
    def __reduce__(self):
        return (os.system, (f"touch {os.environ['DOLL_PWNED']}",))


def test_pickle_checkpoints_are_refused_and_never_run(tmp_path, monkeypatch):
    flag = tmp_path / "pwned"
    monkeypatch.setenv("DOLL_PWNED", str(flag))
    folder = tmp_path / "ck"
    folder.mkdir()
    (folder / "model.pt").write_bytes(pickle.dumps(Payload()))
    with pytest.raises(DollError, match="never unpickles"):
        read_config(folder)
    torch.save({"x": Payload()}, folder / "last.pt")
    with pytest.raises(DollError, match="refusing"):
        load_train_state(folder / "last.pt")
    assert not flag.exists()


def test_checkpoint_of_wrong_kind_is_refused(pipeline):
    with pytest.raises(DollError, match="'segmenter'"):
        read_config(Path(pipeline["classifiers"]) / "member_0", kind="segmenter")


def test_hide_and_seek_blacks_out_whole_grid_cells_and_nothing_else():
    import numpy as np

    from doll.data.dataset import HIDE_GRID, MEAN, STD, ArrayDataset

    BLACK = (0 - MEAN) / STD  # a black pixel, normalised

    rng = np.random.default_rng(0)
    images = rng.integers(1, 256, size=(40, 32, 32), dtype=np.uint8)
    y, w = np.ones((40, 2), np.float32), np.ones((40, 2), np.float32)
    plain = ArrayDataset(images, y, w, augment=True, seed=3)
    hidden = ArrayDataset(images, y, w, augment=True, seed=3, hide=0.5)
    cell = 32 // HIDE_GRID
    fractions = []
    for i in range(len(images)):
        a, b = plain[i]["image"][0].numpy(), hidden[i]["image"][0].numpy()
        changed = ~np.isclose(a, b)
        assert np.allclose(b[changed], BLACK)  # hidden pixels are black ...
        cells = changed.reshape(HIDE_GRID, cell, HIDE_GRID, cell).any(axis=(1, 3))
        blacked = np.isclose(b, BLACK).reshape(HIDE_GRID, cell, HIDE_GRID, cell).all(axis=(1, 3))
        assert (blacked | ~cells).all()  # ... in whole cells, and every other pixel is as without hiding
        fractions.append(blacked.mean())
        assert np.allclose(hidden[i]["image"].numpy(), b)  # the same draw every time (resume-safe)
    assert 0.4 < np.mean(fractions) < 0.6
    hidden.set_epoch(1)
    assert not np.allclose(hidden[0]["image"].numpy(), ArrayDataset(images, y, w, augment=True, seed=3, hide=0.5)[0]["image"].numpy())
    with pytest.raises(ValueError, match="image labels only"):
        ArrayDataset(images, masks=np.zeros((40, 1, 32, 32), np.float32), augment=True, hide=0.5)


def test_hide_values_are_cycled_over_the_members_like_archs():
    from doll.classify.train import member_hides

    assert member_hides(0.5, 3) == [0.5, 0.5, 0.5]
    assert member_hides("0,0.5", 4) == [0.0, 0.5, 0.0, 0.5]
    assert member_hides("0", 2) == [0.0, 0.0]
    for bad in ("", "1", "0,-0.1"):
        with pytest.raises(DollError, match="--hide"):
            member_hides(bad, 2)
