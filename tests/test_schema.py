"""Tampered files doll reads back (issue 33, parts 3 and 5): each is one `error: <file>: <field> is
<found>; ...` line and exit code 2 through the CLI, never an internal error or silent garbage.
doll/schema.py holds the one schema every reader checks against; docs/errors.md lists the messages."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from conftest import SIZE, cli_exit

from doll.data.base import CHEXPERT_CLASSES

LABEL_CLASSES = ["Cardiomegaly", "Edema"]
LABEL_SIZE = 16


def one_error(capsys, fragments, *args) -> str:
    """`doll ARGS` exits 2 with exactly one line on stderr, `error: ...`, holding every fragment."""
    args = [*map(str, args)]
    if args[0] not in ("labels", "show"):
        args.append("--quiet")
    code, err = cli_exit(capsys, *args)
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert code == 2, err
    assert "Traceback" not in err and "internal error" not in err, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for fragment in [fragments] if isinstance(fragments, str) else fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def save_classifier(folder: Path) -> Path:
    from doll.models.checkpoint import save_model
    from doll.models.classifier import build_classifier
    from doll.utils import NORMALISATION

    torch.manual_seed(0)
    save_model(folder, build_classifier("resnet18", len(CHEXPERT_CLASSES)),
               {"kind": "classifier", "arch": "resnet18", "classes": CHEXPERT_CLASSES, "in_channels": 1,
                "image_size": SIZE, "normalisation": NORMALISATION})
    return folder


def save_segmenter(folder: Path) -> Path:
    from doll.models.checkpoint import save_model
    from doll.models.segmenter import build_segmenter, checkpoint_config, smp_config
    from doll.utils import NORMALISATION

    torch.manual_seed(0)
    model = build_segmenter("pspnet", "resnet18", len(LABEL_CLASSES))
    save_model(folder, model, checkpoint_config(model, "resnet18", LABEL_CLASSES, LABEL_SIZE, "pretrain",
                                                NORMALISATION, label_rule="otsu"), smp_config(model))
    return folder


def save_labels(path: Path, n: int = 8) -> Path:
    from doll.labels.store import write_label_file

    rng = np.random.default_rng(0)
    c, s = len(LABEL_CLASSES), LABEL_SIZE
    write_label_file(path, {"saliency": rng.integers(0, 256, (n, c, s, s), dtype=np.uint8),
                            "images": rng.integers(0, 256, (n, s, s), dtype=np.uint8),
                            "targets": np.ones((n, c), bool), "labels": np.ones((n, c), np.float32),
                            "probs": np.full((n, c), 0.5, np.float32), "done": np.ones(n, bool),
                            "paths": [f"train/patient{i:05d}/study1/view1_frontal.jpg" for i in range(n)]},
                     {"classes": LABEL_CLASSES, "method": "ig", "settings": {"steps": 2}, "label_rule": "otsu",
                      "image_size": s, "dataset": "phantom", "classifiers": [], "root": str(path.parent / "nowhere"),
                      "split": "train"})
    return path


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> dict[str, Path]:
    """A classifier and a segmenter written by doll's own save functions, and a label file."""
    root = tmp_path_factory.mktemp("schema")
    return {"classifier": save_classifier(root / "cls"), "segmenter": save_segmenter(root / "seg"),
            "labels": save_labels(root / "labels.h5")}


def copy_folder(src: Path, dst: Path) -> Path:
    """A copy whose weights are a hard link (the tests edit only config.json)."""
    dst.mkdir(parents=True)
    for p in src.iterdir():
        (os.link if p.name.endswith(".safetensors") else shutil.copy)(p, dst / p.name)
    return dst


def edit_json(path: Path, edit) -> None:
    doc = json.loads(path.read_text())
    doc = edit(doc)
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))


def _set(keys, value):
    def edit(doc):
        d = doc
        for k in keys[:-1]:
            d = d[k]
        d[keys[-1]] = value
        return doc
    return edit


def _drop(keys):
    def edit(doc):
        d = doc
        for k in keys[:-1]:
            d = d[k]
        del d[keys[-1]]
        return doc
    return edit


