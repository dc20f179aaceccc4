"""`--seed`'s promise: the same seed gives the same result on the same machine, for every
stage, also when an earlier call in the same process has used the random generators."""
from __future__ import annotations

import json

import h5py
import numpy as np
import torch
from conftest import SIZE

from doll.models.checkpoint import load_state


def twice(fn, tmp_path, **kwargs):
    """Run a stage twice into two folders, drawing random numbers in between."""
    outs = []
    for i in range(2):
        torch.rand(7)
        np.random.rand(3)
        out = tmp_path / f"run{i}"
        fn(out=str(out), progress=False, device="cpu", **kwargs)
        outs.append(out)
    return outs


def same_weights(a, b):
    wa, wb = load_state(a), load_state(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


def history(folder):
    return [{k: v for k, v in h.items() if k != "seconds"}
            for h in json.loads((folder / "metrics.json").read_text())["history"]]


def test_pretrain_same_seed_same_weights(pipeline, tmp_path):
    from doll.pretraining.train import pretrain

    a, b = twice(pretrain, tmp_path, labels=str(pipeline["labels"]), encoder="resnet18", epochs=1, batch_size=8)
    same_weights(a, b)
    assert history(a) == history(b)


def test_train_classifiers_and_explain_same_seed_same_output(phantom, tmp_path):
    from doll.classification.train import train_classifiers
    from doll.explanation.run import explain

    a, b = twice(train_classifiers, tmp_path, dataset="phantom", root=str(phantom), members=1, epochs=1,
                 image_size=SIZE, batch_size=16)
    same_weights(a / "member_0", b / "member_0")
    la, lb = tmp_path / "a.h5", tmp_path / "b.h5"
    for folder, out in ((a, la), (a, lb)):
        torch.rand(5)
        explain(classifiers=str(folder), dataset="phantom", root=str(phantom), out=str(out), steps=4,
                method="ig-smooth", device="cpu", progress=False)  # ig-smooth draws noise
    with h5py.File(la, "r") as fa, h5py.File(lb, "r") as fb:
        for key in ("saliency", "targets", "probs"):
            assert np.array_equal(fa[key][:], fb[key][:]), key


def test_finetune_same_seed_same_weights(pipeline, tmp_path):
    from doll.finetuning.run import finetune

    a, b = twice(finetune, tmp_path, task="jsrt", dataset="jsrt", root=str(pipeline["phantom"] / "anatomy"),
                 init=str(pipeline["pretrain"]), label_fraction=0.5, epochs=1, batch_size=4)
    files = sorted(p.parent.relative_to(a) for p in a.rglob("model.safetensors"))
    assert files
    for rel in files:
        same_weights(a / rel, b / rel)
