"""Segmentation for classification (`doll finetune --task seg4cls`) on a small phantom."""
from __future__ import annotations

import json

import numpy as np
import pytest

from doll.data.phantom import make_phantoms
from doll.errors import DollError
from doll.data.base import class_structure_pairs
from doll.finetuning.seg4cls.data import pseudo_masks
from doll.finetuning.seg4cls.evaluate import conditioned_recall
from doll.finetuning.seg4cls.summarizers import (
    SUMMARIZERS,
    apply_summary_rule,
    fit_summary_rule,
    train_summarizer,
)
from doll.train.metrics import auroc

METHODS = [f"seg4cls_{k}" for k in SUMMARIZERS] + ["classifier", "multitask"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(autouse=True)
def _cache_env(monkeypatch, cache):
    monkeypatch.setenv("DOLL_CACHE", str(cache))


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    p = tmp_path_factory.mktemp("phantom")
    make_phantoms(p, n=60, size=32, seed=0, confound=0.5, progress=False)
    return p


def _argv(root, out, dataset="phantom", extra=()):
    return ["finetune", "--task", "seg4cls", "--dataset", dataset, "--root", str(root), "--init", "random",
            "--encoder", "resnet18", "--epochs", "2", "--label-fraction", "0.5", "--out", str(out), "--quiet",
            "--device", "cpu", *extra]


@pytest.fixture(scope="module")
def run(phantom, cache, tmp_path_factory):
    from doll_cli.main import main

    out = tmp_path_factory.mktemp("run") / "seg4cls"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DOLL_CACHE", str(cache))
        main(_argv(phantom, out))
    return out


def test_cli_writes_all_methods(run):
    m = json.loads((run / "metrics.json").read_text())
    assert m["command"] == "finetune" and m["task"] == "seg4cls"
    assert set(m["mean_auroc"]) == set(METHODS)
    assert len(m["classes"]) == 13 and "No Finding" not in m["classes"]
    for name in METHODS:
        meth = m["methods"][name]
        for v in [meth["mean_auroc"], *meth["auroc"].values()]:
            assert v is None or 0.0 <= v <= 1.0
        cr = meth["conditioned_recall"]  # every method, on the phantom's test positives
        assert cr is not None and set(cr["by_size"]) >= {"small", "medium", "large"}
    rule = m["methods"]["seg4cls_rule"]["thresholds"]
    assert set(rule) == set(m["classes"])
    for r in rule.values():
        assert r["t"] in (0.3, 0.5, 0.7, 0.9) and r["tau"] >= 0
    # the masks: half of the training images (the validation patients are carved out of train)
    assert m["n_masks"] == round(0.5 * m["n_train"]) and m["n_val"] > 0 and m["test_split"] == "valid"
    iou = m["segmenter"]["iou_on_test_positives"]["mean"]
    assert iou is not None and 0.0 <= iou <= 1.0
    curve = m["segmenter"]["curve"]  # validation IoU of the segmenter, about ten times over its steps
    steps = [r["step"] for r in curve]
    assert steps == sorted(set(steps)) and len(curve) >= 1 and curve[-1]["epoch"] == 2
    assert all(0.0 <= r["val_iou"] <= 1.0 for r in curve)
    assert "auroc" in m["robust_pneumothorax"]
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["task"] == "seg4cls" and cfg["label_fraction"] == 0.5 and cfg["summarizers"] == list(SUMMARIZERS)
    assert (run / "segmenter" / "model.safetensors").exists()
    assert m["semi_supervised"] is None and not (run / "student").exists()


def test_cli_rejects_dataset_without_class_masks(phantom, tmp_path, capsys):
    from doll_cli.main import main

    with pytest.raises(SystemExit) as exc:
        main(_argv(phantom / "anatomy", tmp_path / "o", dataset="jsrt"))
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:")


def test_cli_rejects_bad_fraction(phantom, tmp_path, capsys):
    from doll_cli.main import main

    argv = _argv(phantom, tmp_path / "o")
    argv[argv.index("--label-fraction") + 1] = "0"
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2 and "label-fraction" in capsys.readouterr().err


def test_class_structure_pairs():
    assert class_structure_pairs(["No Finding", "Edema"], ["Edema", "Fracture"]) == [("Edema", 1, "Edema")]
    assert class_structure_pairs(["COVID-19", "Non-COVID", "Normal"], ["infection", "lungs"]) == [
        ("COVID-19", 0, "infection")]
    assert class_structure_pairs(["Nodule"], ["left lung", "right lung"]) == []


def _blobs(n=40, size=24, seed=0):
    rng = np.random.default_rng(seed)
    y = (np.arange(n) % 2).astype(np.float32)
    prob = rng.uniform(0, 0.2, (n, 1, size, size)).astype(np.float32)
    for i in np.flatnonzero(y):
        r = rng.integers(2, 5)
        cy, cx = rng.integers(6, size - 6, 2)
        prob[i, 0, cy - r:cy + r, cx - r:cx + r] = rng.uniform(0.75, 1.0)
    return prob, y[:, None]


def test_rule_summarizer_on_blobs():
    prob, raw = _blobs()
    (p,) = fit_summary_rule(prob, raw)
    assert p["t"] >= 0.3 and 0 <= p["tau"] <= 15 and p["val_balanced_accuracy"] == 1.0
    test_prob, test_raw = _blobs(seed=1)
    scores, decisions = apply_summary_rule(test_prob, [p])
    assert auroc(scores[:, 0], test_raw[:, 0]) == 1.0
    assert (decisions[:, 0] == (test_raw[:, 0] == 1)).all()
    # unknown labels are ignored, a class without positives falls back to defaults
    raw2 = raw.copy()
    raw2[:5] = np.nan
    assert fit_summary_rule(prob, raw2)[0]["val_balanced_accuracy"] == 1.0
    assert fit_summary_rule(prob, np.zeros_like(raw))[0]["fallback"] is True


def test_trained_summarizers_and_recall_on_blobs():
    prob, raw = _blobs()
    test_prob, test_raw = _blobs(seed=1)
    # pooling is translation invariant; the 8x8 linear map must learn where blobs are, so it is weaker
    for kind, least in (("pool-linear", 0.9), ("linear", 0.6), ("cnn-mask", 0.6)):
        score = train_summarizer(kind, prob, raw, steps=100)
        assert auroc(score(test_prob)[:, 0], test_raw[:, 0]) > least, kind

    class T:  # a test split: the blobs are the ground-truth masks
        pass

    t = T()
    t.raw, t.masks, t.mask_ok = test_raw, (test_prob > 0.5).astype(np.uint8), np.ones_like(test_raw)
    cr = conditioned_recall(test_prob.max(axis=(2, 3)), t)
    assert cr["overall"]["recall"] == 1.0 and cr["overall"]["n"] == int(test_raw.sum())


def test_bad_summarizer_choice(phantom, tmp_path):
    from doll.finetuning.settings import FinetuneSettings
    from doll.finetuning.seg4cls.run import Seg4Cls

    s = FinetuneSettings(task="seg4cls", dataset="phantom", root=str(phantom), out=str(tmp_path / "o"))
    s.summarizer = "magic"
    with pytest.raises(DollError, match="summarizer"):
        Seg4Cls().run(s)
    assert not (tmp_path / "o").exists()


def test_embedding_summarizer_learns_from_features():
    rng = np.random.default_rng(0)
    y = (np.arange(80) % 2).astype(np.float32)[:, None]
    emb = rng.normal(size=(80, 32)).astype(np.float32)
    emb[:, 3] += 3.0 * y[:, 0]  # one informative feature among noise
    score = train_summarizer("embedding", emb[:40], y[:40], steps=150)
    out = score(emb[40:])
    assert out.shape == (40, 1) and auroc(out[:, 0], y[40:, 0]) > 0.85


def test_pseudo_masks_boosted_rule():
    class T:
        pass

    t = T()
    # 4 images x 2 classes; image 0 has real masks
    t.raw = np.array([[1, 0], [0, 1], [1, 1], [np.nan, -1]], np.float32)
    t.masks = np.zeros((4, 2, 4, 4), np.uint8)
    t.masks[0, 0, 1, 1] = 1
    t.mask_ok = np.ones((4, 2), np.float32)
    teacher = np.zeros((4, 2, 4, 4), np.float32)
    teacher[1, 0, 0, 0] = 0.9  # a negative with a teacher blob -> emptied when boosted
    teacher[2, 0, 2, 2] = 0.9  # a positive with a blob -> kept; image 2 class 1 positive but empty -> dropped
    teacher[3, 1, 3, 3] = 0.9  # unknown labels -> dropped when boosted
    teacher[0, 1, 0, 0] = 0.9  # image 0 keeps its real masks whatever the teacher says
    real = np.array([0])
    m, v = pseudo_masks(teacher, t, real, boosted=False)
    assert v.tolist() == [[1, 1]] * 4 and m[1, 0, 0, 0] == 1 and m[3, 1, 3, 3] == 1
    assert m[0, 1].sum() == 0 and m[0, 0, 1, 1] == 1
    m, v = pseudo_masks(teacher, t, real, boosted=True)
    assert v.tolist() == [[1, 1], [1, 0], [1, 0], [0, 0]]  # positives with an empty teacher mask dropped
    assert m[1, 0].sum() == 0 and m[2, 0, 2, 2] == 1 and m[0, 0, 1, 1] == 1


def _semi(phantom, cache, tmp_path, flag):
    from doll_cli.main import main

    out = tmp_path / flag.strip("-")
    main(_argv(phantom, out, extra=(flag, "--no-baselines", "--summarizer", "rule,embedding")))
    return json.loads((out / "metrics.json").read_text()), out


@pytest.mark.parametrize("flag", ["--pseudo", "--boosted"])
def test_cli_semi_supervised_student(phantom, cache, tmp_path, flag):
    m, out = _semi(phantom, cache, tmp_path, flag)
    semi = m["semi_supervised"]
    assert semi["mode"] == flag.strip("-")
    assert semi["pseudo_images"] == m["n_train"] - m["n_masks"]
    assert semi["pseudo_class_maps_used"] + semi["pseudo_class_maps_dropped"] == semi["pseudo_images"] * len(m["classes"])
    if flag == "--pseudo":
        assert semi["pseudo_class_maps_dropped"] == 0
    else:  # label-0 classes get empty maps, label-1 classes with an empty teacher mask are dropped
        assert semi["pseudo_class_maps_dropped"] > 0
    assert "mean" in semi["teacher_iou_on_test_positives"]
    # the student is the segmenter the summarizers read; no baselines were asked for
    assert (out / "student" / "model.safetensors").exists() and (out / "segmenter" / "model.safetensors").exists()
    assert set(m["mean_auroc"]) == {"seg4cls_rule", "seg4cls_embedding"}
    assert not (out / "classifier").exists()


def test_alternating_task_alternates_across_epochs():
    import torch

    from doll.finetuning.mixed import AlternatingTask, SegToClass

    class Data:
        epoch = 0

    seen = []

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(()))

        def forward(self, x):
            seen.append(float(x.flatten()[0]))
            seg = self.w * x.repeat(1, 2, 1, 1)
            return seg, seg.flatten(2).amax(-1)

    batch = {"image": torch.ones(2, 1, 4, 4), "seg_image": torch.zeros(2, 1, 4, 4),
             "mask": torch.zeros(2, 2, 4, 4), "valid": torch.ones(2, 2),
             "target": torch.ones(2, 2), "weight": torch.ones(2, 2)}
    for batches, expected in ((3, [0.0, 1.0, 0.0, 1.0, 0.0, 1.0]),  # seg, cls, seg | cls, seg, cls
                              (1, [0.0, 1.0, 0.0]),  # one batch per epoch: the losses still take turns
                              (2, [0.0, 1.0, 0.0, 1.0])):
        data, task = Data(), AlternatingTask(["a", "b"], Data(), batches)
        task.data = data
        seen.clear()
        for step in range(len(expected)):
            data.epoch = step // batches
            task.loss(Net(), batch)
        assert seen == expected, (batches, seen)
    from doll.train.engine import batches_per_epoch

    assert [batches_per_epoch(n, 16) for n in (8, 16, 17, 240)] == [1, 1, 1, 15]
    assert batches_per_epoch(31, 16, world=2) == 1 and batches_per_epoch(100, 16, world=2) == 3
    # max pooling: the class logit is the max of its segmentation logits
    seg = torch.nn.Conv2d(1, 3, 1)
    net = SegToClass(seg, 3, "max")
    x = torch.randn(2, 1, 8, 8)
    s, c = net(x)
    assert torch.allclose(c, s.amax(dim=(2, 3)))
    s, c = SegToClass(seg, 3, "amp-mlp")(x)
    assert c.shape == (2, 3)