CONFIG_EDITS = {
    "image size text": (_set(["doll", "image_size"], "abc"), "doll.image_size is 'abc'"),
    "image size negative": (_set(["doll", "image_size"], -5), "doll.image_size is -5"),
    "image size 1e9": (_set(["doll", "image_size"], 1e9), "doll.image_size is 1000000000.0"),
    "a JSON list": (lambda doc: [doc], "the content is [{"),
    "classes an int": (_set(["doll", "classes"], 14), "doll.classes is 14"),
}


@pytest.mark.parametrize("edit", [*CONFIG_EDITS, "no arch"])
def test_tampered_classifier_config(made, phantom, tmp_path, capsys, edit):
    folder = copy_folder(made["classifier"], tmp_path / "cls")
    change, fragment = (_drop(["doll", "arch"]), "doll.arch is missing") if edit == "no arch" else CONFIG_EDITS[edit]
    edit_json(folder / "config.json", change)
    one_error(capsys, [f"{folder / 'config.json'}: {fragment}", "expected"], "explain", "--classifiers", folder,
              "--dataset", "phantom", "--root", phantom, "--out", tmp_path / "l.h5", "--steps", 2)
    assert not (tmp_path / "l.h5").exists()


@pytest.mark.parametrize("edit", [*CONFIG_EDITS, "no encoder", "smp classes", "mode"])
def test_tampered_segmenter_config(made, tmp_path, capsys, edit):
    folder = copy_folder(made["segmenter"], tmp_path / "seg")
    change, fragment = {"no encoder": (_drop(["doll", "encoder"]), "doll.encoder is missing"),
                        "smp classes": (_set(["classes"], "x"), "classes is 'x'"),
                        "mode": (_set(["doll", "mode"], "turbo"), "doll.mode is 'turbo'")}.get(edit) or CONFIG_EDITS[edit]
    edit_json(folder / "config.json", change)
    one_error(capsys, [f"{folder / 'config.json'}: {fragment}", "expected"], "labels", "refine", made["labels"],
              "--model", folder, "--out", tmp_path / "r.h5")
    assert not (tmp_path / "r.h5").exists()


def _attr(key, value):
    def edit(f):
        f.attrs[key] = value
    return edit


def _dataset(key, make):
    def edit(f):
        old = f[key][()]
        del f[key]
        new = make(old)
        if new.dtype == object:
            f.create_dataset(key, data=new, dtype=h5py.string_dtype())
        else:
            f.create_dataset(key, data=new)
    return edit


LABEL_EDITS = {
    "attribute not JSON": (_attr("classes", '["Cardiomegaly", Edema'), "attribute classes is not JSON"),
    "classes escape": (_attr("classes", json.dumps(["../../x", "Edema"])), "attribute classes[0] is '../../x'"),
    "text format_version": (_attr("format_version", "one"), "attribute format_version is 'one'"),
    "text finished": (_attr("finished", "yes"), "attribute finished is 'yes'"),
    "float32 saliency": (_dataset("saliency", lambda a: a.astype(np.float32)), "dataset saliency is float32"),
    "saliency of another shape": (_dataset("saliency", lambda a: a[:, :, :8, :8].copy()),
                                  "dataset saliency is uint8 of shape (8, 2, 8, 8)"),
    "targets too short": (_dataset("targets", lambda a: a[:5]), "dataset targets is bool of shape (5, 2)"),
    "done too long": (_dataset("done", lambda a: np.ones(11, bool)), "dataset done is bool of shape (11,)"),
    "text labels": (_dataset("labels", lambda a: np.array([["x"] * a.shape[1]] * len(a), dtype=object)),
                    "dataset labels is text of shape (8, 2)"),
}


@pytest.mark.parametrize("edit", LABEL_EDITS)
def test_tampered_label_file(made, tmp_path, capsys, edit):
    labels = tmp_path / "labels.h5"
    shutil.copy(made["labels"], labels)
    change, fragment = LABEL_EDITS[edit]
    with h5py.File(labels, "a") as f:
        change(f)
    for args in (["labels", "info", labels], ["pretrain", "--labels", labels, "--out", tmp_path / "o",
                                              "--encoder", "resnet18", "--epochs", 1],
                 ["labels", "export", labels, "--out", tmp_path / "e"]):
        one_error(capsys, [f"{labels}: {fragment}", "expected"], *args)
    assert not (tmp_path / "o").exists() and not (tmp_path / "x").exists()


