"""Procedural phantoms: determinism, geometry, findings, layout, argument checks."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from doll.data.base import CHEXPERT_CLASSES, FINDINGS, JSRT_STRUCTURES
from doll.data.phantom import (
    CHEXPERT_DIRNAME,
    PHANTOM_VERSION,
    make_phantoms,
    render_case,
)
from doll.errors import DollError

HEADER = ("Path,Sex,Age,Frontal/Lateral,AP/PA,No Finding,Enlarged Cardiomediastinum,Cardiomegaly,Lung Opacity,"
          "Lung Lesion,Edema,Consolidation,Pneumonia,Atelectasis,Pneumothorax,Pleural Effusion,Pleural Other,"
          "Fracture,Support Devices")


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("ph") / "a"
    summary = make_phantoms(out, n=60, size=48, seed=3, n_anatomy=8, confound=0.8, progress=False)
    return out, summary


# ----------------------------------------------------------------------------- render_case
@pytest.mark.parametrize("size", [32, 64, 100])
def test_render_shapes(size):
    img, anat, fm, meta = render_case(np.random.default_rng(1), size)
    assert img.shape == (size, size) and img.dtype == np.uint8
    assert img.std() > 10  # not blank
    assert list(anat) == JSRT_STRUCTURES
    for name, m in list(anat.items()) + list(fm.items()):
        assert m.shape == (size, size) and m.dtype == np.uint8, name
        assert set(np.unique(m)) <= {0, 1} and m.any(), name
    assert set(fm) <= set(FINDINGS)
    assert set(meta["findings"]) == set(fm)
    for d in meta["findings"].values():
        assert 0 < d["area_fraction"] <= 1
        vert, side = d["zone"].split("-")
        assert vert in ("upper", "middle", "lower") and side in ("left", "right", "central", "bilateral")
        assert all(0 <= c <= 1 for c in d["centroid"])


def test_render_deterministic():
    a = render_case(np.random.default_rng(7), 64)
    b = render_case(np.random.default_rng(7), 64)
    c = render_case(np.random.default_rng(8), 64)
    assert np.array_equal(a[0], b[0]) and a[2].keys() == b[2].keys()
    assert not np.array_equal(a[0], c[0])


def _centroid(m):
    ys, xs = np.nonzero(m)
    return xs.mean() / m.shape[1], ys.mean() / m.shape[0]


@pytest.mark.parametrize("seed", range(5))
def test_anatomy_sides(seed):
    _, anat, _, _ = render_case(np.random.default_rng(seed), 64, findings={})
    lx, ly = _centroid(anat["left lung"])
    rx, ry = _centroid(anat["right lung"])
    hx, hy = _centroid(anat["heart"])
    assert lx > 0.5 > rx  # patient's left = image right
    assert _centroid(anat["left clavicle"])[0] > 0.5 > _centroid(anat["right clavicle"])[0]
    lung_top = min(np.nonzero(anat["left lung"].any(1))[0].min(), np.nonzero(anat["right lung"].any(1))[0].min()) / 64
    assert hy > lung_top and hy > max(ly, ry)  # heart sits low
    assert hx > 0.5  # bulges to the image right
    cy = _centroid(anat["left clavicle"])[1]
    assert cy < ly


@pytest.mark.parametrize("finding", FINDINGS)
def test_each_finding_visible(finding):
    for seed in range(3):
        base = render_case(np.random.default_rng(seed), 64, findings={})
        img, _, fm, meta = render_case(np.random.default_rng(seed), 64, findings={finding: True})
        assert list(fm) == [finding] and fm[finding].any()
        assert base[2] == {}
        m = fm[finding].astype(bool)
        diff = np.abs(img.astype(float) - base[0].astype(float))
        assert diff[m].mean() > 8, f"{finding} seed {seed}: mean |diff| in mask {diff[m].mean():.1f}"
        # outside a margin the image is untouched but for tiny spill-over
        import cv2

        outside = ~(cv2.dilate(m.astype(np.uint8), np.ones((9, 9), np.uint8)) > 0)
        assert diff[outside].mean() < 1, f"{finding} seed {seed}: mean |diff| outside {diff[outside].mean():.2f}"
        assert meta["findings"][finding]["area_fraction"] == pytest.approx(m.mean())


def test_all_findings_together_and_small_size():
    img, _, fm, _ = render_case(np.random.default_rng(0), 32, findings={f: True for f in FINDINGS}, chest_tube=True)
    assert set(fm) == set(FINDINGS) and all(m.any() for m in fm.values())


def test_chest_tube_changes_pixels_without_label():
    a = render_case(np.random.default_rng(2), 64, findings={})
    b = render_case(np.random.default_rng(2), 64, findings={}, chest_tube=True)
    assert b[2] == {} and b[3]["chest_tube"]
    assert np.abs(a[0].astype(int) - b[0].astype(int)).max() > 40


def test_render_errors():
    with pytest.raises(DollError):
        render_case(np.random.default_rng(0), 16)
    with pytest.raises(DollError):
        render_case(np.random.default_rng(0), 64, findings={"Nodule": True})


# ----------------------------------------------------------------------------- make_phantoms
def test_layout_and_csv(dataset):
    out, summary = dataset
    meta = json.loads((out / "phantom.json").read_text())
    assert meta["format"] == "doll-phantom" and meta["version"] == PHANTOM_VERSION == 1
    assert meta["classes"] == CHEXPERT_CLASSES and meta["structures"] == JSRT_STRUCTURES
    assert meta["chexpert_dir"] == CHEXPERT_DIRNAME and meta["n"] == 60 and meta["size"] == 48
    root = out / CHEXPERT_DIRNAME
    for name in ("train.csv", "valid.csv"):
        assert (root / name).read_text().splitlines()[0] == HEADER
    train, valid = _rows(root / "train.csv"), _rows(root / "valid.csv")
    assert len(train) + len(valid) == 60 and len(valid) > 0
    assert summary["images"] == {"train": len(train), "valid": len(valid)}
    for split, rows in (("train", train), ("valid", valid)):
        for r in rows:
            assert r["Path"].startswith(f"{CHEXPERT_DIRNAME}/{split}/patient") and r["Path"].endswith("/view1_frontal.jpg")
            assert (out / r["Path"]).exists()
            assert r["Sex"] in ("Male", "Female") and r["Age"].isdigit()
            assert r["Frontal/Lateral"] == "Frontal" and r["AP/PA"] in ("AP", "PA")
            assert r["No Finding"] in ("1.0", "0.0")
            for c in CHEXPERT_CLASSES:
                assert r[c] in ("1.0", "0.0", "-1.0", "")
    values = {r[c] for r in valid for c in CHEXPERT_CLASSES}
    assert values <= {"1.0", "0.0"}
    train_values = {r[c] for r in train for c in FINDINGS}
    assert {"-1.0", ""} & train_values  # the train set does get uncertain/blank labels
    pat = lambda rows: {r["Path"].split("/")[2] for r in rows}  # noqa: E731
    assert not pat(train) & pat(valid)
    studies = [r["Path"].split("/")[3] for r in train + valid]
    assert "study2" in studies and studies.count("study1") == len(pat(train)) + len(pat(valid))
    from PIL import Image

    with Image.open(out / train[0]["Path"]) as im:
        assert im.size == (48, 48) and im.format == "JPEG"


def test_ground_truth_matches_files(dataset):
    out, summary = dataset
    gt = _rows(out / "findings" / "ground_truth.csv")
    assert list(gt[0].keys()) == ["Path", "finding", "area_fraction", "zone", "centroid_x", "centroid_y", "chest_tube"]
    seen = set()
    valid = {r["Path"]: r for r in _rows(out / CHEXPERT_DIRNAME / "valid.csv")}
    for r in gt:
        assert r["finding"] in FINDINGS and r["chest_tube"] in ("0", "1")
        assert (out / r["Path"]).exists()
        rel = Path(r["Path"]).relative_to(CHEXPERT_DIRNAME).with_suffix(".png")
        mask = out / "findings" / "masks" / r["finding"] / rel
        assert mask.exists(), mask
        seen.add(r["finding"])
        if r["Path"] in valid:  # noise-free labels: every drawn finding is positive
            assert valid[r["Path"]][r["finding"]] == "1.0"
    assert seen == set(FINDINGS)
    n_masks = sum(1 for _ in (out / "findings" / "masks").rglob("*.png"))
    assert n_masks == len(gt)
    assert all(summary["counts"]["all"][f] > 0 for f in FINDINGS)
    assert summary["chest_tubes"]["pneumothorax"] > 0  # confound=0.8
    tubes = {r["Path"] for r in gt if r["chest_tube"] == "1"}
    ptx = {r["Path"] for r in gt if r["finding"] == "Pneumothorax"}
    assert len(tubes & ptx) > 0
    per_image = _rows(out / "findings" / "chest_tubes.csv")  # every image, with or without a finding
    n_images = len(_rows(out / CHEXPERT_DIRNAME / "train.csv")) + len(_rows(out / CHEXPERT_DIRNAME / "valid.csv"))
    assert len(per_image) == n_images
    assert sum(r["chest_tube"] == "1" for r in per_image) == sum(summary["chest_tubes"].values())
    assert tubes <= {r["Path"] for r in per_image if r["chest_tube"] == "1"}


def test_no_finding_column(dataset):
    out, _ = dataset
    gt = _rows(out / "findings" / "ground_truth.csv")
    drawn = {}
    for r in gt:
        drawn.setdefault(r["Path"], set()).add(r["finding"])
    for r in _rows(out / CHEXPERT_DIRNAME / "valid.csv") + _rows(out / CHEXPERT_DIRNAME / "train.csv"):
        expect = "1.0" if not (drawn.get(r["Path"], set()) - {"Support Devices"}) else "0.0"
        assert r["No Finding"] == expect


def test_anatomy_folder(dataset):
    out, _ = dataset
    images = sorted((out / "anatomy" / "images").glob("*.png"))
    assert len(images) == 8
    assert all(p.name.startswith(("JPCLN", "JPCNN")) for p in images)
    for st in JSRT_STRUCTURES:
        for p in images:
            m = np.asarray(__import__("PIL.Image").Image.open(out / "anatomy" / "masks" / st / p.name))
            assert m.shape == (48, 48) and set(np.unique(m)) <= {0, 255} and m.any()


def test_determinism(tmp_path, dataset):
    a, _ = dataset
    b = tmp_path / "b"
    make_phantoms(b, n=60, size=48, seed=3, n_anatomy=8, confound=0.8, progress=False)
    fa, fb = _files(a), _files(b)
    fa.pop("phantom.json"), fb.pop("phantom.json")
    assert fa.keys() == fb.keys()
    assert all(fa[k] == fb[k] for k in fa)
    c = tmp_path / "c"
    make_phantoms(c, n=60, size=48, seed=4, n_anatomy=8, confound=0.8, progress=False)
    fc = _files(c)
    assert fc[f"{CHEXPERT_DIRNAME}/train.csv"] != fa[f"{CHEXPERT_DIRNAME}/train.csv"]
    common = [k for k in fa if k.endswith(".jpg") and k in fc]
    assert common and any(fa[k] != fc[k] for k in common)


def test_rerun_replaces_and_defaults(tmp_path):
    out = tmp_path / "d"
    make_phantoms(out, n=12, size=32, seed=0, n_anatomy=2, progress=False)
    s = make_phantoms(out, n=4, size=32, seed=0, progress=False)
    assert sum(s["images"].values()) == 4
    assert len(list((out / CHEXPERT_DIRNAME).rglob("*.jpg"))) == 4
    assert s["anatomy"]["images"] == 20  # max(20, n // 2)
    assert s["chest_tubes"] == {"pneumothorax": 0, "other": 0}  # confound=0: no tubes
    gt = _rows(out / "findings" / "ground_truth.csv")
    assert all(r["chest_tube"] == "0" for r in gt)
    assert json.loads((out / "phantom.json").read_text())["summary"] == s


@pytest.mark.parametrize("kwargs", [
    {"n": 3}, {"size": 31}, {"noise": -0.1}, {"uncertain": 1.5}, {"blank": 2},
    {"confound": -1}, {"valid_fraction": 1.01}, {"noise": "x"},
])
def test_argument_errors(tmp_path, kwargs):
    args = {"n": 8, "size": 32, "progress": False, **kwargs}
    with pytest.raises(DollError):
        make_phantoms(tmp_path / "e", **args)
    assert not (tmp_path / "e" / "phantom.json").exists()


@pytest.mark.parametrize("n, size, seed, digest", [
    (8, 32, 0, "09e5873bae01e1fa59c2d3e4dbb17bc0755ef7e50b4b8399a9b8f53b4e948e09"),
    (12, 64, 3, "3a057285b1b7cb58347556fd45ff651dc61253566b363c982c82ab452915744b"),
])
def test_phantoms_are_pinned(tmp_path, n, size, seed, digest):
    """The golden hash of today's phantoms (every file but doll's manifest and locks, names and
    bytes): the published figures depend on them, so splitting the renderer into parts
    (issue 35, item 6) must leave them byte for byte. Pinned on 2026-12-06 (OpenCV's JPEG
    and PNG encoders are part of it: a new OpenCV may change it; then re-pin and say so)."""
    import hashlib

    out = tmp_path / "ph"
    make_phantoms(out, n=n, size=size, seed=seed, progress=False, confound=0.3)
    h = hashlib.sha256()
    for p in sorted(out.rglob("*")):
        if p.is_file() and not p.name.startswith("."):
            h.update(p.relative_to(out).as_posix().encode())
            h.update(p.read_bytes())
    assert h.hexdigest() == digest