def test_cli_mixed_alternating_vs_segmentation_only(phantom, cache, tmp_path, capsys):
    from doll_cli.main import main

    out = tmp_path / "mixed"
    argv = _argv(phantom, out)
    argv[argv.index("seg4cls")] = "mixed"
    main(argv)
    m = json.loads((out / "metrics.json").read_text())
    names = ["segmentation_only", "alternating_max", "alternating_amp-mlp"]
    assert m["task"] == "mixed" and set(m["mean_iou"]) == set(names) == set(m["mean_auroc"]) == set(m["mean_f1"])
    for name in names:
        seg = m["methods"][name]["segmentation"]
        assert seg["iou"] is None or 0 <= seg["iou"] <= seg["f1"] <= 1
        assert 0 <= m["mean_auroc"][name] <= 1
        assert (out / name / "model.safetensors").exists()
        # the learning curve: test IoU after each epoch, the last one the reported model's
        curve = m["methods"][name]["curve"]
        steps = [r["step"] for r in curve]
        assert steps == sorted(set(steps)) and curve[-1]["epoch"] == 2 and all(0 <= r["test_iou"] <= 1 for r in curve)
        if seg["iou"] is not None:
            assert abs(curve[-1]["test_iou"] - seg["iou"]) < 0.02, (curve, seg)
    # no validation split is carved: every training image is used
    assert m["n_masks"] == round(0.5 * m["n_train"]) and m["n_train"] > 40
    # a finished run resumes to the same result
    main([*argv, "--resume"])
    again = json.loads((out / "metrics.json").read_text())
    assert again["mean_iou"] == m["mean_iou"] and again["mean_auroc"] == m["mean_auroc"]
    bad = _argv(phantom, tmp_path / "bad", extra=("--pooling", "mean"))
    bad[bad.index("seg4cls")] = "mixed"
    with pytest.raises(SystemExit) as exc:
        main(bad)
    assert exc.value.code == 2 and "--pooling" in capsys.readouterr().err


def test_mixed_evaluates_on_valid_when_test_has_no_masks(tmp_path, monkeypatch):
    """COVID-QU-Ex ships Test without masks: mixed training scores segmentation on Val."""
    from test_formats import covidqu_fixture

    from doll.finetuning.settings import FinetuneSettings
    from doll.finetuning.seg4cls.data import load_parts

    root = covidqu_fixture(tmp_path / "cq")
    s = FinetuneSettings(task="mixed", dataset="covidqu", root=str(root), progress=False)
    names, _, train, _, test, split, _ = load_parts(s, 16, need_val=False, test_needs_masks=True)
    assert names == ["COVID-19"] and split == "valid" and len(test) == 3 and test.has_masks
    assert test.masks[test.raw[:, 0] == 1].sum() > 0
    _, _, _, val, test, split, _ = load_parts(s, 16)  # seg4cls: test for AUROC, valid for the summarizers
    assert split == "test" and not test.has_masks and len(val) == 3
