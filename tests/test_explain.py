"""Integrated Gradients equals Captum's; distillation and label rules; resume gives identical files."""
from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch

from doll.errors import DollError
from doll.explanation.distill import distill
from doll.labels.rule import apply_rule
from doll.explanation.ig import IntegratedGradients
from doll.models.classifier import build_classifier


@pytest.mark.parametrize("baseline", ["zero", "blur"])
def test_ig_matches_captum(baseline):
    from conftest import assert_ig_matches_captum  # also run on imported classifiers (test_import_classifiers.py)

    torch.manual_seed(0)
    model = build_classifier("resnet18", 5).eval()
    assert_ig_matches_captum(model, torch.randn(3, 1, 32, 32), [[0, 2, 4], [1], []], baseline)


def test_evidence_outputs():
    """--evidence abnormal explains minus the normal logit, contrast the class logit minus it (IG is linear in
    the output, so the maps are the same differences of the plain class maps)."""
    from doll.explanation.base import EvidenceOutput, normal_class

    torch.manual_seed(0)
    model = build_classifier("resnet18", 3).eval()
    x = torch.randn(2, 1, 32, 32)
    assert normal_class(["COVID-19", "Non-COVID", "Normal"], "abnormal") == 2
    assert normal_class(["Edema"], "class") is None
    with pytest.raises(DollError, match="needs a normal class"):
        normal_class(["Edema", "Nodule"], "contrast")
    ig = IntegratedGradients(steps=8)
    plain = ig.attribute(EvidenceOutput(model, "class", None), x, [[0, 1, 2]] * 2)
    abnormal = ig.attribute(EvidenceOutput(model, "abnormal", 2), x, [[0], [1]])
    contrast = ig.attribute(EvidenceOutput(model, "contrast", 2), x, [[0, 1]] * 2)
    for i in range(2):
        scale = np.abs(plain[i]).max()
        assert np.abs(abnormal[i][0] + plain[i][2]).max() <= 1e-4 * scale
        assert np.abs(contrast[i] - (plain[i][:2] - plain[i][2:])).max() <= 1e-4 * scale


def test_explain_abnormal_evidence_gives_each_class_of_an_image_the_same_map(pipeline, tmp_path, capsys):
    import json

    from conftest import cli

    out = tmp_path / "ab.h5"
    capsys.readouterr()
    cli("explain", "--classifiers", pipeline["classifiers"], "--dataset", "phantom", "--root", pipeline["phantom"],
        "--out", out, "--steps", 4, "--evidence", "abnormal", "--targets", "all", "--split", "valid")
    printed = capsys.readouterr().out  # the summary shows whether --steps was enough
    metrics = json.loads(out.with_name("ab.h5.metrics.json").read_text())
    median = round(metrics["completeness_rel_error"]["median"], 4)
    assert f"completeness_rel_error: {{'median': {median}, 'p90': " in printed, printed
    by_member = metrics["completeness_rel_error_by_member"]  # which member's --steps fall short
    assert sorted(by_member) == ["member_0", "member_1"]
    assert "completeness_rel_error_by_member: {'member_0': {'median': " in printed, printed
    medians = [m["median"] for m in by_member.values()]
    assert min(medians) <= metrics["completeness_rel_error"]["median"] <= max(medians)
    assert max(m["max"] for m in by_member.values()) == metrics["completeness_rel_error"]["max"]
    with h5py.File(out, "r") as f:
        assert json.loads(f.attrs["settings"])["evidence"] == "abnormal"
        sal, tmask = f["saliency"][:], f["targets"][:]
        classes = json.loads(f.attrs["classes"])
    assert "No Finding" in classes and not tmask[:, classes.index("No Finding")].any()
    for s, t in zip(sal, tmask):
        explained = s[t]
        assert len(explained) > 1 and (explained == explained[0]).all()
    assert sal[tmask].any()


