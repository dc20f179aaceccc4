"""The JSON files doll reads back from a folder a later stage is given, through doll/schema.py:
a run folder's metrics.json (finished or not), a --classifiers ensemble's config.json (how many
members must be there), a folder's config.json read to recognise its kind (doll predict --model)
and the demo's label_quality.json. Where a decision rests on the file, a damaged or tampered one
is one ``error: <file>: <field> is <found>; expected ..., <fix>`` line and exit code 2 through
the CLI: never a traceback, never a run taken as finished, an ensemble taken as complete or a
report written from garbage. Where the file only recognises a folder, a damaged one is "not a
folder of that kind" and the loader's own schema check names it."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from test_schema import one_error, save_classifier, save_labels, save_segmenter

NESTED = "[" * 100_000  # json.loads raises RecursionError on it


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> dict[str, Path]:
    """A segmenter and a label file (16 px), and a two-member train-classifiers ensemble folder
    (32 px, hand-made from one classifier written by doll's save functions: config.json with
    "command" and "members", each member finished)."""
    root = tmp_path_factory.mktemp("json_reads")
    ensemble = root / "ens"
    first = save_classifier(ensemble / "member_0")
    (first / "metrics.json").write_text(json.dumps({"finished": True}))
    _copy_folder(first, ensemble / "member_1")
    (ensemble / "config.json").write_text(json.dumps({"command": "train-classifiers", "members": 2, "epochs": 1,
                                                      "arch": "resnet18"}))
    return {"segmenter": save_segmenter(root / "seg"), "labels": save_labels(root / "labels.h5"), "ensemble": ensemble}


def _copy_folder(src: Path, dst: Path) -> Path:
    """A copy whose weights are hard links (the tests write only JSON files)."""
    def copy(a, b):
        return os.link(a, b) if a.endswith(".safetensors") else shutil.copy2(a, b)
    shutil.copytree(src, dst, copy_function=copy)
    return dst


# -- a run folder given to the next stage: its metrics.json says whether it finished ----------------

METRICS_EDITS = {
    "not JSON": ('{"finished": tru', "the content is not JSON (Expecting value at line 1 column 14)"),
    "nested too deeply": (NESTED, "the content is JSON nested too deeply"),
    "a JSON list": ('[{"finished": true}]', "the content is [{'finished': True}]; expected a JSON object"),
    "finished text": ('{"finished": "yes"}', "finished is 'yes'; expected true or false"),
    "finished 1": ('{"finished": 1}', "finished is 1; expected true or false"),
    "steps text": ('{"finished": true, "steps": "many"}', "steps is 'many'; expected a step count"),
}


@pytest.mark.parametrize("edit", METRICS_EDITS)
def test_tampered_metrics_of_a_folder_given_to_the_next_stage(saved, tmp_path, capsys, edit):
    """doll.models.checkpoint.require_finished (every read_config: --init, --model, --classifiers,
    --lung-model): metrics.json decides finished or not, so it is checked."""
    folder = _copy_folder(saved["segmenter"], tmp_path / "seg")
    text, fragment = METRICS_EDITS[edit]
    (folder / "metrics.json").write_text(text)
    one_error(capsys, [f"{folder / 'metrics.json'}: {fragment}", "delete it and finish the run with --resume"],
              "labels", "refine", saved["labels"], "--model", folder, "--out", tmp_path / "r.h5")
    assert not (tmp_path / "r.h5").exists()


# -- explain --classifiers: the ensemble's config.json says how many members must be there -----------

def _set(key, value):
    return lambda doc: {**doc, key: value}


ENSEMBLE_EDITS = {
    "members negative": (_set("members", -5), "members is -5; expected the number of classifiers the run trains "
                                              "(an integer >= 1)"),
    "members zero": (_set("members", 0), "members is 0; expected the number of classifiers"),
    "members text": (_set("members", "x"), "members is 'x'; expected the number of classifiers"),
    "members a float": (_set("members", 2.0), "members is 2.0; expected the number of classifiers"),
    "members null": (_set("members", None), "members is None; expected the number of classifiers"),
    "members missing": (lambda doc: {k: v for k, v in doc.items() if k != "members"},
                        "members is missing; expected the number of classifiers"),
    "command a number": (_set("command", 5), "command is 5; expected the command that wrote it (text)"),
    "not JSON": (lambda doc: "{'members': 2}", "the content is not JSON"),
    "nested too deeply": (lambda doc: NESTED, "the content is JSON nested too deeply"),
    "a JSON list": (lambda doc: [doc], "the content is [{'command': 'train-classifiers'"),
}


@pytest.mark.parametrize("edit", ENSEMBLE_EDITS)
def test_tampered_ensemble_config(saved, phantom, tmp_path, capsys, edit):
    """doll.models.ensemble.require_complete_ensemble: a tampered "members" (or a damaged file)
    used to skip the check that every member is there and finished."""
    ensemble = _copy_folder(saved["ensemble"], tmp_path / "ens")
    change, fragment = ENSEMBLE_EDITS[edit]
    doc = change(json.loads((ensemble / "config.json").read_text()))
    (ensemble / "config.json").write_text(doc if isinstance(doc, str) else json.dumps(doc))
    one_error(capsys, [f"{ensemble / 'config.json'}: {fragment}", "put back a copy of the file, or train the "
                       "ensemble again with doll train-classifiers --overwrite"],
              "explain", "--classifiers", ensemble, "--dataset", "phantom", "--root", phantom,
              "--out", tmp_path / "l.h5", "--steps", 2)
    assert not (tmp_path / "l.h5").exists()


# -- doll predict --model: config.json recognises a segmenter or a finetune run's top folder ---------

@pytest.mark.parametrize("where", ["segmenter folder", "finetune run's model/"])
def test_predict_model_whose_config_is_nested_too_deeply(saved, phantom, tmp_path, capsys, where):
    """doll.prediction.model._kind reads config.json to recognise the folder (a damaged one: not
    a folder of that kind); the loader's schema check then names it, no RecursionError."""
    if where == "segmenter folder":
        model = folder = _copy_folder(saved["segmenter"], tmp_path / "seg")
    else:
        model = tmp_path / "ft"
        folder = _copy_folder(saved["segmenter"], model / "model")
        (model / "config.json").write_text(json.dumps({"command": "finetune"}))
    (folder / "config.json").write_text(NESTED)
    image = sorted((phantom / "anatomy" / "images").glob("*.png"))[0]
    one_error(capsys, [f"{folder / 'config.json'}: the content is JSON nested too deeply; expected a JSON file, copy "
                       "the folder again or rerun the command that wrote it"],
              "predict", "--model", model, "--input", image, "--out", tmp_path / "p")
    assert not (tmp_path / "p").exists()


