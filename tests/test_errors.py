"""Bad input, everywhere: one line `error: ...`, exit code 2, no traceback (docs/errors.md lists these)."""
from __future__ import annotations

import errno
import json
import shutil

import h5py
import numpy as np
import pytest
from conftest import cli_exit

from doll.errors import DollError


def expect_error(capsys, fragment: str, *args) -> str:
    code, err = cli_exit(capsys, *args)
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert code == 2, err
    assert lines and lines[-1].startswith("error: "), err
    assert "Traceback" not in err
    assert fragment in lines[-1], lines[-1]
    return lines[-1]


@pytest.fixture()
def broken_chexpert(phantom, tmp_path):
    """A copy of the phantom's CheXpert folder to break in various ways."""
    src = phantom / "CheXpert-v1.0-phantom"
    dst = tmp_path / "CheXpert-v1.0-small"
    shutil.copytree(src, dst)
    for csv in ("train.csv", "valid.csv"):
        p = dst / csv
        p.write_text(p.read_text().replace("CheXpert-v1.0-phantom/", "CheXpert-v1.0-small/"))
    return dst


def test_missing_root(capsys, tmp_path):
    expect_error(capsys, "does not exist", "train-classifiers", "--dataset", "chexpert", "--root", tmp_path / "nope")


def test_empty_root(capsys, tmp_path):
    expect_error(capsys, "no train.csv", "train-classifiers", "--dataset", "chexpert", "--root", tmp_path)
    expect_error(capsys, "not a phantom data set", "train-classifiers", "--dataset", "phantom", "--root", tmp_path)


def test_unknown_dataset(capsys, tmp_path):
    expect_error(capsys, "unknown dataset 'cxr'", "train-classifiers", "--dataset", "cxr", "--root", tmp_path)


def test_csv_without_required_column(capsys, broken_chexpert, tmp_path):
    p = broken_chexpert / "train.csv"
    p.write_text(p.read_text().replace("Cardiomegaly", "Cardio"))
    expect_error(capsys, "has no 'Cardiomegaly' column (found: Path,", "train-classifiers", "--dataset", "chexpert",
                 "--root", broken_chexpert, "--out", tmp_path / "o")


def test_truncated_csv_row(capsys, broken_chexpert, tmp_path):
    p = broken_chexpert / "train.csv"
    lines = p.read_text().splitlines()
    lines[2] = ",".join(lines[2].split(",")[:6])  # the second image's row, cut as by an interrupted download
    p.write_text("\n".join(lines) + "\n")
    n = len(lines[0].split(","))
    expect_error(capsys, f"train.csv line 3 has 6 fields but the header has {n}; the file is truncated",
                 "train-classifiers", "--dataset", "chexpert", "--root", broken_chexpert, "--out", tmp_path / "o")


def test_label_value_out_of_range(capsys, broken_chexpert, tmp_path):
    p = broken_chexpert / "train.csv"
    lines = p.read_text().splitlines()
    cells = lines[1].split(",")
    cells[6] = "2.0"
    lines[1] = ",".join(cells)
    p.write_text("\n".join(lines) + "\n")
    expect_error(capsys, "label value '2.0'", "train-classifiers", "--dataset", "chexpert",
                 "--root", broken_chexpert, "--out", tmp_path / "o")


def test_every_image_unreadable(capsys, broken_chexpert, tmp_path):
    for jpg in broken_chexpert.rglob("*.jpg"):
        jpg.write_bytes(b"not an image")
    expect_error(capsys, "none of the", "train-classifiers", "--dataset", "chexpert", "--root", broken_chexpert,
                 "--out", tmp_path / "o")


@pytest.mark.parametrize("option,value", [("--epochs", 0), ("--batch-size", -1), ("--members", 0)])
def test_non_positive_numbers(capsys, phantom, tmp_path, option, value):
    expect_error(capsys, "must be positive", "train-classifiers", "--root", phantom, "--out", tmp_path / "o",
                 option, value)


def test_non_positive_steps(capsys, pipeline, tmp_path):
    expect_error(capsys, "--steps must be positive", "explain", "--classifiers", pipeline["classifiers"],
                 "--root", pipeline["phantom"], "--out", tmp_path / "l.h5", "--steps", 0)


