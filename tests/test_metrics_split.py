"""One metrics module and one split module (issue 35, item 4): the empty-mask rules of IoU and
Dice, the one patient hold-out, and no IoU computed outside ``doll.train.metrics``."""
from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from doll.data import open_dataset
from doll.data.splits import hold_out, patient_of
from doll.train.metrics import (
    EMPTY_MASK_RULE,
    EMPTY_RULES,
    iou_dice,
    mean_over_images,
    per_image_scores,
    segmentation_scores,
)
from doll.train.objectives import SegmentationObjective

DOLL = Path(__file__).resolve().parents[1] / "doll"


def masks(*cells):
    """(N, 1, 4, 4) bool masks, one image per tuple of lit pixels (row, col)."""
    out = np.zeros((len(cells), 1, 4, 4), bool)
    for i, lit in enumerate(cells):
        for r, c in lit:
            out[i, 0, r, c] = True
    return out


# image 0: both empty; 1: prediction only; 2: truth only; 3: 2 of 3 pixels shared
PRED = masks((), ((0, 0),), (), ((0, 0), (0, 1)))
TRUTH = masks((), (), ((1, 1),), ((0, 0), (0, 1), (0, 2)))


def test_empty_mask_rule_one_scores_both_empty_as_one():
    s = per_image_scores(PRED, TRUTH, empty="one")
    assert s["iou"][:, 0].tolist() == [1.0, 0.0, 0.0, 2 / 3]
    assert s["dice"][:, 0].tolist() == [1.0, 0.0, 0.0, 0.8]
    assert [iou_dice(p[0], t[0]) for p, t in zip(PRED, TRUTH)] == [(1.0, 1.0), (0.0, 0.0), (0.0, 0.0), (2 / 3, 0.8)]
    scores = segmentation_scores(PRED, TRUTH, ["x"])
    assert scores["mean_iou"] == pytest.approx((1 + 2 / 3) / 4) and scores["mean_dice"] == pytest.approx(1.8 / 4)
    assert "both empty scores 1" in EMPTY_MASK_RULE and EMPTY_RULES["one"] == EMPTY_MASK_RULE


def test_empty_mask_rule_skip_leaves_out_images_without_a_mask():
    s = per_image_scores(PRED, TRUTH, empty="skip")
    assert np.isnan(s["iou"][:2, 0]).all() and s["iou"][2:, 0].tolist() == [0.0, 2 / 3]
    assert mean_over_images(s["iou"]) == [pytest.approx(1 / 3)]
    # valid <= 0 (no ground truth) leaves an image out too; a structure with no image left: None
    assert mean_over_images(per_image_scores(PRED, TRUTH, empty="skip", valid=np.array([[1], [1], [0], [1]]))["iou"]) \
        == [pytest.approx(2 / 3)]
    assert mean_over_images(per_image_scores(PRED[:2], TRUTH[:2], empty="skip")["iou"]) == [None]
    # probabilities are counted above a threshold
    prob = np.where(PRED, 0.9, 0.2).astype(np.float16)
    assert np.array_equal(per_image_scores(prob, TRUTH, empty="skip", threshold=0.5)["iou"], s["iou"], equal_nan=True)
    with pytest.raises(ValueError, match="empty="):
        per_image_scores(PRED, TRUTH, empty="zero")


def test_engine_curve_counts_on_the_device_with_the_same_rule():
    """SegmentationObjective (pretrain's and seg4cls' curves) reduces to counts in torch and scores
    them with rule "skip": the same number as the numpy path."""
    task = SegmentationObjective(["x"])
    logits = torch.tensor(np.where(PRED, 3.0, -3.0), dtype=torch.float32)
    out = task.scored(logits, {"mask": torch.tensor(TRUTH, dtype=torch.float32)})
    assert out["inter"][:, 0].tolist() == [0, 0, 0, 2] and out["union"][:, 0].tolist() == [0, 1, 1, 3]
    assert task.metrics(out)["iou"] == pytest.approx(1 / 3)
    assert math.isnan(task.metrics({k: v[:2] for k, v in out.items()})["iou"])  # no image with the class


# --------------------------------------------------------------------------- one hold-out
def test_hold_out_is_the_one_function():
    import doll
    from doll.data import splits

    package = Path(doll.__file__).parent
    assert [f for f in sorted(package.rglob("*.py")) if "def hold_out(" in f.read_text()] == [Path(splits.__file__)]
    keys = [f"p{i}" for i in range(20)] * 2
    held = hold_out(keys, 0.2, seed=5)
    assert len(held) == 4 and held == hold_out(list(reversed(keys)), 0.2, seed=5)
    assert hold_out(keys, 0.0, seed=5) == set() and hold_out(["a"], 0.5) == set()


