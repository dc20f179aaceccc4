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
from conftest import Points, ShrinkTask

from doll.errors import DollError
from doll.models.checkpoint import load_train_state, read_config

TRAIN = """
import sys
from doll.classification.train import train_classifiers
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
    before = load_train_state(last)["state"]["history"]  # the epochs finished before the kill
    resumed = _train(phantom, tmp_path / "cut", resume=True, env=env)
    assert resumed.wait() == 0, resumed.stderr.read().decode()
    a = json.loads((tmp_path / "ref" / "member_0" / "metrics.json").read_text())
    b = json.loads((tmp_path / "cut" / "member_0" / "metrics.json").read_text())
    assert b["finished"] and [r["step"] for r in b["history"]] == [r["step"] for r in a["history"]] == [2, 4, 6, 8, 10, 12]
    assert len(before) >= 2 and b["history"][:len(before)] == before  # kept (wall times too), not trained again
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
    with pytest.raises(DollError, match=r"is a classifier folder \(from doll train-classifiers\), not a segmenter"):
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
    from doll.classification.train import member_hides

    assert member_hides(0.5, 3) == [0.5, 0.5, 0.5]
    assert member_hides("0,0.5", 4) == [0.0, 0.5, 0.0, 0.5]
    assert member_hides("0", 2) == [0.0, 0.0]
    for bad in ("", "1", "0,-0.1"):
        with pytest.raises(DollError, match="--hide"):
            member_hides(bad, 2)


class _Task(ShrinkTask):
    """Shrink a linear map's outputs; its validation score is undefined (like AUROC without positives)."""

    def metrics(self, outputs):
        return {"auroc": float("nan")}


def _fit(out, resume=False, **settings):
    from doll.train.engine import Engine, EngineSettings

    torch.manual_seed(0)
    es = EngineSettings(**{"epochs": 4, "batch_size": 2, "device": "cpu", "progress": False, **settings})
    engine = Engine(torch.nn.Linear(16, 2), _Task(), es, out, {"kind": "classifier"})
    return engine.fit(Points(6), Points(6), resume=resume)


def test_schedule_counts_the_last_partial_accumulation_group(tmp_path):
    # 3 batches per epoch with --accumulate 2: 2 optimiser steps per epoch, not 1, so the cosine
    # schedule reaches 0 only at the very end (it used to reach it after epoch 2 of 4)
    lrs = [r["lr"] for r in _fit(tmp_path / "acc", accumulate=2)["history"]]
    assert all(lr > 0 for lr in lrs[:-1]) and lrs == sorted(lrs, reverse=True), lrs


def test_undefined_monitor_keeps_the_latest_epoch_and_never_stops_early(tmp_path):
    m = _fit(tmp_path / "nan", epochs=3, monitor="val_auroc", monitor_mode="max", patience=1)
    assert m["epochs_run"] == 3 and m["best_epoch"] == 3 and m["best"]["epoch"] == 3


def test_resume_of_a_finished_run_whose_metrics_the_stage_replaced(tmp_path):
    from doll.utils import write_json

    first = _fit(tmp_path / "run", epochs=2)
    write_json(tmp_path / "run" / "metrics.json", {"command": "pretrain", "finished": True})  # as pretrain does
    again = _fit(tmp_path / "run", epochs=2, resume=True)
    assert again["best_epoch"] == first["best_epoch"] == 2
    assert [r["train_loss"] for r in again["history"]] == [r["train_loss"] for r in first["history"]]


def test_pspnet_weights_that_never_run_are_frozen():
    from doll.models.segmenter import build_segmenter

    for encoder in ("resnet18", "densenet121"):
        model = build_segmenter("pspnet", encoder, 3, aux=True)
        masks, labels = model(torch.randn(2, 1, 32, 32))
        (masks.sum() + labels.sum()).backward()
        trainable = [n for n, p in model.named_parameters() if p.requires_grad]
        assert trainable and all(p.grad is not None for p in model.parameters() if p.requires_grad)
        frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
        assert frozen and all(".layer4." in n or "denseblock4" in n or ".layer3." in n or "denseblock3" in n
                              or "transition" in n or "norm5" in n for n in frozen), frozen[:5]


def test_a_replaced_head_is_initialised_like_a_new_models_head():
    """Fine-tuning from DoLL init swaps the head: it must start as smp starts a new model's
    head (Xavier weights, zero bias), or DoLL init starts handicapped against random init."""
    from doll.models.segmenter import build_segmenter, replace_head

    torch.manual_seed(0)
    new = build_segmenter("pspnet", "resnet18", 5).segmentation_head[0]
    swapped = replace_head(build_segmenter("pspnet", "resnet18", 3), 5).segmentation_head[0]
    assert swapped.weight.shape == new.weight.shape == (5, 512, 3, 3)
    assert torch.count_nonzero(swapped.bias) == torch.count_nonzero(new.bias) == 0
    fan_in, fan_out = 512 * 9, 5 * 9
    bound = (6 / (fan_in + fan_out)) ** 0.5  # Xavier-uniform; PyTorch's default would be 1 / sqrt(fan_in)
    for w in (swapped.weight, new.weight):
        assert 0.9 * bound < w.abs().max() <= bound
        assert abs(w.std().item() - bound / 3 ** 0.5) < 0.05 * bound


