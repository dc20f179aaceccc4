"""`doll classifiers import` (issue 38): classifiers users already have (torchvision, timm,
torchxrayvision) as members of a doll classifier ensemble that `doll explain` uses unchanged.
Before issue 38 every test here failed: the command did not exist."""
from __future__ import annotations

import hashlib
import json

import h5py
import numpy as np
import pytest
import torch
import torchvision
from conftest import SIZE, assert_ig_matches_captum, cli, cli_exit

from doll.data.base import CHEXPERT_CLASSES
from doll.models.checkpoint import load_into, read_config
from doll.models.imported import UNMAPPED_LOGIT, classifier_from_config
from doll.utils import to_tensor

IMAGENET_MEAN, IMAGENET_STD = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def member_network(folder):
    """A member folder's network, as doll explain builds and loads it."""
    cfg = read_config(folder, kind="classifier")["doll"]
    model = classifier_from_config(cfg)
    load_into(model, folder)
    return model.eval(), cfg


def grey_images(n: int = 2, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, SIZE, SIZE), dtype=np.uint8)


@pytest.fixture(scope="module")
def resnet18_file(tmp_path_factory):
    """A torchvision ResNet-18 with random weights and 14 outputs, saved as a plain state dict."""
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=len(CHEXPERT_CLASSES)).eval()
    path = tmp_path_factory.mktemp("weights") / "r18.pt"
    torch.save(model.state_dict(), path)
    return path, model


def test_torchvision_imports_mixed_with_a_trained_member_are_explained(phantom, resnet18_file, tmp_path, capsys):
    path, reference = resnet18_file
    cls, labels = tmp_path / "cls", tmp_path / "labels.h5"
    cli("train-classifiers", "--dataset", "phantom", "--root", phantom, "--out", cls, "--members", 1,
        "--max-steps", 2, "--image-size", SIZE, "--batch-size", 16)
    cli("classifiers", "import", "--from", "torchvision", "--arch", "resnet18", "--weights", path, "--out", cls,
        "--image-size", SIZE)
    member = cls / "member_1"  # next to the trained member_0, which is left as it was
    cfg = json.loads((member / "config.json").read_text())["doll"]
    assert json.loads((member / "metrics.json").read_text())["finished"] is True
    assert cfg["kind"] == "classifier" and cfg["arch"] == "resnet18" and cfg["classes"] == CHEXPERT_CLASSES
    assert cfg["image_size"] == SIZE and cfg["in_channels"] == 1 and cfg["normalisation"]["std"] == 0.25
    source = cfg["source"]
    assert source["library"] == "torchvision" and source["weights_sha256"] == sha256(path)
    assert source["weights"] == str(path.resolve()) and source["in_channels"] == 3
    assert source["normalisation"]["name"] == "imagenet"
    assert source["class_map"] == {c: c for c in CHEXPERT_CLASSES}
    assert "member_1/model.safetensors" in (cls / ".doll-files").read_text()  # listed as doll's

    # the member computes what the torchvision model computes on the grey image repeated into RGB, ImageNet-normalised
    model, _ = member_network(member)
    images = grey_images()
    rgb = torch.tensor(images, dtype=torch.float32)[:, None].repeat(1, 3, 1, 1) / 255
    rgb = (rgb - IMAGENET_MEAN.view(1, 3, 1, 1)) / IMAGENET_STD.view(1, 3, 1, 1)
    with torch.no_grad():
        assert torch.allclose(model(to_tensor(images)), reference(rgb), atol=1e-4)

    # a second import (safetensors) is member_2; the same classifier again is refused, nothing written
    from safetensors.torch import save_file

    torch.manual_seed(1)
    other = tmp_path / "r18b.safetensors"
    save_file(torchvision.models.resnet18(num_classes=len(CHEXPERT_CLASSES)).state_dict(), str(other))
    cli("classifiers", "import", "--from", "torchvision", "--arch", "resnet18", "--weights", other, "--out", cls,
        "--image-size", SIZE)
    code, err = cli_exit(capsys, "classifiers", "import", "--from", "torchvision", "--arch", "resnet18",
                         "--weights", other, "--out", cls, "--image-size", SIZE)
    assert code == 2 and "member_2 already holds this classifier" in err, err
    code, err = cli_exit(capsys, "classifiers", "import", "--from", "torchvision", "--arch", "resnet18",
                         "--weights", path, "--out", cls, "--classes", "A,B")
    assert code == 2 and "explain needs one list for the whole ensemble" in err, err
    assert sorted(p.name for p in cls.glob("member_*")) == ["member_0", "member_1", "member_2"]

    cli("explain", "--classifiers", cls, "--dataset", "phantom", "--root", phantom, "--out", labels, "--steps", 2)
    with h5py.File(labels, "r") as f:
        members = json.loads(f.attrs["classifiers"])
    assert [m["folder"] for m in members] == ["member_0", "member_1", "member_2"]
    assert "source" not in members[0]  # trained by doll
    assert members[1]["source"]["weights_sha256"] == sha256(path)
    assert members[2]["source"]["weights_sha256"] == sha256(other)
    capsys.readouterr()
    cli("labels", "info", labels)
    info = json.loads(capsys.readouterr().out)
    assert info["classifiers"][1]["source"]["library"] == "torchvision"