# -- a killed doll explain, its blocks ---------------------------------------------------------------

@pytest.fixture(scope="module")
def killed(made, phantom, tmp_path_factory):
    """`doll explain` killed while it assembled the label file: every block in <file>.parts, no file."""
    import importlib

    run = importlib.import_module("doll.explanation.run")
    out = tmp_path_factory.mktemp("killed") / "labels.h5"

    def killed_here(*args, **kwargs):
        raise KeyboardInterrupt

    saved = run.write_label_file
    run.write_label_file = killed_here
    try:
        code, err = cli_exit(_NoCapture(), "explain", "--classifiers", made["classifier"], "--dataset", "phantom",
                             "--root", phantom, "--out", out, "--steps", 2, "--block", 16, "--quiet")
    finally:
        run.write_label_file = saved
    assert code == 130, err
    parts = Path(str(out) + ".parts")
    assert not out.exists() and len(list(parts.glob("block_*.npz"))) >= 3
    return out


class _NoCapture:
    """Stands in for capsys in a module fixture (stderr goes to pytest's capture)."""

    def readouterr(self):
        class R:
            err = ""
        return R()


def test_killed_explain_is_unfinished_not_missing(killed, tmp_path, capsys):
    fragments = [f"{killed} is unfinished", "--resume", f"--out {killed}"]
    line = one_error(capsys, fragments, "labels", "info", killed)
    assert "does not exist" not in line
    one_error(capsys, fragments, "pretrain", "--labels", killed, "--out", tmp_path / "o", "--epochs", 1)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("damage", ["object array", "wrong class count", "row ends past the rows", "settings not JSON"])
def test_tampered_parts(killed, made, phantom, tmp_path, capsys, damage):
    out = tmp_path / "labels.h5"
    parts = Path(str(out) + ".parts")
    shutil.copytree(Path(str(killed) + ".parts"), parts)
    block = parts / "block_0000001.npz"
    if damage == "object array":
        with np.load(block) as z:
            arrays = dict(z)
        arrays["targets"] = np.array([{"row": i} for i in range(len(arrays["targets"]))], dtype=object)
        with open(block, "wb") as fh:
            np.savez(fh, **arrays)  # pickled: np.load(allow_pickle=False) refuses it
        fragments = [f"{block}: targets is", "object", "--resume"]
    elif damage == "wrong class count":
        with np.load(block) as z:
            arrays = dict(z)
        arrays["targets"] = arrays["targets"][:, :3]
        with open(block, "wb") as fh:
            np.savez_compressed(fh, **arrays)
        fragments = [f"{block}: targets is an array of shape", "--resume"]
    elif damage == "row ends past the rows":
        with np.load(block) as z:
            arrays = dict(z)
        arrays["row_ends"][-1] += 5
        with open(block, "wb") as fh:
            np.savez(fh, **arrays)
        fragments = [f"{block}: row_ends is", "increasing integers, one per row", "--resume"]
    else:
        (parts / "settings.json").write_text('{"block": 16, "dat')
        fragments = [f"{parts / 'settings.json'}: the content is not JSON", "--overwrite"]
    one_error(capsys, fragments, "explain", "--classifiers", made["classifier"], "--dataset", "phantom", "--root",
              phantom, "--out", out, "--steps", 2, "--block", 16, "--resume")
    assert not out.exists()


# -- phantom.json ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def phantom_copy(phantom, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("phantom_copy") / "ph"
    shutil.copytree(phantom, root)
    return root


@pytest.mark.parametrize("edit", ["not JSON", "a list", "chexpert_dir escapes", "size text", "newer version"])
def test_tampered_phantom_json(phantom_copy, tmp_path, capsys, edit):
    meta = phantom_copy / "phantom.json"
    good = meta.read_text()
    change, fragment = {
        "not JSON": (lambda d: json.dumps(d)[:40], "the content is not JSON"),
        "a list": (lambda d: [d], "the content is [{"),
        "chexpert_dir escapes": (_set(["chexpert_dir"], "../../CheXpert-v1.0-phantom"),
                                 "chexpert_dir is '../../CheXpert-v1.0-phantom'"),
        "size text": (_set(["size"], "abc"), "size is 'abc'"),
        "newer version": (_set(["version"], 99), "version is 99"),
    }[edit]
    try:
        edit_json(meta, change)
        one_error(capsys, [f"{meta}: {fragment}", "doll data phantom"], "data", "check", "--dataset", "phantom",
                  "--root", phantom_copy)
        one_error(capsys, f"{meta}: {fragment}", "train-classifiers", "--dataset", "phantom", "--root", phantom_copy,
                  "--out", tmp_path / "c", "--epochs", 1, "--members", 1, "--image-size", SIZE)
        one_error(capsys, f"{meta}: {fragment}", "finetune", "--task", "seg4cls", "--dataset", "phantom", "--root",
                  phantom_copy, "--out", tmp_path / "f", "--max-steps", 1)
        assert not (tmp_path / "c").exists() and not (tmp_path / "f").exists()
    finally:
        meta.write_text(good)


