"""Each stage through the CLI on tiny phantoms: outputs, shapes, values, round trips."""
from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from conftest import SIZE, cli, cli_exit

from doll.data.base import CHEXPERT_CLASSES


def read(p):
    return json.loads(p.read_text())


def test_classifiers_write_members_metrics_and_safetensors(pipeline):
    out = pipeline["classifiers"]
    m = read(out / "metrics.json")
    assert 0.0 <= m["mean_auroc"] <= 1.0
    assert set(m["per_class_auroc"]) == set(CHEXPERT_CLASSES)
    assert len(m["members"]) == 2 and m["members"][0]["seed"] != m["members"][1]["seed"]
    assert read(out / "config.json")["members"] == 2
    for k in (0, 1):
        cfg = read(out / f"member_{k}" / "config.json")["doll"]
        assert cfg["kind"] == "classifier" and cfg["classes"] == CHEXPERT_CLASSES and cfg["image_size"] == SIZE
        assert (out / f"member_{k}" / "model.safetensors").exists()
        member = read(out / f"member_{k}" / "metrics.json")
        assert member["finished"] and member["history"][-1]["epoch"] == 2 and member["steps"] == member["max_steps"]


def test_explain_writes_a_complete_label_file(pipeline):
    with h5py.File(pipeline["labels"], "r") as f:
        n = f["saliency"].shape[0]
        assert f["saliency"].shape == (n, 14, SIZE, SIZE) and f["saliency"].dtype == np.uint8
        assert f["images"].shape == (n, SIZE, SIZE)
        assert f["labels"].shape == f["probs"].shape == f["targets"].shape == (n, 14)
        assert f["done"][:].all()
        assert f.attrs["format"] == "doll-labels" and f.attrs["format_version"] == 1
        assert json.loads(f.attrs["classes"]) == CHEXPERT_CLASSES
        assert json.loads(f.attrs["settings"])["steps"] == 4
        targets, labels, sal = f["targets"][:], f["labels"][:], f["saliency"][:]
        # positive targets by default; No Finding never explained; unexplained maps are empty
        assert (targets <= (labels == 1)).all() and not targets[:, 0].any()
        assert sal[~targets].max() == 0 and sal[targets].max() > 0
        probs, images = f["probs"][:], f["images"][:]
    # probs: the mean of the members' sigmoid outputs on the stored images
    import torch

    from doll.data.dataset import to_tensor
    from doll.models.ensemble import load_ensemble

    members, _ = load_ensemble(pipeline["classifiers"], torch.device("cpu"))
    with torch.no_grad():
        expected = np.mean([torch.sigmoid(m(to_tensor(images))).numpy() for m, _, _ in members], axis=0)
    assert len(members) == 2 and np.allclose(probs, expected, atol=1e-5)
    assert read(pipeline["labels"].with_name("labels.h5.metrics.json"))["images"] == n


