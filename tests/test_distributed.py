"""torchrun with 2 processes (gloo on CPU): training and explaining, checked against one process."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import SIZE


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def torchrun(*args, nproc=2):
    doll = shutil.which("doll") or str(Path(sys.executable).with_name("doll"))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--master_port", str(free_port()),
           doll, *map(str, args), "--quiet", "--device", "cpu"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.mark.slow
def test_two_process_training_and_explaining(pipeline, tmp_path):
    # training: both processes train one model on their halves of each epoch; rank 0 writes
    out = tmp_path / "cls2"
    torchrun("train-classifiers", "--dataset", "phantom", "--root", pipeline["phantom"], "--out", out,
             "--members", 1, "--epochs", 2, "--image-size", SIZE, "--batch-size", 8)
    m2 = json.loads((out / "metrics.json").read_text())
    history = m2["members"][0]["history"]  # evaluated about ten times over the two epochs' steps
    assert len(m2["members"]) == 1 and history[-1]["epoch"] == 2
    assert 0 <= m2["mean_auroc"] <= 1
    one = json.loads((pipeline["classifiers"] / "metrics.json").read_text())
    assert m2["n_train"] == one["n_train"] and m2["n_valid"] == one["n_valid"]  # same data, all ranks' outputs gathered
    # pretraining a PSPNet: smp keeps encoder stages it never runs; DDP must not wait for their gradients
    pre = tmp_path / "pre2"
    torchrun("pretrain", "--labels", pipeline["labels"], "--out", pre, "--encoder", "resnet18", "--epochs", 1,
             "--batch-size", 4)
    assert json.loads((pre / "metrics.json").read_text())["history"][-1]["epoch"] == 1
    # explaining: the shards of 2 processes join into the same file as 1 process makes
    ref = tmp_path / "one.h5"
    from doll.explanation.run import explain

    explain(classifiers=str(pipeline["classifiers"]), dataset="phantom", root=str(pipeline["phantom"]),
            out=str(ref), steps=4, block=8, device="cpu", progress=False)
    two = tmp_path / "two.h5"
    torchrun("explain", "--classifiers", pipeline["classifiers"], "--dataset", "phantom", "--root",
             pipeline["phantom"], "--out", two, "--steps", 4, "--block", 8)
    with h5py.File(ref, "r") as a, h5py.File(two, "r") as b:
        for key in ("saliency", "targets", "probs", "images", "done"):
            assert np.array_equal(a[key][:], b[key][:]), key