def test_ig_completeness_improves_with_steps():
    torch.manual_seed(0)
    model = build_classifier("resnet18", 3).eval()
    x = torch.randn(2, 1, 32, 32)
    errs = []
    for steps in (2, 32):
        ig = IntegratedGradients(steps=steps)
        maps = ig.attribute(model, x, [[0, 1], [2]])
        errs.append(np.median(maps.diagnostics["completeness_rel_error"]))
    assert errs[1] < errs[0]


def test_distill_and_rules():
    a = np.zeros((2, 32, 32), np.float32)
    a[0, 5:10, 5:10] = 1.0
    a[1] = -1.0  # no positive evidence
    sal = distill([a, a * 2])
    assert sal.dtype == np.uint8 and sal[0].max() == 255 and sal[1].max() == 0
    lab = apply_rule(sal, "otsu")
    assert lab[0, 7, 7] and not lab[0, 25, 25] and not lab[1].any()
    assert apply_rule(sal, "quantile:0.99")[0].sum() <= apply_rule(sal, "quantile:0.9")[0].sum()
    with pytest.raises(DollError):
        apply_rule(sal, "quantile:2")
    two = np.zeros((1, 4, 4), np.uint8)
    two[0, 0, :] = 100
    two[0, 1, :] = 200
    assert apply_rule(two, "otsu")[0].sum() == 4  # the bright level only, as cv2's Otsu splits them
    one = np.zeros((1, 4, 4), np.uint8)
    one[0, 0, :2] = 7
    assert apply_rule(one, "otsu")[0].sum() == 2  # a single level: the whole map


def _distill_with_opencv(member_maps, smooth, field=None):
    """The distillation as doll did it before 2026-12-06 (cv2.GaussianBlur, np.percentile), per map."""
    import cv2

    def normalise(a):
        a = cv2.GaussianBlur(np.maximum(a, 0).astype(np.float32), (0, 0), smooth * a.shape[-1])
        scale = np.percentile(a, 99)
        return np.zeros_like(a) if scale <= 0 else np.clip(a / scale, 0, 1)

    mean = np.stack([[normalise(m) for m in maps] for maps in member_maps]).mean(axis=0)
    return np.round((mean if field is None else mean * field[None]) * 255).astype(np.uint8)


@pytest.mark.parametrize("shape,smooth", [((3, 64, 64), 0.03), ((2, 40, 48), 0.03), ((2, 16, 16), 0.5)])
def test_distill_on_the_device_gives_opencv_and_numpy_numbers(shape, smooth):
    """explain distils on the device that explained (torch); the numbers are cv2's blur (reflected borders, also
    where the kernel is wider than the map) and numpy's percentile: at most 1 of 255 apart, and rarely."""
    import cv2

    from doll.explanation.distill import gaussian_matrix

    rng = np.random.default_rng(1)
    maps = [np.stack([cv2.GaussianBlur(rng.standard_normal(shape[1:], dtype=np.float32), (0, 0), 1.5)
                      for _ in range(shape[0])]) * 1e-3 for _ in range(3)]
    field = rng.random(shape[1:]).astype(np.float32)
    h, w = shape[1:]
    a = maps[0][0]
    blurred = (gaussian_matrix(h, smooth * w, "cpu") @ torch.from_numpy(a) @ gaussian_matrix(w, smooth * w, "cpu").T)
    assert np.allclose(blurred.numpy(), cv2.GaussianBlur(a, (0, 0), smooth * w), rtol=1e-4, atol=1e-6 * np.abs(a).max())
    for f in (None, field):
        ours, theirs = distill(maps, smooth=smooth, field=f), _distill_with_opencv(maps, smooth, f)
        diff = np.abs(ours.astype(int) - theirs.astype(int))
        assert diff.max() <= 1 and (diff > 0).mean() < 1e-3