def test_head_of_another_size_pickles_and_other_bad_input_are_refused(resnet18_file, tmp_path, capsys, monkeypatch):
    path, reference = resnet18_file
    out = tmp_path / "cls"
    args = ("classifiers", "import", "--from", "torchvision", "--arch", "resnet18", "--out", out)
    code, err = cli_exit(capsys, *args, "--weights", path, "--classes", "Cardiomegaly,Edema,Pneumothorax")
    assert code == 2 and err.count("\n") == 1, err
    assert "its resnet18 head (fc.weight) has 14 outputs but --classes names 3 classes" in err, err

    pickled = tmp_path / "r18_model.pt"
    torch.save(reference, pickled)  # the whole module, pickled: never unpickled
    code, err = cli_exit(capsys, *args, "--weights", pickled)
    assert code == 2 and "which doll never unpickles" in err, err

    code, err = cli_exit(capsys, *args, "--weights", path, "--arch", "resnet34")
    assert code == 2 and "is it a torchvision resnet34 state dict?" in err, err
    code, err = cli_exit(capsys, *args, "--weights", path, "--normalisation", "grey")
    assert code == 2 and "unknown --normalisation 'grey'" in err, err
    assert not out.exists()  # nothing written by a refused import

    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    code, err = cli_exit(capsys, *args[:-1], foreign, "--weights", path)
    assert code == 2 and "was not written by doll" in err, err
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]

    monkeypatch.setitem(__import__("sys").modules, "timm", None)  # timm not installed
    code, err = cli_exit(capsys, "classifiers", "import", "--from", "timm", "--arch", "resnet18", "--weights", path,
                         "--out", out)
    assert code == 2 and "pip install timm" in err, err


def test_timm_import_computes_what_timm_computes(tmp_path):
    timm = pytest.importorskip("timm", reason="timm is not installed (pip install timm)")
    import doll

    torch.manual_seed(0)
    net = timm.create_model("resnet10t", pretrained=False, num_classes=3).eval()
    path = tmp_path / "t.pt"
    torch.save(net.state_dict(), path)
    result = doll.import_classifier(source="timm", arch="resnet10t", weights=str(path), classes="A,B,C",
                                    out=str(tmp_path / "cls"), image_size=SIZE, progress=False)
    model, cfg = member_network(result["member"])
    mean, std = (torch.tensor(net.pretrained_cfg[k]).view(1, 3, 1, 1) for k in ("mean", "std"))
    assert cfg["source"]["normalisation"]["mean"] == pytest.approx(list(net.pretrained_cfg["mean"]))
    images = grey_images()
    rgb = torch.tensor(images, dtype=torch.float32)[:, None].repeat(1, 3, 1, 1) / 255
    with torch.no_grad():
        assert torch.allclose(model(to_tensor(images)), net((rgb - mean) / std), atol=1e-4)


# -- torchxrayvision ---------------------------------------------------------------------------------

def _xrv():
    return pytest.importorskip("torchxrayvision", reason="torchxrayvision is not installed: pip install 'doll[txv]'")


@pytest.fixture(scope="module")
def txv_densenet(tmp_path_factory):
    """torchxrayvision's DenseNet built with weights=None (nothing downloaded), random weights, with
    operating points as its released weights carry them (Lung Lesion's NaN: an output never trained)."""
    xrv = _xrv()
    torch.manual_seed(0)
    model = xrv.models.DenseNet(weights=None).eval()
    op = torch.full((len(model.targets),), 0.2)
    op[model.targets.index("Lung Lesion")] = float("nan")
    model.op_threshs = op  # a buffer: in the state dict, as in a state dict of xrv.models.DenseNet(weights=...)
    path = tmp_path_factory.mktemp("txv") / "densenet.pt"
    torch.save(model.state_dict(), path)
    model.op_threshs = None  # logits out, for the comparisons
    return path, model