# -- training state (last.pt) ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def pretrained(made, tmp_path_factory) -> Path:
    """A finished `doll pretrain` run on the small label file (its last.pt is what --resume reads)."""
    out = tmp_path_factory.mktemp("pretrained") / "pre"
    code, err = cli_exit(_NoCapture(), "pretrain", "--labels", made["labels"], "--out", out, "--encoder", "resnet18",
                         "--epochs", 1, "--batch-size", 4, "--quiet")
    assert code == 0, err
    assert (out / "last.pt").is_file()
    return out


@pytest.mark.parametrize("damage", ["missing keys", "another model", "not a dict", "bad progress"])
def test_tampered_training_state(made, pretrained, tmp_path, capsys, damage):
    out = tmp_path / "pre"
    shutil.copytree(pretrained, out)
    last = out / "last.pt"
    state = torch.load(last, weights_only=True)
    if damage == "missing keys":
        state = {"model": state["model"]}
        fragment = "optimizer is missing"
    elif damage == "another model":
        from doll.models.classifier import build_classifier

        state["model"] = build_classifier("resnet18", 2).state_dict()
        fragment = "model is the weights of another network"
    elif damage == "not a dict":
        state = [1, 2, 3]
        fragment = "the content is [1, 2, 3]"
    else:
        state["state"]["history"] = "long"
        fragment = "state.history is 'long'"
    torch.save(state, last)
    for finished in (True, False):  # a finished run reads its weights from last.pt; an unfinished one all of it
        if not finished:
            metrics = json.loads((out / "metrics.json").read_text())
            (out / "metrics.json").write_text(json.dumps({**metrics, "finished": False}))
        one_error(capsys, [f"{last}: {fragment}", "--overwrite"], "pretrain", "--labels", made["labels"], "--out",
                  out, "--encoder", "resnet18", "--epochs", 1, "--batch-size", 4, "--resume")


# -- non-finite weights ----------------------------------------------------------------------------

def _nan_classifier(made, folder: Path) -> Path:
    from safetensors.torch import load_file, save_file

    folder.mkdir()
    shutil.copy(made["classifier"] / "config.json", folder / "config.json")
    state = load_file(str(made["classifier"] / "model.safetensors"))
    state["layer2.0.conv1.weight"][0, 0, 0, 0] = float("nan")
    save_file(state, str(folder / "model.safetensors"))
    return folder


def test_nan_weights_are_refused_on_load(made, phantom, tmp_path, capsys):
    folder = _nan_classifier(made, tmp_path / "nan")
    one_error(capsys, [f"{folder / 'model.safetensors'}: tensor layer2.0.conv1.weight is not finite (1 NaN of"],
              "explain", "--classifiers", folder, "--dataset", "phantom", "--root", phantom, "--out", tmp_path / "l.h5")
    assert not (tmp_path / "l.h5").exists()


def test_no_nan_map_becomes_a_label(made, phantom, tmp_path, capsys, monkeypatch):
    """Were NaN weights loaded anyway, explain writes no label from their maps."""
    import doll.models.checkpoint as checkpoint

    monkeypatch.setattr(checkpoint, "check_weights", lambda path, state: state)
    folder = _nan_classifier(made, tmp_path / "nan")
    one_error(capsys, ["has NaN or infinite values", "member nan"], "explain", "--classifiers", folder, "--dataset",
              "phantom", "--root", phantom, "--out", tmp_path / "l.h5", "--steps", 2)
    assert not (tmp_path / "l.h5").exists()