def test_explain_refuses_maps_with_nan(pipeline, tmp_path, monkeypatch):
    from doll.explanation import run
    from doll.explanation.ig import IntegratedGradients

    original = IntegratedGradients.attribute

    def broken(self, model, images, targets):
        maps = original(self, model, images, targets)
        maps[1][...] = np.nan
        return maps

    monkeypatch.setattr(IntegratedGradients, "attribute", broken)
    with pytest.raises(DollError, match=r"the explanation of image \d+ \(.*\) by classifier member .* has NaN"):
        run.explain(classifiers=str(pipeline["classifiers"]), dataset="phantom", root=str(pipeline["phantom"]),
                    steps=2, block=16, progress=False, split="valid", targets="all", out=str(tmp_path / "nan.h5"))


def test_explain_assembles_stored_chunks_and_blocks_of_the_previous_layout(pipeline, tmp_path, monkeypatch):
    """Blocks hold each row's saliency chunk as the label file stores it: assembling deflates the images only.
    A block written by doll before 2026-12-06 (explained maps, `maps`) is still assembled (--resume after an
    upgrade)."""
    import zlib

    from doll.explanation import run
    from doll.labels import store

    args = dict(classifiers=str(pipeline["classifiers"]), dataset="phantom", root=str(pipeline["phantom"]),
                steps=2, block=16, progress=False)
    run.explain(**args, out=str(tmp_path / "ref.h5"))

    def killed_here(*a, **k):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:  # every block written, the label file not
        m.setattr(run, "write_label_file", killed_here)
        with pytest.raises(KeyboardInterrupt):
            run.explain(**args, out=str(tmp_path / "cut.h5"))
    block = tmp_path / "cut.h5.parts" / "block_0000000.npz"
    with np.load(block) as z:
        old = {k: z[k] for k in ("targets", "completeness")}
        ends = z["row_ends"].tolist()
        rows = [zlib.decompress(z["rows"].tobytes()[lo:hi]) for lo, hi in zip([0, *ends[:-1]], ends)]
    size = int(np.sqrt(len(rows[0]) // old["targets"].shape[1]))
    saliency = np.stack([np.frombuffer(r, np.uint8).reshape(-1, size, size) for r in rows])
    np.savez_compressed(block, maps=saliency[old["targets"]], **old)  # the layout of doll before 2026-12-06
    deflated, original = [], store.deflate_row
    monkeypatch.setattr(store, "deflate_row", lambda row: deflated.append(row.shape) or original(row))
    run.explain(**args, out=str(tmp_path / "cut.h5"), resume=True)
    n = len(old["targets"])
    with h5py.File(tmp_path / "ref.h5", "r") as a, h5py.File(tmp_path / "cut.h5", "r") as b:
        assert np.array_equal(a["saliency"][:], b["saliency"][:])
        images = len(b["images"])
    assert deflated.count((size, size)) == images  # the images
    assert deflated.count(saliency.shape[1:]) == n  # the old block's rows; the others copied as stored


def explain_recording_writes(run, **kwargs) -> list[str]:
    """``run.explain(**kwargs)``; returns the names of the block files it wrote."""
    original, written = run.PartsWriter.write, []

    def recording_write(self, block, **arrays):
        written.append(self.block_file(block).name)
        original(self, block, **arrays)

    run.PartsWriter.write = recording_write
    try:
        run.explain(**kwargs)
    finally:
        run.PartsWriter.write = original
    return written


@pytest.mark.parametrize("method", ["ig", "ig-smooth"])
def test_explain_resume_after_interrupted_run_gives_identical_file(pipeline, tmp_path, method):
    from doll.explanation import run

    args = dict(classifiers=str(pipeline["classifiers"]), dataset="phantom", root=str(pipeline["phantom"]),
                steps=4, block=16, progress=False, method=method)
    if method == "ig-smooth":  # 4 noisy copies per image: the few validation images, in small blocks
        args.update(split="valid", steps=2, block=4)
    run.explain(**args, out=str(tmp_path / "ref.h5"))
    cut, parts = tmp_path / "cut.h5", tmp_path / "cut.h5.parts"
    original, calls = run.PartsWriter.write, {"n": 0}

    def dying_write(self, block, **arrays):  # the process dies after its first finished block
        calls["n"] += 1
        if calls["n"] > 1:
            raise KeyboardInterrupt
        original(self, block, **arrays)

    run.PartsWriter.write = dying_write
    try:
        with pytest.raises(KeyboardInterrupt):
            run.explain(**args, out=str(cut))
    finally:
        run.PartsWriter.write = original
    assert parts.exists() and not cut.exists()  # no half-written label file
    with pytest.raises(DollError, match="--resume"):
        run.explain(**args, out=str(cut))
    with pytest.raises(DollError, match="different settings"):
        run.explain(**{**args, "steps": 5}, out=str(cut), resume=True)
    done_before = {p.name for p in parts.glob("block_*.npz")}
    written = explain_recording_writes(run, **args, out=str(cut), resume=True)
    assert len(done_before) == 1 and written and not done_before & set(written)  # finished blocks are kept
    assert not parts.exists()
    with h5py.File(tmp_path / "ref.h5", "r") as a, h5py.File(cut, "r") as b:
        for key in ("saliency", "targets", "labels", "probs", "images", "done"):
            assert np.array_equal(a[key][:], b[key][:], equal_nan=key == "labels"), key
    if method == "ig":  # after running out of GPU memory: resume with a smaller --batch-size
        with pytest.raises(KeyboardInterrupt):
            run.PartsWriter.write, calls["n"] = dying_write, 0
            try:
                run.explain(**args, out=str(tmp_path / "cut2.h5"))
            finally:
                run.PartsWriter.write = original
        run.explain(**args, out=str(tmp_path / "cut2.h5"), resume=True, batch_size=8)
        with h5py.File(tmp_path / "ref.h5", "r") as a, h5py.File(tmp_path / "cut2.h5", "r") as b:
            assert np.array_equal(a["saliency"][:], b["saliency"][:])
            assert np.allclose(a["probs"][:], b["probs"][:], atol=1e-6)  # other batches: float rounding only


def test_explain_resume_on_changed_data_or_unknown_blocks_is_refused(pipeline, tmp_path):
    import shutil

    from doll.explanation import run

    root = tmp_path / "phantom"
    shutil.copytree(pipeline["phantom"], root)
    args = dict(classifiers=str(pipeline["classifiers"]), dataset="phantom", root=str(root), steps=2, block=16,
                progress=False)
    original = run.PartsWriter.write

    def dying_write(self, block, **arrays):
        original(self, block, **arrays)
        raise KeyboardInterrupt

    run.PartsWriter.write = dying_write
    try:
        with pytest.raises(KeyboardInterrupt):
            run.explain(**args, out=str(tmp_path / "cut.h5"))
    finally:
        run.PartsWriter.write = original
    csv = next(root.glob("CheXpert-*/train.csv"))
    csv.write_text("".join(csv.read_text().splitlines(keepends=True)[:-1]))  # one image fewer
    with pytest.raises(DollError, match="--resume with other images or labels"):
        run.explain(**args, out=str(tmp_path / "cut.h5"), resume=True)
    (tmp_path / "cut.h5.parts" / "settings.json").unlink()  # blocks of an unknown run are never reused
    with pytest.raises(DollError, match="holds blocks but no settings.json"):
        run.explain(**args, out=str(tmp_path / "cut.h5"))
    run.explain(**args, out=str(tmp_path / "cut.h5"), overwrite=True)
    with h5py.File(tmp_path / "cut.h5", "r") as f:
        assert f["done"][:].all()


def test_explain_kill9_then_resume_gives_identical_file(pipeline, tmp_path):
    """A real `kill -9` while blocks are being written; `--resume` finishes the same file."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from doll.explanation import run

    args = dict(classifiers=str(pipeline["classifiers"]), dataset="phantom", root=str(pipeline["phantom"]),
                steps=16, block=2, progress=False)  # many small blocks: the kill lands mid-run
    run.explain(**args, out=str(tmp_path / "ref.h5"))
    cut = tmp_path / "cut.h5"
    code = f"from doll.explanation.run import explain; explain(**{args!r}, out={str(cut)!r})"
    proc = subprocess.Popen([sys.executable, "-c", code], env={**os.environ, "OMP_NUM_THREADS": "1"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    parts = tmp_path / "cut.h5.parts"
    deadline = time.time() + 120
    while time.time() < deadline and len(list(parts.glob("block_*.npz"))) < 3:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not cut.exists() and len(list(parts.glob("block_*.npz"))) >= 3
    kept = {p.name for p in parts.glob("block_*.npz")}
    rewritten = explain_recording_writes(run, **args, out=str(cut), resume=True)
    assert not kept & set(rewritten)  # the blocks finished before the kill were not explained again
    with h5py.File(tmp_path / "ref.h5", "r") as a, h5py.File(cut, "r") as b:
        for key in ("saliency", "targets", "labels", "probs", "images", "done"):
            assert np.array_equal(a[key][:], b[key][:], equal_nan=key == "labels"), key


def test_average_precision():
    from doll.labels.evaluate import average_precision

    truth = np.zeros((4, 4), np.uint8)
    truth[0, :2] = 1
    perfect = truth.astype(float) + 0.01 * np.arange(16).reshape(4, 4)
    assert average_precision(perfect, truth) == pytest.approx(1.0)
    worst = 1 - truth.astype(float)
    assert average_precision(worst, truth) == pytest.approx((1 / 15 + 2 / 16) / 2)


def test_explain_with_lung_model_keeps_saliency_in_the_lung_field(pipeline, tmp_path, monkeypatch):
    import json

    from conftest import SIZE, cli

    from doll.models.lung_field import predict_lung_fields

    cli("finetune", "--task", "lung", "--dataset", "jsrt", "--root", pipeline["phantom"] / "anatomy", "--init",
        "random", "--encoder", "resnet18", "--image-size", SIZE, "--epochs", 2, "--out", tmp_path / "lung")
    out = tmp_path / "lf.h5"
    monkeypatch.chdir(tmp_path)  # a relative --lung-model is recorded absolute: refine finds it from anywhere
    cli("explain", "--classifiers", pipeline["classifiers"], "--dataset", "phantom", "--root", pipeline["phantom"],
        "--out", out, "--steps", 4, "--lung-model", "lung/model")
    with h5py.File(out, "r") as f:
        assert json.loads(f.attrs["settings"])["field_model"] == str((tmp_path / "lung" / "model").resolve())
        assert json.loads(f.attrs["settings"])["field_margin"] == 0.01
        # saliency lives inside the predicted lung mask dilated by --field-margin (1 % by default)
        fields = predict_lung_fields(str(tmp_path / "lung" / "model"), f["images"][:], torch.device("cpu"), 16, 0.01)
        sal = f["saliency"][:]
        assert sal[np.broadcast_to(fields[:, None] == 0, sal.shape)].max() == 0
    with pytest.raises(DollError, match="not a `doll finetune --task lung` model"):
        predict_lung_fields(str(pipeline["pretrain"]), np.zeros((1, SIZE, SIZE), np.uint8), torch.device("cpu"), 1)
    # labels refine can give a file with no field (the pipeline's) a new one: the mask itself at margin 0
    from doll.labels.tools import refine

    refined = tmp_path / "refined.h5"
    cli("labels", "refine", pipeline["labels"], "--model", pipeline["pretrain"], "--out", refined,
        "--lung-model", "lung/model", "--field-margin", 0, "--quiet")
    with h5py.File(refined, "r") as f:
        settings = json.loads(f.attrs["settings"])
        assert settings["field_model"] == str((tmp_path / "lung" / "model").resolve()) and settings["field_margin"] == 0
        masks = predict_lung_fields(str(tmp_path / "lung" / "model"), f["images"][:], torch.device("cpu"), 16, 0)
        sal = f["saliency"][:]
        assert sal.any() and sal[np.broadcast_to(masks[:, None] == 0, sal.shape)].max() == 0
    with pytest.raises(DollError, match="has no lung field; --field-margin needs --lung-model"):
        refine(str(pipeline["labels"]), str(pipeline["pretrain"]), str(tmp_path / "x.h5"), field_margin=0.0)
    with pytest.raises(DollError, match=r"--field-margin must be in \[0, 0.5\)"):
        refine(str(refined), str(pipeline["pretrain"]), str(tmp_path / "x.h5"), field_margin=0.5)
    # classifiers trained on the lung field alone: explain masks their inputs the same way, unasked
    lung = tmp_path / "lung" / "model"
    cli("train-classifiers", "--dataset", "phantom", "--root", pipeline["phantom"], "--out", tmp_path / "lcls",
        "--members", 1, "--epochs", 1, "--image-size", SIZE, "--batch-size", 16, "--lung-model", lung)
    cfg = json.loads((tmp_path / "lcls" / "member_0" / "config.json").read_text())
    assert cfg["doll"]["lung_model"] == str(lung.resolve())
    out2 = tmp_path / "lcls.h5"
    cli("explain", "--classifiers", tmp_path / "lcls", "--dataset", "phantom", "--root", pipeline["phantom"],
        "--out", out2, "--steps", 4)
    with h5py.File(out2, "r") as f:
        sal = f["saliency"][:]
        assert sal.any() and sal[np.broadcast_to(fields[:, None] == 0, sal.shape)].max() == 0
    # evaluate-labels scores the lung field alone next to the labels: what do explanations add?
    from doll.labels.evaluate import evaluate_labels

    for labels in (out, out2):
        m = evaluate_labels(str(labels), progress=False)
        assert m["field_model"] == str(lung.resolve())
        assert set(m["field_prior"]) == set(m["mean"]) and 0 <= m["field_prior"]["topk_iou"] <= 1


def test_evaluate_labels_against_nih_boxes(tmp_path):
    """NIH has boxes, not masks: saliency equal to the box scores 1, its complement ~0."""
    from test_formats import nih_fixture

    from doll.data import open_dataset
    from doll.labels.evaluate import box_mask, evaluate_labels
    from doll.labels.store import write_label_file

    root = nih_fixture(tmp_path / "nih")
    ds = open_dataset("nih", root)
    classes = list(ds.classes)
    item = next(it for it in ds.items("train") if it.boxes)
    size = 32
    box = box_mask(item, "Infiltration", size)  # x 16..20 of 32 wide, y 16..20 of 64 high -> rows 8..10, cols 16..20
    assert box.sum() == 2 * 4 and box[8:10, 16:20].all()
    items = ds.items("train")
    n, c = len(items), len(classes)
    sal = np.zeros((n, c, size, size), np.uint8)
    targets = np.zeros((n, c), bool)
    row = [it.id for it in items].index(item.id)
    for name, pattern in (("Infiltration", box * 255), ("Mass", (1 - box_mask(item, "Mass", size)) * 255)):
        k = classes.index(name)
        sal[row, k] = pattern
        targets[row, k] = True
    out = tmp_path / "nih.h5"
    write_label_file(out, {"saliency": sal, "targets": targets, "labels": np.zeros((n, c), np.float32),
                           "probs": np.zeros((n, c), np.float32), "images": np.zeros((n, size, size), np.uint8),
                           "paths": [it.id for it in items], "done": np.ones(n, bool)},
                     {"classes": classes, "label_rule": "threshold:128", "image_size": size, "dataset": "nih",
                      "root": str(root), "split": "train", "settings": {"smooth": 0.0}})
    m = evaluate_labels(str(out), progress=False)
    assert m["pairs"] == 2
    inf = m["per_class"]["Infiltration"]
    assert inf["iou"] == 1.0 and inf["topk_iou"] == 1.0 and inf["pointing"] == 1.0
    mass = m["per_class"]["Mass"]  # the Mass box is the whole image: the complement saliency is all zero
    assert mass["iou"] == 0.0 and "lung_prior" not in m