@pytest.mark.parametrize("fraction", [0, 1.5, -0.1])
def test_label_fraction_outside_range(capsys, phantom, tmp_path, fraction):
    expect_error(capsys, "--label-fraction must be in (0, 1]", "finetune", "--task", "jsrt", "--dataset", "jsrt",
                 "--root", phantom / "anatomy", "--label-fraction", fraction, "--out", tmp_path / "o")


@pytest.mark.parametrize("args,fragment", [
    (["explain", "--method", "lime"], "unknown --method 'lime'"),
    (["finetune", "--task", "liver", "--dataset", "jsrt"], "unknown --task 'liver'"),
    (["finetune", "--task", "jsrt", "--dataset", "jsrt", "--mode", "lora"], "unknown --mode 'lora'"),
    (["train-classifiers", "--arch", "vgg11"], "unknown --arch 'vgg11'"),
    (["train-classifiers", "--hide", "0,1"], "--hide is a probability in [0, 1), got 1.0"),
    (["train-classifiers", "--hide", "half"], "--hide takes probabilities in [0, 1), comma-separated, got 'half'"),
    (["finetune", "--task", "jsrt", "--dataset", "jsrt", "--encoder", "vit"], "unknown --encoder 'vit'"),
    (["pretrain", "--encoder", "vit"], "unknown --encoder 'vit'"),
    (["explain", "--sign", "both"], "unknown --sign 'both'"),
    (["explain", "--precision", "fp8"], "unknown --precision 'fp8'"),
    (["explain", "--evidence", "shap"], "unknown --evidence 'shap'"),
    (["explain", "--field-margin", "0.7"], "--field-margin must be in [0, 0.5)"),
    (["explain", "--evidence", "abnormal", "--classes", "No Finding,Edema"], "leave 'No Finding' out of --classes"),
    (["finetune", "--task", "seg4cls", "--dataset", "jsrt", "--summarizer", "magic"], "unknown --summarizer 'magic'"),
    (["finetune", "--task", "mixed", "--dataset", "jsrt", "--pooling", "mean"], "unknown --pooling 'mean'"),
])
def test_unknown_choices(capsys, pipeline, tmp_path, args, fragment):
    extra = {"explain": ["--classifiers", pipeline["classifiers"], "--root", pipeline["phantom"], "--out", tmp_path / "l.h5"],
             "finetune": ["--root", pipeline["phantom"] / "anatomy", "--out", tmp_path / "o"],
             "train-classifiers": ["--root", pipeline["phantom"], "--out", tmp_path / "o"],
             "pretrain": ["--labels", pipeline["labels"], "--out", tmp_path / "o"]}[args[0]]
    expect_error(capsys, fragment, *args, *extra)


def test_label_file_from_another_tool_or_version(capsys, pipeline, tmp_path):
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["x"] = np.zeros(3)
    expect_error(capsys, "not a DoLL label file", "pretrain", "--labels", other, "--out", tmp_path / "o")
    newer = tmp_path / "newer.h5"
    shutil.copy(pipeline["labels"], newer)
    with h5py.File(newer, "a") as f:
        f.attrs["format_version"] = 99
    expect_error(capsys, "version 99", "pretrain", "--labels", newer, "--out", tmp_path / "o")
    text = tmp_path / "text.h5"
    text.write_text("hello")
    expect_error(capsys, "not an HDF5 file", "labels", "info", text)


def test_label_file_without_finished_rows(capsys, pipeline, tmp_path):
    empty = tmp_path / "empty.h5"
    shutil.copy(pipeline["labels"], empty)
    with h5py.File(empty, "a") as f:
        f["done"][:] = False
    expect_error(capsys, "no finished rows", "pretrain", "--labels", empty, "--out", tmp_path / "o")


def test_init_pointing_at_nothing(capsys, phantom, tmp_path):
    expect_error(capsys, "does not exist", "finetune", "--task", "jsrt", "--dataset", "jsrt", "--root",
                 phantom / "anatomy", "--init", tmp_path / "missing", "--out", tmp_path / "o")
    expect_error(capsys, "never downloaded", "finetune", "--task", "jsrt", "--dataset", "jsrt", "--root",
                 phantom / "anatomy", "--init", "imagenet:" + str(tmp_path / "w.pth"), "--out", tmp_path / "o")