def test_damaged_weights_are_a_clear_error(tmp_path):
    from doll.models.checkpoint import load_into, save_model
    from doll.models.segmenter import build_segmenter
    from doll.finetuning.settings import load_imagenet_encoder

    model = build_segmenter("pspnet", "resnet18", 2)
    save_model(tmp_path / "ck", model, {"kind": "segmenter"})
    weights = tmp_path / "ck" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])  # an interrupted copy
    with pytest.raises(DollError, match="model.safetensors is corrupt or truncated"):
        load_into(model, tmp_path / "ck")
    with pytest.raises(DollError, match="corrupt or truncated"):
        load_imagenet_encoder(model, str(weights))
    torch.save(torch.zeros(3), tmp_path / "tensor.pt")
    with pytest.raises(DollError, match="holds a Tensor, not a state dict"):
        load_imagenet_encoder(model, str(tmp_path / "tensor.pt"))


def test_seg4cls_and_mixed_pass_accumulate_to_the_engine():
    from doll.finetuning.settings import FinetuneSettings, engine_settings

    assert engine_settings(FinetuneSettings(task="seg4cls", root="data", accumulate=4), 8).accumulate == 4


def test_under_torchrun_cuda_means_this_ranks_gpu_on_every_call(monkeypatch):
    from doll.train import distributed as dist

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(dist.dist, "is_initialized", lambda: True)  # the stage already joined the group
    assert dist.init(torch.device("cuda", 0)) == torch.device("cuda", 1)  # the engine's call, --device cuda:0
    assert dist.init(torch.device("cuda")) == torch.device("cuda", 1)
    assert dist.init(torch.device("cpu")) == torch.device("cpu")


def test_data_loader_workers_do_not_change_training(tmp_path):
    """--num-workers only moves augmentation into other processes: each draw depends on
    (seed, epoch, index), so the epochs' losses and the final weights are the same."""
    import numpy as np

    from doll.data.dataset import ArrayDataset
    from doll.train.engine import Engine, EngineSettings

    images = np.random.default_rng(0).integers(0, 256, (12, 16, 16), dtype=np.uint8)
    runs = {}
    for workers in (0, 2):
        torch.manual_seed(0)
        model = torch.nn.Linear(256, 2)
        es = EngineSettings(epochs=2, batch_size=4, device="cpu", progress=False, num_workers=workers, monitor="epoch")
        m = Engine(model, _Task(), es, tmp_path / f"w{workers}", {"kind": "classifier"}).fit(
            ArrayDataset(images, augment=True, seed=3), None)
        runs[workers] = ([r["train_loss"] for r in m["history"]], model.weight.detach().clone())
    assert runs[0][0] == runs[2][0] and torch.equal(runs[0][1], runs[2][1])


@pytest.mark.parametrize("arch", ["resnet18", "densenet121"])
def test_classifier_from_torchvision_weights(tmp_path, arch):
    import re

    import torchvision

    from doll.models.classifier import HEADS, build_classifier, load_pretrained

    torch.manual_seed(1)
    ref = torchvision.models.get_model(arch, weights=None).state_dict()  # 3 channels, 1000 classes, as shipped
    state = dict(ref)
    if arch == "densenet121":  # the key names of torchvision's original DenseNet files
        state = {re.sub(r"(denselayer\d+\.(?:norm|conv))([12])\.", r"\1.\2.", k): v for k, v in ref.items()}
        assert sum(".norm.1." in k for k in state) > 50
    torch.save({"state_dict": state}, tmp_path / "w.pth")
    model = build_classifier(arch, 3)
    n = load_pretrained(model, arch, str(tmp_path / "w.pth"))
    mine = model.state_dict()
    first = next(k for k, v in ref.items() if v.ndim == 4)
    assert torch.equal(mine[first], ref[first].sum(1, keepdim=True))  # RGB kernels summed for one channel
    body = [k for k in ref if not k.startswith(HEADS) and k != first and not k.endswith("num_batches_tracked")]
    assert n == len(body) + 1
    assert all(torch.equal(mine[k], ref[k]) for k in body)
    head = next(k for k in mine if k.startswith(HEADS) and k.endswith("weight"))
    assert mine[head].shape[0] == 3  # a new head for our classes
    other = "resnet34" if arch == "resnet18" else "resnet18"
    with pytest.raises(DollError, match=f"is it a torchvision {other} checkpoint"):
        load_pretrained(build_classifier(other, 3), other, str(tmp_path / "w.pth"))


def test_train_classifiers_init_per_member(phantom, tmp_path):
    import torchvision

    from doll.classification.train import train_classifiers

    torch.save(torchvision.models.resnet18().state_dict(), tmp_path / "r18.pth")
    out = tmp_path / "cls"
    m = train_classifiers(dataset="phantom", root=str(phantom), out=str(out), members=2, epochs=1, image_size=32,
                          batch_size=16, init=f"imagenet:{tmp_path / 'r18.pth'},random", device="cpu", progress=False)
    assert [x["init"] for x in m["members"]] == [f"imagenet:{tmp_path / 'r18.pth'}", "random"]
    assert read_config(out / "member_0")["doll"]["init"].endswith("r18.pth")