def test_finetune_and_seg4cls_hold_out_the_same_patients(tmp_path):
    """seg4cls' validation patients and finetune's test patients (a data set without a split with
    masks) are both ``hold_out`` of the train patients at 20 %: the same patients for the same
    patients and seed."""
    from test_formats import montgomery_fixture

    from doll.data.phantom import make_phantoms
    from doll.finetuning.seg4cls.data import VAL_FRACTION, load_parts
    from doll.finetuning.segment import HOLDOUT_FRACTION, load_task_data
    from doll.finetuning.settings import FinetuneSettings

    assert VAL_FRACTION == HOLDOUT_FRACTION
    phantom = tmp_path / "phantom"
    make_phantoms(phantom, n=30, size=32, seed=0, progress=False)
    s = FinetuneSettings(task="seg4cls", dataset="phantom", root=str(phantom), seed=3, progress=False)
    _, _, train, val, _, _, desc = load_parts(s, 16)
    patients = [patient_of(it) for it in open_dataset("phantom", phantom).items("train")]
    assert set(val.patients) == hold_out(patients, VAL_FRACTION, 3) and desc == "20% of train patients (seed 3)"
    assert set(train.patients).isdisjoint(val.patients)

    root = montgomery_fixture(tmp_path / "mont")  # 4 images with lung masks, all "train"
    s = FinetuneSettings(task="lung", dataset="montgomery", root=str(root), seed=3, progress=False)
    _, train, test, _ = load_task_data(s, 16)
    with_masks = [it for it in open_dataset("montgomery", root).items("train") if it.masks]
    assert {it.patient for it in test[2]} == hold_out([patient_of(it) for it in with_masks], HOLDOUT_FRACTION, 3)


def _qata(root: Path) -> Path:
    from test_formats import img

    for i in range(6):
        img(root / "Train Set" / "Images" / f"covid_{i}.png")
    img(root / "Test Set" / "Images" / "covid_0.png")
    return root


def _nih(root: Path) -> Path:
    from test_formats import img, nih_fixture

    nih_fixture(root)
    for i in range(5, 15):
        name = f"{i:08d}_000.png"
        img(root / "images" / name)
        with open(root / "Data_Entry_2017_v2020.csv", "a") as fh:
            fh.write(f"{name},No Finding,0,{i},50\n")
        with open(root / "train_val_list.txt", "a") as fh:
            fh.write(name + "\n")
    return root


@pytest.mark.parametrize("name", ["chexpert", "nih", "qata", "montgomery"])
def test_formats_carve_validation_with_the_one_hold_out(tmp_path, name):
    """``valid_fraction`` moves ``hold_out`` of the train patients, every image of each, to "valid"
    (DatasetFormat.carve_from_train): the same draw in every format."""
    from test_formats import chexpert_fixture, montgomery_fixture

    make = {"chexpert": chexpert_fixture, "nih": _nih, "qata": _qata, "montgomery": montgomery_fixture}[name]
    root = make(tmp_path / name)
    before = {it.id: it for it in open_dataset(name, root).items()}
    train = [it for it in before.values() if it.split == "train"]
    for fraction, seed in ((0.5, 0), (0.25, 7)):
        after = open_dataset(name, root, valid_fraction=fraction, seed=seed).items()
        moved = {it.id for it in after if it.split == "valid" and before[it.id].split == "train"}
        held = hold_out([patient_of(it) for it in train], fraction, seed)
        assert held and moved == {it.id for it in train if patient_of(it) in held}
        assert all(it.split == before[it.id].split for it in after if it.id not in moved)


# --------------------------------------------------------------------------- one metrics module
# how an IoU was computed from masks before this module was the only place: counts of `&` / `|`
# of two masks, numpy's logical and/or, and an intersection divided by something
OVERLAP_CODE = [re.compile(r"\(\s*\w+\s*[&|]\s*\w+\s*\)\s*\.sum\("), re.compile(r"logical_(and|or)\("),
                re.compile(r"\binter(section)?\s*/")]


def test_no_iou_outside_the_metrics_module():
    metrics = DOLL / "train" / "metrics.py"
    found = [f"{path.relative_to(DOLL.parent)}:{i}: {line.strip()}"
             for path in sorted(DOLL.rglob("*.py")) if path != metrics
             for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
             if any(p.search(line) for p in OVERLAP_CODE)]
    assert not found, "IoU / Dice computed outside doll/train/metrics.py; call it instead:\n" + "\n".join(found)
    source = metrics.read_text(encoding="utf-8")
    assert all(p.search(source) for p in OVERLAP_CODE[::2])  # the patterns do find the one computation