def test_classifier_init_errors(capsys, phantom, tmp_path):
    run = ["train-classifiers", "--root", phantom, "--out", tmp_path / "o"]
    expect_error(capsys, "never downloaded", *run, "--init", "imagenet:" + str(tmp_path / "w.pth"))
    expect_error(capsys, "--init takes random or imagenet:", *run, "--init", "imagenet")
    assert not (tmp_path / "o").exists()  # refused before anything is written


def test_output_holding_another_run(capsys, pipeline):
    expect_error(capsys, "already holds a run", "train-classifiers", "--root", pipeline["phantom"],
                 "--out", pipeline["classifiers"])
    expect_error(capsys, "already exists", "explain", "--classifiers", pipeline["classifiers"], "--root",
                 pipeline["phantom"], "--out", pipeline["labels"])
    # --resume of a finished run with other settings would report its models under the new ones
    from conftest import SIZE

    expect_error(capsys, "--resume with different settings (epochs, members)", "train-classifiers", "--dataset",
                 "phantom", "--root", pipeline["phantom"], "--out", pipeline["classifiers"], "--members", 3,
                 "--epochs", 3, "--image-size", SIZE, "--batch-size", 16, "--resume")
    expect_error(capsys, "--resume with different settings (epochs)", "pretrain", "--labels", pipeline["labels"],
                 "--out", pipeline["pretrain"], "--encoder", "resnet18", "--epochs", 5, "--batch-size", 8, "--resume")
    # the same run, its paths typed relative to another folder: resumed (the finished members are kept)
    import os

    from conftest import cli

    cwd = os.getcwd()
    os.chdir(pipeline["phantom"].parent)
    try:
        cli("train-classifiers", "--dataset", "phantom", "--root", pipeline["phantom"].name, "--out",
            pipeline["classifiers"], "--members", 2, "--epochs", 2, "--image-size", SIZE, "--batch-size", 16, "--resume")
    finally:
        os.chdir(cwd)


def test_cuda_without_gpu(capsys, phantom, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    expect_error(capsys, "asked for a GPU", "train-classifiers", "--root", phantom, "--out", tmp_path / "o",
                 "--device", "cuda")


def test_out_of_memory_and_disk_full_messages(capsys, phantom, tmp_path, monkeypatch):
    import torch

    import doll.classification.train as stage

    def oom(*a, **k):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(stage, "train_classifiers", oom)
    expect_error(capsys, "--batch-size", "train-classifiers", "--root", phantom, "--out", tmp_path / "o")

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "o" / "model.safetensors"))

    monkeypatch.setattr(stage, "train_classifiers", full)
    expect_error(capsys, "disk full", "train-classifiers", "--root", phantom, "--out", tmp_path / "o")

    class SafetensorError(Exception):  # what safetensors raises when the disk fills while saving
        pass

    def full_in_library(*a, **k):
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(stage, "train_classifiers", full_in_library)
    expect_error(capsys, "disk full", "train-classifiers", "--root", phantom, "--out", tmp_path / "o")