# -- the demo's label_quality.json: its numbers go into report.html's table ---------------------------

QUALITY = {"command": "evaluate-labels", "per_class": {"Edema": {"iou": 0.25, "dice": 0.4, "topk_iou": 0.3,
                                                                 "pointing": 1.0, "ap": None, "n": 3}}}
QUALITY_EDITS = {
    "not JSON": ("{", "the content is not JSON"),
    "nested too deeply": (NESTED, "the content is JSON nested too deeply"),
    "a JSON list": ("[]", "the content is []; expected a JSON object"),
    "per_class missing": (json.dumps({"mean_iou": 0.5}), "per_class is missing; expected an object: class -> its "
                                                         "scores"),
    "per_class a list": (json.dumps({"per_class": [1]}), "per_class is [1]; expected an object"),
    "iou text": (json.dumps({"per_class": {"Edema": {**QUALITY["per_class"]["Edema"], "iou": "high"}}}),
                 "per_class.Edema.iou is 'high'; expected an object: class -> its scores"),
    "pointing null": (json.dumps({"per_class": {"Edema": {**QUALITY["per_class"]["Edema"], "pointing": None}}}),
                      "per_class.Edema.pointing is None"),
    "n negative": (json.dumps({"per_class": {"Edema": {**QUALITY["per_class"]["Edema"], "n": -1}}}),
                   "per_class.Edema.n is -1"),
}