def test_evaluate_labels_beats_random_map(pipeline, capsys, tmp_path):
    cli("evaluate-labels", "--labels", pipeline["labels"], "--json")
    result = json.loads(capsys.readouterr().out)
    assert result["pairs"] > 10
    assert 0 <= result["mean_iou"] <= 1 and 0 <= result["random_iou"] <= 1
    assert result["mean"]["topk_iou"] > result["random"]["topk_iou"]
    # without --json: a table of the five scores, labels next to the random map
    from doll_cli.main import main

    main(["evaluate-labels", "--labels", str(pipeline["labels"]), "--quiet"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["labels", "random", "map"]
    rows = {ln.split()[0]: [float(v) for v in ln.split()[1:]] for ln in lines[1:6]}
    assert list(rows) == ["iou", "dice", "topk_iou", "pointing", "ap"]
    assert rows["topk_iou"] == [round(result["mean"]["topk_iou"], 3), round(result["random"]["topk_iou"], 3)]
    assert lines[6] == f"{result['pairs']} image-class pairs, label rule {result['label_rule']}"
    assert lines[7] == f"metrics: {pipeline['labels']}.evaluation.json"
    # the Python call writes the file the command writes, with the same metrics
    import doll

    written = read(Path(f"{pipeline['labels']}.evaluation.json"))
    assert written == json.loads(json.dumps(result))
    assert doll.evaluate_labels(str(pipeline["labels"]), out=str(tmp_path / "ev"), progress=False) == result
    assert read(tmp_path / "ev" / "metrics.json") == written


def test_show_writes_png_overlay(pipeline, tmp_path):
    import cv2

    out = tmp_path / "overlay.png"
    with h5py.File(pipeline["labels"], "r") as f:
        row = int(np.flatnonzero(f["targets"][:].any(axis=1))[0])
        k = int(f["targets"][row].sum())
    cli("show", "--labels", pipeline["labels"], "--index", row, "--out", out)
    img = cv2.imread(str(out))
    assert img.shape[1] == img.shape[0] * (1 + k)  # the image, then one heat map per explained class


def test_labels_info_export_merge(pipeline, tmp_path, capsys):
    cli("labels", "info", pipeline["labels"])
    info = json.loads(capsys.readouterr().out)
    assert info["done"] == info["rows"] and info["method"] == "ig"
    cli("labels", "export", pipeline["labels"], "--out", tmp_path / "exp")
    csv_rows = (tmp_path / "exp" / "labels.csv").read_text().splitlines()
    assert len(csv_rows) == info["rows"] + 1
    assert sum(1 for _ in (tmp_path / "exp" / "masks").rglob("*.png")) == sum(info["targets_per_class"].values())
    import csv

    import cv2

    from doll.labels.rule import apply_rule
    from doll.labels.store import LabelFile

    with LabelFile(pipeline["labels"]) as lf:
        assert [r["path"] for r in csv.DictReader(csv_rows)] == lf.paths()
        assert len(list((tmp_path / "exp" / "images").glob("*.png"))) == info["rows"]
        row, c = [(i, int(np.flatnonzero(t)[0])) for i, t in enumerate(lf["targets"][:]) if t.any()][0]
        exported = cv2.imread(str(tmp_path / "exp" / "masks" / lf.classes[c] / f"{row:07d}.png"), cv2.IMREAD_GRAYSCALE)
        assert np.array_equal(exported > 0, apply_rule(lf["saliency"][row, c], lf.label_rule))
        assert np.array_equal(cv2.imread(str(tmp_path / "exp" / "images" / f"{row:07d}.png"), cv2.IMREAD_GRAYSCALE),
                              lf["images"][row])
    cli("labels", "export", pipeline["labels"], "--out", tmp_path / "exp", "--overwrite")  # an earlier export: replaced
    assert len(list((tmp_path / "exp" / "images").glob("*.png"))) == info["rows"]
    cli("labels", "merge", pipeline["labels"], pipeline["labels"], "--out", tmp_path / "m.h5")
    with h5py.File(tmp_path / "m.h5", "r") as a, h5py.File(pipeline["labels"], "r") as b:
        assert a["saliency"].shape == b["saliency"].shape  # duplicates dropped
        assert np.array_equal(a["saliency"][:], b["saliency"][:])
    merged = read(tmp_path / "m.h5.metrics.json")
    assert merged["command"] == "labels merge" and merged["rows"] == info["rows"] and merged["seconds"] >= 0


def test_labels_refine_relabels_explained_classes_with_the_pretrained_segmenter(pipeline, tmp_path, capsys):
    out = tmp_path / "refined.h5"
    cli("labels", "refine", pipeline["labels"], "--model", pipeline["pretrain"], "--out", out, "--quiet")
    own = read(pipeline["pretrain"] / "config.json")["doll"]["classes"]
    with h5py.File(out, "r") as a, h5py.File(pipeline["labels"], "r") as b:
        for key in ("images", "targets", "done", "paths"):
            assert np.array_equal(a[key][:], b[key][:]), key
        for key in ("labels", "probs"):  # NaN: unknown
            assert np.array_equal(a[key][:], b[key][:], equal_nan=True), key
        assert json.loads(a.attrs["settings"])["refined_with"] == str(pipeline["pretrain"])
        classes = json.loads(b.attrs["classes"])
        idx = [classes.index(c) for c in own]
        sal, old, targets = a["saliency"][:], b["saliency"][:], b["targets"][:]
        assert sal.shape == old.shape
        refined = sal[:, idx]
        assert not refined[~targets[:, idx]].any()  # classes a row does not explain stay empty
        assert refined[targets[:, idx]].any() and not np.array_equal(refined, old[:, idx])
    metrics = read(tmp_path / "refined.h5.metrics.json")
    assert metrics["command"] == "labels refine" and metrics["rows"] == len(targets)
    capsys.readouterr()
    cli("evaluate-labels", "--labels", out, "--json")  # the refined file is a label file like any other
    assert json.loads(capsys.readouterr().out)["pairs"] > 0
    for model, says in ((pipeline["classifiers"] / "member_0", "not a segmenter"), (tmp_path / "none", "doll pretrain")):
        code, err = cli_exit(capsys, "labels", "refine", pipeline["labels"], "--model", model, "--out", tmp_path / "x.h5")
        assert code != 0 and says in err


def test_pretraining_learns(pipeline):
    h = read(pipeline["pretrain"] / "metrics.json")["history"]
    first = [r["train_loss"] for r in h if r["epoch"] <= 1]  # each row: the loss since the previous evaluation
    second = [r["train_loss"] for r in h if r["epoch"] > 1]
    assert h[-1]["epoch"] == 2 and sum(second) / len(second) < 0.95 * sum(first) / len(first), h  # lr x 1e-9: 0.99


def test_classifiers_learn_the_phantom_findings(tmp_path):
    root = tmp_path / "ph"
    cli("data", "phantom", "--out", root, "--n", 160, "--size", 32, "--seed", 1, "--quiet")
    cli("train-classifiers", "--dataset", "phantom", "--root", root, "--out", tmp_path / "cls", "--members", 1,
        "--epochs", 10, "--image-size", 32, "--batch-size", 16, "--quiet")
    m = read(tmp_path / "cls" / "metrics.json")
    assert m["mean_auroc"] > 0.62, m["mean_auroc"]  # one seed: 0.69 trained, 0.52 with the learning rate x 1e-9


def test_pretrained_pspnet_loads_with_smp(pipeline):
    import segmentation_models_pytorch as smp

    model = smp.from_pretrained(str(pipeline["pretrain"]))
    cfg = read(pipeline["pretrain"] / "config.json")
    assert cfg["encoder_weights"] is None and cfg["in_channels"] == 1
    n_classes = len(cfg["doll"]["classes"])
    with torch.no_grad():
        assert model.eval()(torch.zeros(1, 1, SIZE, SIZE)).shape == (1, n_classes, SIZE, SIZE)
    assert read(pipeline["pretrain"] / "metrics.json")["finished"]


@pytest.mark.parametrize("mode", ["full", "adapter", "head"])
def test_finetune_modes_from_doll_init(pipeline, tmp_path, mode):
    out = tmp_path / mode
    cli("finetune", "--task", "jsrt", "--dataset", "jsrt", "--root", pipeline["phantom"] / "anatomy",
        "--init", pipeline["pretrain"], "--mode", mode, "--label-fraction", 0.5, "--epochs", 2, "--out", out)
    m = read(out / "metrics.json")
    assert set(m["per_structure"]) == {"left lung", "right lung", "heart", "left clavicle", "right clavicle"}
    assert 0 <= m["mean_iou"] <= 1 and 0 <= m["mean_dice"] <= 1
    assert m["n_train"] == max(1, round(0.5 * m["n_train_total"]))
    assert len(m["runs"][0]["curve"]) == 2
    from safetensors.torch import load_file

    weights = load_file(str(out / "model" / "model.safetensors"))
    head = sum(v.numel() for k, v in weights.items() if k.startswith("segmentation_head."))
    adapters = sum(v.numel() for k, v in weights.items() if k.startswith("adapters."))
    if mode == "full":  # every weight the network runs; smp's unused encoder stages are frozen and counted apart
        assert m["trainable_params"] == m["total_params"] and m["runs"][0]["unused_params"] > 0
        assert adapters == 0
    elif mode == "adapter":
        assert adapters > 0 and m["trainable_params"] == head + adapters < 0.2 * m["total_params"]
    else:  # the new head alone
        assert adapters == 0 and m["trainable_params"] == head


def test_adapter_mode_leaves_pretrained_weights_untouched(pipeline, tmp_path):
    from safetensors.torch import load_file

    out = tmp_path / "ad"
    cli("finetune", "--task", "jsrt", "--dataset", "jsrt", "--root", pipeline["phantom"] / "anatomy",
        "--init", pipeline["pretrain"], "--mode", "adapter", "--epochs", 2, "--out", out)
    before = load_file(str(pipeline["pretrain"] / "model.safetensors"))
    after = load_file(str(out / "model" / "model.safetensors"))
    shared = [k for k in before if not k.startswith("segmentation_head")]
    assert shared and all(torch.equal(before[k], after[k]) for k in shared)
    adapters = [k for k in after if k.startswith("adapters")]
    assert adapters and any(after[k].abs().sum() > 0 for k in adapters if k.endswith("up.weight"))


def test_finetune_learns_on_phantom_anatomy(phantom, tmp_path):
    """From random init with all masks, a few epochs must clearly beat an empty prediction."""
    cli("finetune", "--task", "jsrt", "--dataset", "jsrt", "--root", phantom / "anatomy", "--init", "random",
        "--encoder", "resnet18", "--image-size", SIZE, "--epochs", 8, "--lr", 3e-3, "--out", tmp_path / "r")
    m = read(tmp_path / "r" / "metrics.json")
    lungs = (m["per_structure"]["left lung"]["iou"] + m["per_structure"]["right lung"]["iou"]) / 2
    assert lungs > 0.4, m["per_structure"]


def test_finetune_covid_task_reports_positives_and_false_positive_area(phantom, tmp_path, monkeypatch):
    """--task covid on a generic folder data set with infection masks, empty on negatives."""
    import shutil

    import cv2

    root = tmp_path / "folder"
    (root / "images").mkdir(parents=True)
    (root / "masks" / "infection").mkdir(parents=True)
    lines = ["image,split"]
    for i, img in enumerate(sorted((phantom / "anatomy" / "images").glob("*.png"))):
        shutil.copy(img, root / "images" / img.name)
        mask = cv2.imread(str(phantom / "anatomy" / "masks" / "heart" / img.name), 0)
        cv2.imwrite(str(root / "masks" / "infection" / img.name), mask if i % 2 else mask * 0)
        lines.append(f"{img.stem},{'test' if i % 3 == 0 else 'train'}")
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    cli("finetune", "--task", "covid", "--dataset", "folder", "--root", root, "--init", "random",
        "--encoder", "resnet18", "--image-size", SIZE, "--epochs", 2, "--out", tmp_path / "c")
    m = read(tmp_path / "c" / "metrics.json")
    assert m["structures"] == ["infection"] and m["test_split"] == "test"
    assert 0 <= m["positives_mean_iou"] <= 1 and 0 <= m["negatives_false_positive_area"] <= 1
    assert m["runs"][0]["positives"]["n"] + m["runs"][0]["negatives"]["n"] == m["n_test"]
    # the scoring itself, on known predictions: exact masks on positives, one row of pixels on negatives
    from doll.finetuning import segment as ft

    def known_predictions(model, task, dataset, batch_size, device, *a, **k):
        truth = np.asarray(dataset.masks) > 0
        pred = truth.copy()
        negative = ~truth.any(axis=(1, 2, 3))
        pred[negative, :, 0, :] = True
        return {"pred": pred, "truth": truth}

    monkeypatch.setattr(ft, "predict_all", known_predictions)
    cli("finetune", "--task", "covid", "--dataset", "folder", "--root", root, "--init", "random",
        "--encoder", "resnet18", "--image-size", SIZE, "--epochs", 1, "--out", tmp_path / "k")
    k = read(tmp_path / "k" / "metrics.json")
    assert k["positives_mean_iou"] == 1.0 and k["negatives_false_positive_area"] == pytest.approx(1 / SIZE)


def test_pretrain_with_auxiliary_head_then_finetune(pipeline, tmp_path):
    import segmentation_models_pytorch as smp

    pre = tmp_path / "pre_aux"
    cli("pretrain", "--labels", pipeline["labels"], "--out", pre, "--encoder", "resnet18", "--epochs", 1,
        "--batch-size", 8, "--aux")
    cfg = read(pre / "config.json")
    assert cfg["doll"]["aux"] and cfg["aux_params"]["classes"] == len(cfg["doll"]["classes"])
    masks, labels = smp.from_pretrained(str(pre)).eval()(torch.zeros(1, 1, SIZE, SIZE))
    assert labels.shape == (1, len(cfg["doll"]["classes"]))
    cli("finetune", "--task", "jsrt", "--dataset", "jsrt", "--root", pipeline["phantom"] / "anatomy",
        "--init", pre, "--epochs", 1, "--out", tmp_path / "ft")
    out = smp.from_pretrained(str(tmp_path / "ft" / "model")).eval()(torch.zeros(1, 1, SIZE, SIZE))
    assert out.shape == (1, 5, SIZE, SIZE)  # the auxiliary head is dropped for fine-tuning


def test_refine_with_a_model_pretrained_with_aux_head(pipeline, tmp_path):
    pre = tmp_path / "pre_aux"
    cli("pretrain", "--labels", pipeline["labels"], "--out", pre, "--encoder", "resnet18", "--epochs", 1,
        "--batch-size", 8, "--aux", "--quiet")
    cli("labels", "refine", pipeline["labels"], "--model", pre, "--out", tmp_path / "r.h5")
    import h5py

    with h5py.File(pipeline["labels"], "r") as a, h5py.File(tmp_path / "r.h5", "r") as b:
        assert b["saliency"].shape == a["saliency"].shape and b["done"][:].all()
        assert np.array_equal(b["targets"][:], a["targets"][:])


def test_pretrain_targets_keep_absent_classes_empty_even_when_explained(tmp_path):
    """Targets read row by row (LabelRows): the rule where explained, empty where the label says absent."""
    import pickle

    from doll.labels.rule import apply_rule
    from doll.labels import store
    from doll.pretraining.train import LabelRows

    rng = np.random.default_rng(0)
    n = 4
    rows = {"saliency": rng.integers(1, 256, (n, 2, 8, 8), dtype=np.uint8), "images": np.zeros((n, 8, 8), np.uint8),
            "targets": np.ones((n, 2), bool),  # --targets all: every class explained on every image
            "labels": np.array([[1, 0], [0, 1], [np.nan, -1], [0, 0]], np.float32),
            "probs": np.full((n, 2), 0.5, np.float32), "done": np.ones(n, bool), "paths": [str(i) for i in range(n)]}
    store.write_label_file(tmp_path / "l.h5", rows, {"classes": ["a", "b"], "method": "ig", "settings": {},
                                                     "label_rule": "otsu", "image_size": 8, "dataset": "phantom"})
    with store.LabelFile(tmp_path / "l.h5") as lf:
        data = LabelRows(lf, np.array([0, 1, 2, 3]), "otsu", soft=False)
        soft = LabelRows(lf, np.array([2, 3]), "otsu", soft=True)
    masks = np.stack([data.masks[j] for j in range(n)])  # the file is closed: each reader has its own handle
    absent = data.labels == 0
    assert data.names == ["a", "b"] and (data.valid == 1).all() and masks.dtype == np.float16
    assert not masks[absent].any() and masks[~absent].any(axis=(-2, -1)).all()
    assert np.array_equal(masks[~absent], apply_rule(rows["saliency"][~absent], "otsu"))
    assert np.array_equal(data.images[1], rows["images"][1]) and len(data.images) == n
    assert np.allclose(soft.masks[0], rows["saliency"][2] / 255.0, atol=1e-3)  # row 2 of the file
    assert not soft.masks[1].any()  # row 3: both classes absent
    again = pickle.loads(pickle.dumps(data))  # as a spawned DataLoader worker gets it
    assert np.array_equal(again.masks[0], masks[0])


def test_augmentation_moves_masks_with_their_image():
    import cv2

    from doll.data.dataset import augment

    img = np.zeros((64, 64), np.uint8)
    img[20:44, :6] = 255  # a structure touching the left edge: shifts and zooms mirror it into view
    for seed in range(40):
        out, m = augment(img, (img > 0).astype(np.uint8)[None], np.random.default_rng(seed))
        inside = cv2.erode((out > 127).astype(np.uint8), np.ones((3, 3), np.uint8)) > 0  # away from blurred edges
        assert not (inside & (m[0] == 0)).any(), seed  # every bright pixel is labelled, mirrored copies too


def test_pretrain_validation_holds_out_whole_patients(pipeline, tmp_path):
    import re
    import shutil

    import h5py

    from doll.labels.store import LabelFile
    from doll.pretraining.train import row_patients

    assert read(pipeline["pretrain"] / "metrics.json")["validation_split_by"] == "patients"
    with LabelFile(pipeline["labels"]) as lf:
        patients, unit = row_patients(lf)
        paths = lf.paths()
    assert unit == "patients" and all(re.search(r"patient\d+", q).group(0) == p for q, p in zip(paths, patients))
    moved = tmp_path / "moved.h5"  # the data set is not where the file says: each row is its own "patient"
    shutil.copy(pipeline["labels"], moved)
    with h5py.File(moved, "a") as f:
        f.attrs["root"] = str(tmp_path / "nowhere")
    with LabelFile(moved) as lf:
        assert row_patients(lf) == (paths, "images")


def test_pretrain_reads_label_rows_on_demand(tmp_path):
    """Opening a label file for pretraining holds the per-row flags, not the images and masks."""
    import tracemalloc

    from doll.labels import store
    from doll.pretraining.train import LabelRows

    n, c, size = 200, 4, 64
    rng = np.random.default_rng(0)
    rows = {"saliency": rng.integers(0, 256, (n, c, size, size), dtype=np.uint8),
            "images": rng.integers(0, 256, (n, size, size), dtype=np.uint8), "targets": np.ones((n, c), bool),
            "labels": np.ones((n, c), np.float32), "probs": np.full((n, c), 0.5, np.float32),
            "done": np.ones(n, bool), "paths": [str(i) for i in range(n)]}
    store.write_label_file(tmp_path / "l.h5", rows, {"classes": list("abcd"), "method": "ig", "settings": {},
                                                     "label_rule": "otsu", "image_size": size, "dataset": "phantom"})
    del rows
    dense = n * c * size * size * 2 + n * size * size  # float16 masks + uint8 images
    with store.LabelFile(tmp_path / "l.h5") as lf:
        tracemalloc.start()
        data = LabelRows(lf, np.arange(n), "otsu", soft=False)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert peak < 0.05 * dense, (peak, dense)
    assert data.masks[n - 1].shape == (c, size, size) and data.masks[n - 1].any()


def test_validation_iou_is_reduced_per_image_on_the_device():
    """SegmentationObjective.scored keeps (N, C) sums, not masks; metrics gives the IoU of the whole masks."""
    from doll.pretraining.train import SegmentationObjective

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 3, 16, 16, generator=g)
    mask = (torch.rand(6, 3, 16, 16, generator=g) > 0.6).float()
    mask[0, 1] = 0  # class absent on image 0: left out of its class mean
    valid = torch.ones(6, 3)
    valid[1, 2] = 0  # map unknown: left out
    out = SegmentationObjective.scored(logits, {"mask": mask, "valid": valid})
    assert {k: v.shape for k, v in out.items()} == {k: (6, 3) for k in ("inter", "union", "present", "valid")}
    pred, truth = (logits > 0).numpy(), (mask >= 0.5).numpy()
    per = []
    for k in range(3):
        ious = [(pred[i, k] & truth[i, k]).sum() / (pred[i, k] | truth[i, k]).sum()
                for i in range(6) if truth[i, k].any() and valid[i, k] > 0]
        per.append(np.mean(ious))
    assert SegmentationObjective(["a", "b", "c"]).metrics(out)["iou"] == pytest.approx(np.mean(per), abs=1e-12)


def test_pretrained_lr_slows_the_pretrained_layers_only(pipeline, tmp_path, capsys):
    """--pretrained-lr 0.1: every weight the pretrained folder filled trains at a tenth of
    --lr, the new head at --lr (issue 28's lower learning rate for pretrained layers)."""
    from doll.models.checkpoint import load_train_state
    from test_errors import expect_error

    run = ("finetune", "--task", "jsrt", "--dataset", "jsrt", "--root", pipeline["phantom"] / "anatomy")
    out = tmp_path / "slow"
    cli(*run, "--init", pipeline["pretrain"], "--pretrained-lr", 0.1, "--max-steps", 2, "--out", out)
    groups = load_train_state(out / "model" / "last.pt")["optimizer"]["param_groups"]
    assert sorted(g["initial_lr"] for g in groups) == pytest.approx([1e-4, 1e-3])
    weights = read(out / "metrics.json")["trainable_params"]
    from safetensors.torch import load_file

    head = sum(v.numel() for k, v in load_file(str(out / "model" / "model.safetensors")).items()
               if k.startswith("segmentation_head."))
    fast = next(g for g in groups if g["initial_lr"] == pytest.approx(1e-3))
    assert len(fast["params"]) == 2 and head < weights  # the head's weight and bias
    expect_error(capsys, "pretrained --init", *run, "--pretrained-lr", 0.1, "--out", tmp_path / "r")
    expect_error(capsys, "--mode full only", *run, "--init", pipeline["pretrain"], "--mode", "adapter",
                 "--pretrained-lr", 0.1, "--out", tmp_path / "a")
    expect_error(capsys, "--pretrained-lr", *run, "--init", pipeline["pretrain"], "--pretrained-lr", 0,
                 "--out", tmp_path / "z")