def test_disk_full_during_atomic_write_leaves_no_file(tmp_path, monkeypatch):
    import os

    from doll.errors import DollError
    from doll.utils import write_json

    def no_space(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(DollError, match="disk full"):
        write_json(tmp_path / "metrics.json", {"a": 1})
    assert list(tmp_path.iterdir()) == []


def test_usage_errors_are_one_line(capsys):
    expect_error(capsys, "No such option", "train-classifiers", "--bogus")
    expect_error(capsys, "Missing option", "finetune")


def test_mask_image_size_mismatch_with_strict(capsys, phantom, tmp_path):
    import cv2

    root = tmp_path / "anatomy"
    shutil.copytree(phantom / "anatomy", root)
    mask = next((root / "masks" / "heart").glob("*.png"))
    cv2.imwrite(str(mask), np.zeros((10, 12), np.uint8))
    expect_error(capsys, "(--strict)", "finetune", "--task", "jsrt", "--dataset", "jsrt", "--root", root,
                 "--strict", "--epochs", 1, "--out", tmp_path / "o")


def test_missing_lung_model_fails_before_any_output(capsys, pipeline, tmp_path):
    expect_error(capsys, "--lung-model /x/nope does not exist", "train-classifiers", "--root", pipeline["phantom"],
                 "--out", tmp_path / "cls", "--lung-model", "/x/nope")
    assert not (tmp_path / "cls").exists()
    expect_error(capsys, "--lung-model /x/nope does not exist", "explain", "--classifiers", pipeline["classifiers"],
                 "--root", pipeline["phantom"], "--out", tmp_path / "l.h5", "--lung-model", "/x/nope")


def test_refine_field_margin_without_a_lung_field(capsys, pipeline, tmp_path):
    expect_error(capsys, "has no lung field; --field-margin needs --lung-model", "labels", "refine",
                 pipeline["labels"], "--model", pipeline["pretrain"], "--out", tmp_path / "r.h5", "--field-margin", 0)
    assert not (tmp_path / "r.h5").exists()
    expect_error(capsys, "--lung-model /x/nope does not exist", "labels", "refine", pipeline["labels"],
                 "--model", pipeline["pretrain"], "--out", tmp_path / "r.h5", "--lung-model", "/x/nope")
    # a file whose recorded lung model is not found (older files kept a relative path as typed)
    old = tmp_path / "old.h5"
    shutil.copy(pipeline["labels"], old)
    with h5py.File(old, "a") as f:
        f.attrs["settings"] = json.dumps({**json.loads(f.attrs["settings"]), "field_model": "lung/model"})
    expect_error(capsys, "was made with the lung model lung/model, which does not exist", "labels", "refine", old,
                 "--model", pipeline["pretrain"], "--out", tmp_path / "r.h5")


def test_data_check_exit_codes_and_ctrl_c(capsys, tmp_path, monkeypatch):
    """Exit codes survive typer returning (not raising) them: `data check` 1 on problems, Ctrl-C 130."""
    from doll.data.phantom import make_phantoms

    monkeypatch.setenv("DOLL_CACHE", str(tmp_path / "cache"))
    make_phantoms(tmp_path / "ph", n=20, size=32, progress=False)
    code, _ = cli_exit(capsys, "data", "check", "--dataset", "phantom", "--root", tmp_path / "ph", "--quiet")
    assert code == 0
    missing = sorted((tmp_path / "ph").rglob("*.jpg"))[0]
    missing.unlink()
    code, err = cli_exit(capsys, "data", "check", "--dataset", "phantom", "--root", tmp_path / "ph", "--quiet")
    assert code == 2 and err.strip().splitlines()[-1].startswith("error: phantom at ") and "1 missing" in err
    code, err = cli_exit(capsys, "labels", "info", str(tmp_path / "nope.h5"), "--debug")
    assert code == 2 and "Traceback" in err and err.strip().splitlines()[-1].startswith("error: ")  # still bad input

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("doll.data.check.check_dataset", interrupted)
    code, err = cli_exit(capsys, "data", "check", "--dataset", "phantom", "--root", tmp_path / "ph", "--quiet")
    assert code == 130 and err.strip().endswith("error: interrupted")  # data check has no --resume
    monkeypatch.setattr("doll.classification.train.train_classifiers", interrupted)
    code, err = cli_exit(capsys, "train-classifiers", "--dataset", "phantom", "--root", tmp_path / "ph", "--quiet")
    assert code == 130 and "error: interrupted; rerun with --resume" in err


def test_version_and_bare_doll(capsys):
    from doll import __version__

    for args in (["--version"], []):
        try:
            from doll_cli.main import main

            main(args)
            code = 0
        except SystemExit as exc:
            code = exc.code or 0
        out = capsys.readouterr().out
        assert code == 0
        if args:
            assert out.startswith(f"doll {__version__} (torch ") and "cuda available:" in out
        else:  # `doll` alone shows the commands: the demo, the stages in the order they run, the tools
            assert "--version" in out
            order = ["demo", "train-classifiers", "explain", "evaluate-labels", "show", "pretrain", "finetune",
                     "data", "labels"]
            listed = [line.split()[1] for line in out.splitlines() if line.startswith("│ ") and len(line.split()) > 2
                      and line.split()[1] in order]
            assert listed == order, listed
    # main() ran twice in this process: each sub-app is registered once
    from doll_cli.main import app

    assert sorted(g.name for g in app.registered_groups) == ["classifiers", "data", "labels"]


def test_paths_options_and_reruns_caught_before_anything_is_written(capsys, pipeline, tmp_path, monkeypatch):
    labels = pipeline["labels"]
    expect_error(capsys, "--out is empty", "labels", "export", labels, "--out", "")
    (tmp_path / "afile").write_text("x")
    expect_error(capsys, "is a file; name a folder to export into", "labels", "export", labels, "--out", tmp_path / "afile")
    expect_error(capsys, "holds something other than an export; choose another --out", "labels", "export", labels,
                 "--out", pipeline["classifiers"])  # not an export: --overwrite is not the fix
    expect_error(capsys, "holds something other than an export", "labels", "export", labels, "--out",
                 pipeline["classifiers"], "--overwrite")
    (tmp_path / "dir.h5").mkdir()
    expect_error(capsys, "is a folder; name the .h5 file", "explain", "--classifiers", pipeline["classifiers"],
                 "--root", pipeline["phantom"], "--out", tmp_path / "dir.h5", "--overwrite")
    (tmp_path / "dir.png").mkdir()
    expect_error(capsys, "is a folder; name a file to write", "show", "--labels", labels, "--out", tmp_path / "dir.png")
    expect_error(capsys, "unknown class(es) Bogus", "show", "--labels", labels, "--out", tmp_path / "s.png",
                 "--classes", "Bogus")
    expect_error(capsys, "--lr must be positive", "train-classifiers", "--root", pipeline["phantom"], "--out",
                 tmp_path / "c", "--lr", "-1")
    expect_error(capsys, "Invalid value for '--smooth'", "explain", "--classifiers", pipeline["classifiers"],
                 "--root", pipeline["phantom"], "--out", tmp_path / "l.h5", "--smooth", "-1")
    anatomy = ["--task", "jsrt", "--dataset", "jsrt", "--root", pipeline["phantom"] / "anatomy", "--out", tmp_path / "ft"]
    expect_error(capsys, "--summarizer applies to --task seg4cls only, not --task jsrt", "finetune", *anatomy,
                 "--summarizer", "rule")
    expect_error(capsys, "choose one", "finetune", *anatomy, "--pseudo", "--boosted")
    expect_error(capsys, "unknown --encoder 'bogus'", "finetune", *anatomy, "--encoder", "bogus")
    assert not (tmp_path / "ft").exists()  # nothing written: the corrected run starts without --overwrite
    expect_error(capsys, "holds another command's metrics", "evaluate-labels", "--labels", labels, "--out",
                 pipeline["classifiers"])
    # a demo stopped part-way can be run again
    from importlib import import_module

    demo = import_module("doll.demonstration")

    def stop(*args, **kwargs):
        raise DollError("stopped")

    monkeypatch.setattr(demo, "make_phantoms", stop)
    for _ in range(2):
        with pytest.raises(DollError, match="stopped"):
            demo.demo(out=str(tmp_path / "demo"), quick=True, progress=False)
    # ... but never replaces another run
    with pytest.raises(DollError, match="holds something other than an earlier demo"):
        demo.demo(out=str(pipeline["classifiers"]), quick=True, progress=False)
    assert (pipeline["classifiers"] / "metrics.json").is_file()


def test_phantom_rerun_needs_overwrite(capsys, tmp_path):
    from conftest import cli

    cli("data", "phantom", "--out", tmp_path / "ph", "--n", 4, "--size", 32, "--n-anatomy", 1, "--quiet")
    expect_error(capsys, "already holds a phantom data set", "data", "phantom", "--out", tmp_path / "ph", "--n", 4,
                 "--size", 32)
    cli("data", "phantom", "--out", tmp_path / "ph", "--n", 4, "--size", 32, "--n-anatomy", 1, "--overwrite", "--quiet")


def test_python_api_names_are_functions_and_no_module_shadows_them():
    """No API name is also a subpackage's or module's name (issue 35: the module-class patch
    that kept them apart is gone); importing every stage package leaves the names functions."""
    import importlib
    import pkgutil
    import sys
    import types

    import doll

    modules = {m.name for m in pkgutil.walk_packages(doll.__path__, "doll.")}
    assert not {f"doll.{name}" for name in doll.__all__} & modules
    for name in ("doll.demonstration", "doll.explanation.run", "doll.pretraining.train", "doll.studies.run"):
        importlib.import_module(name)
    assert type(doll) is types.ModuleType
    for name in doll.__all__[1:]:
        function = getattr(doll, name)
        assert isinstance(function, types.FunctionType), name
        assert function is getattr(sys.modules[doll._API[name]], name), name
    with pytest.raises(DollError, match="--classifiers /nowhere does not exist"):
        doll.explain(classifiers="/nowhere", root="/nowhere", out="/tmp/x.h5")