@pytest.mark.parametrize("edit", QUALITY_EDITS)
def test_tampered_label_quality_of_the_demo(tmp_path, edit):
    """doll.report.html.read_label_quality (write_report, at the end of doll demo). Called directly:
    through the CLI the demo would first train its whole pipeline (a minute, tests/test_demo.py)."""
    from doll.errors import DollError
    from doll.report.html import read_label_quality

    path = tmp_path / "label_quality.json"
    path.write_text(json.dumps(QUALITY))
    assert read_label_quality(tmp_path) == QUALITY["per_class"]  # a valid file: read as it is
    text, fragment = QUALITY_EDITS[edit]
    path.write_text(text)
    with pytest.raises(DollError) as err:
        read_label_quality(tmp_path)
    message = str(err.value)
    assert message.startswith(f"{path}: {fragment}") and message.endswith(", run doll demo again (it writes the file "
                                                                          "anew)"), message
    assert "\n" not in message, message


# -- the networks a checkpoint's config names ------------------------------------------------------

@pytest.mark.parametrize("key,value", [("arch", "resnet999"), ("encoder", "vit_huge"), ("decoder", "segformer")])
def test_checkpoint_config_naming_a_network_doll_does_not_build(saved, phantom, tmp_path, capsys, key, value):
    """An unknown architecture, encoder or decoder in a checkpoint's config.json is that file's error
    (it used to read "unknown --arch 'resnet999'", an option the command does not have)."""
    if key == "arch":
        folder = _copy_folder(saved["ensemble"], tmp_path / "ens")
        config = folder / "member_1" / "config.json"
        args = ["explain", "--classifiers", folder, "--dataset", "phantom", "--root", phantom, "--out",
                tmp_path / "l.h5", "--steps", 2]
    else:
        folder = _copy_folder(saved["segmenter"], tmp_path / "seg")
        config = folder / "config.json"
        image = sorted((phantom / "anatomy" / "images").glob("*.png"))[0]
        args = ["predict", "--model", folder, "--input", image, "--out", tmp_path / "p"]
    doc = json.loads(config.read_text())
    doc["doll"][key] = value
    if key == "encoder":
        doc["encoder_name"] = value  # smp's own key, which must agree
    config.write_text(json.dumps(doc))
    one_error(capsys, [f"{config}: doll.{key} is {value!r}; expected one of ", "copy the folder again or rerun the "
                       "command that wrote it"], *args)


def test_import_into_an_ensemble_whose_config_is_tampered(phantom, tmp_path, capsys):
    """doll classifiers import --out ENSEMBLE reads the ensemble's config.json to refuse an unfinished run; a
    tampered "members" used to skip that check (the import went ahead)."""
    import torch
    import torchvision
    from conftest import cli

    cls, weights = tmp_path / "cls", tmp_path / "r18.pt"
    cli("train-classifiers", "--dataset", "phantom", "--root", phantom, "--out", cls, "--members", 1,
        "--max-steps", 1, "--image-size", 32, "--batch-size", 8)
    torch.save(torchvision.models.resnet18(num_classes=14).state_dict(), weights)
    doc = json.loads((cls / "config.json").read_text())
    (cls / "config.json").write_text(json.dumps({**doc, "members": "x"}))
    one_error(capsys, [f"{cls / 'config.json'}: members is 'x'; expected the number of classifiers"],
              "classifiers", "import", "--from", "torchvision", "--arch", "resnet18", "--weights", weights,
              "--out", cls, "--image-size", 32)
    assert not (cls / "member_1").exists()
