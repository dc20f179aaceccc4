"""docs/extending.md's two examples, as written there, through the CLI: a data set format
and an explainer of the user's own, named as package.module:ClassName."""
from __future__ import annotations

import json
import re
from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest
from conftest import SIZE, cli, cli_exit

DOC = Path(__file__).resolve().parent.parent / "docs" / "extending.md"


def doc_module(name: str) -> str:
    """The python block of the doc that starts with ``# <name>.py``."""
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)
    found = [b for b in blocks if b.startswith(f"# {name}.py")]
    assert len(found) == 1, f"docs/extending.md has no single block for {name}.py"
    return found[0]


@pytest.fixture()
def plugins(tmp_path, monkeypatch):
    """The doc's modules on sys.path, and an export in the example's layout."""
    code = tmp_path / "code"
    code.mkdir()
    for name in ("my_formats", "my_explainers"):
        (code / f"{name}.py").write_text(doc_module(name))
        monkeypatch.delitem(__import__("sys").modules, name, raising=False)
    monkeypatch.syspath_prepend(str(code))
    root = tmp_path / "export"
    (root / "png").mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows = ["file,patient,split,Pneumothorax,Effusion"]
    for i in range(32):
        pneumo, effusion = i % 2, (i // 2) % 2
        img = rng.integers(60, 120, (SIZE, SIZE), dtype=np.uint8)
        if pneumo:
            img[4:12, 4:12] = 240  # something to find
        cv2.imwrite(str(root / "png" / f"x{i:02d}.png"), img)
        split = "valid" if i >= 24 else "train"
        rows.append(f"x{i:02d}.png,p{i // 2},{split},{pneumo},{effusion if i != 3 else ''}")
    (root / "index.csv").write_text("\n".join(rows) + "\n")
    return root


def test_own_format_and_explainer_through_the_cli(plugins, tmp_path, capsys):
    cli("data", "check", "--dataset", "my_formats:HospitalExport", "--root", plugins, "--json")
    report = json.loads(capsys.readouterr().out)
    assert report["ok"], report
    cls = tmp_path / "cls"
    cli("train-classifiers", "--dataset", "my_formats:HospitalExport", "--root", plugins, "--out", cls,
        "--members", 1, "--epochs", 1, "--image-size", SIZE, "--batch-size", 8)
    m = json.loads((cls / "metrics.json").read_text())
    assert m["n_train"] == 24 and m["n_valid"] == 8 and 0 <= m["mean_auroc"] <= 1
    labels = tmp_path / "labels.h5"
    cli("explain", "--method", "my_explainers:GradientTimesInput", "--classifiers", cls,
        "--dataset", "my_formats:HospitalExport", "--root", plugins, "--out", labels)
    with h5py.File(labels, "r") as f:
        assert f["saliency"].shape == (24, 2, SIZE, SIZE)  # the train split, by default
        assert f.attrs["method"] == "my_explainers:GradientTimesInput"
        targets, sal = f["targets"][:], f["saliency"][:]
    assert targets[:, 0].sum() == 12 and targets.sum() == 23  # the positive labels (one Effusion blank)
    explained = sal[targets.astype(bool)]
    assert explained.reshape(len(explained), -1).max(1).min() > 0  # a map for each, not zeros
    assert sal[~targets.astype(bool)].max() == 0


@pytest.mark.parametrize("args, fragment", [
    (["--dataset", "no_such_module:X"], "cannot import 'no_such_module'"),
    (["--dataset", "my_formats:Nope"], "module my_formats has no class of that name"),
    (["--dataset", "my_explainers:GradientTimesInput"], "is not a subclass of doll.data.base.DatasetFormat"),
    (["--dataset", "my_formats:"], "package.module:ClassName"),
])
def test_own_class_errors(plugins, tmp_path, capsys, args, fragment):
    code, err = cli_exit(capsys, "train-classifiers", *args, "--root", plugins, "--out", tmp_path / "o")
    assert code == 2 and fragment in err.strip().splitlines()[-1], err


def test_own_explainer_that_is_not_one(plugins, pipeline, tmp_path, capsys):
    code, err = cli_exit(capsys, "explain", "--method", "my_formats:HospitalExport", "--classifiers",
                         pipeline["classifiers"], "--dataset", "phantom", "--root", pipeline["phantom"],
                         "--out", tmp_path / "l.h5")
    assert code == 2 and "is not a subclass of doll.explanation.base.Explainer" in err, err