def test_txv_densenet_imported_mapped_and_explained(phantom, txv_densenet, tmp_path, capsys):
    path, reference = txv_densenet
    cls, labels = tmp_path / "cls", tmp_path / "labels.h5"
    capsys.readouterr()
    cli("classifiers", "import", "--from", "txv", "--arch", "densenet121", "--weights", path, "--out", cls,
        "--image-size", SIZE)
    printed = capsys.readouterr().out
    assert "Pleural Effusion" in printed and "<- Effusion" in printed, printed  # the mapping, printed
    assert "ignored outputs: Infiltration, Emphysema, Fibrosis, Pleural_Thickening, Nodule, Mass, Hernia" in printed

    model, cfg = member_network(cls / "member_0")
    source = cfg["source"]
    assert cfg["classes"] == CHEXPERT_CLASSES and source["library"] == "txv" and source["in_channels"] == 1
    assert source["weights_sha256"] == sha256(path) and source["normalisation"]["name"] == "txv"
    assert source["class_map"]["Pleural Effusion"] == "Effusion" and source["class_map"]["Cardiomegaly"] == "Cardiomegaly"
    assert source["class_map"]["No Finding"] is None and source["class_map"]["Support Devices"] is None
    assert source["class_map"]["Lung Lesion"] is None and "never learnt" in source["unmapped"]["Lung Lesion"]
    logit_02 = float(np.log(0.2 / 0.8))
    assert source["logit_shift"]["Edema"] == pytest.approx(-logit_02)

    # the member is txv's model on txv's input convention ([-1024, 1024]), its outputs picked and shifted
    images = grey_images()
    x_txv = (torch.tensor(images, dtype=torch.float32)[:, None] / 255 * 2 - 1) * 1024
    with torch.no_grad():
        ours, theirs = model(to_tensor(images)), reference(x_txv)
    for k, c in enumerate(CHEXPERT_CLASSES):
        output = source["class_map"][c]
        expected = theirs[:, reference.targets.index(output)] - logit_02 if output else torch.full((2,), UNMAPPED_LOGIT)
        assert torch.allclose(ours[:, k], expected, atol=1e-3), c

    # IG of the imported model equals Captum's (the equality test of test_explain.py)
    mapped = [CHEXPERT_CLASSES.index(c) for c in ("Cardiomegaly", "Pleural Effusion", "Edema")]
    assert_ig_matches_captum(model, to_tensor(images), [mapped, mapped[:1]])

    cli("explain", "--classifiers", cls, "--dataset", "phantom", "--root", phantom, "--out", labels, "--steps", 2,
        "--classes", ",".join(c for c in CHEXPERT_CLASSES if source["class_map"][c]))
    capsys.readouterr()
    cli("labels", "info", labels)
    info = json.loads(capsys.readouterr().out)
    member = info["classifiers"][0]
    assert member["source"]["class_map"]["Pleural Effusion"] == "Effusion"
    assert member["source"]["weights_sha256"] == sha256(path) and member["source"]["library"] == "txv"


def test_txv_pickled_file_from_its_cache_is_refused_with_the_fix(txv_densenet, tmp_path, capsys, monkeypatch):
    xrv = _xrv()
    import os

    monkeypatch.setattr(xrv.utils, "get_cache_dir", lambda: str(tmp_path / "cache"))
    args = ("classifiers", "import", "--from", "txv", "--arch", "densenet121", "--out", tmp_path / "cls")
    code, err = cli_exit(capsys, *args, "--weights", "densenet121-res224-chex")
    assert code == 2 and "are not in its cache" in err and "doll never downloads" in err, err

    (tmp_path / "cache").mkdir()
    name = os.path.basename(xrv.models.model_urls["densenet121-res224-chex"]["weights_url"])
    torch.save(txv_densenet[1], tmp_path / "cache" / name)  # as torchxrayvision distributes it: a pickled module
    code, err = cli_exit(capsys, *args, "--weights", "densenet121-res224-chex")
    assert code == 2 and err.count("\n") == 1 and "never unpickles" in err, err
    assert 'm = xrv.models.DenseNet(weights="densenet121-res224-chex")' in err, err
    assert 'torch.save(m.state_dict(), "densenet121-res224-chex.pt")' in err, err
    code, err = cli_exit(capsys, *args, "--weights", tmp_path / "cache" / name)  # the file itself: named the same
    assert code == 2 and 'weights="densenet121-res224-chex"' in err, err
    assert not (tmp_path / "cls").exists()
