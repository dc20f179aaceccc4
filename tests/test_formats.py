"""Readers of the distributed data set layouts, on tiny fixtures built here."""
from __future__ import annotations

import math
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from doll.data.base import JSRT_STRUCTURES
from doll.data.images import load_mask, read_jsrt_raw, read_raw
from doll.data.registry import open_dataset
from doll.errors import DollError


# --------------------------------------------------------------------------- helpers
def img(path: Path, size=(32, 32), value=128, dtype=np.uint8) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = size
    assert cv2.imwrite(str(path), np.full((h, w), value, dtype))
    return path


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def by_id(items):
    return {it.id: it for it in items}


# --------------------------------------------------------------------------- NIH
NIH_CSV = (
    "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age\n"
    "00000001_000.png,Cardiomegaly,0,1,58\n"
    "00000001_001.png,Cardiomegaly|Emphysema,1,1,58\n"
    "00000002_000.png,No Finding,0,2,81\n"
    "00000003_000.png,Hernia|Infiltration,0,3,81\n"
    "00000004_000.png,Mass,0,4,40\n"
)


def nih_fixture(root: Path) -> Path:
    write(root / "Data_Entry_2017_v2020.csv", NIH_CSV)
    img(root / "images_001" / "images" / "00000001_000.png")
    img(root / "images_001" / "images" / "00000001_001.png", size=(16, 16))
    img(root / "images_002" / "00000002_000.png", size=(64, 32))  # h=64, w=32
    img(root / "images" / "00000003_000.png")
    # 00000004_000.png is missing
    write(
        root / "BBox_List_2017.csv",
        "Image Index,Finding Label,Bbox [x,y,w,h],,,\n"
        "00000002_000.png,Infiltrate,512,256,128,64,,,\n"
        "00000002_000.png,Mass,0,0,1024,1024,,,\n"
        "00000004_000.png,Mass,1,2,3,4,,,\n",
    )
    write(root / "train_val_list.txt", "00000001_000.png\n00000001_001.png\n00000002_000.png\n")
    write(root / "test_list.txt", "00000003_000.png\n00000004_000.png\n")
    return root


def test_nih(tmp_path):
    ds = open_dataset("nih", nih_fixture(tmp_path))
    assert ds.classes[0] == "Atelectasis" and ds.classes[-1] == "Hernia" and len(ds.classes) == 14
    items = ds.items()
    assert len(items) == 4 and ds.missing == ["00000004_000.png"]
    it = by_id(items)
    lab = dict(zip(ds.classes, it["00000001_001"].labels))
    assert lab["Cardiomegaly"] == 1 and lab["Emphysema"] == 1 and sum(lab.values()) == 2
    assert it["00000002_000"].labels.dtype == np.float32 and not it["00000002_000"].labels.any()
    assert it["00000003_000"].labels[ds.classes.index("Infiltration")] == 1
    assert it["00000001_000"].patient == "1" == it["00000001_001"].patient
    assert [x.id for x in ds.items("test")] == ["00000003_000"]
    assert len(ds.items("train")) == 3
    for x in items:
        assert x.image.is_absolute() and x.image.is_file() and tmp_path.resolve() in x.image.parents
    # boxes: 1024 grid -> 32 wide, 64 high
    b = it["00000002_000"]
    assert b.meta["box_grid"] == 1024 and b.meta["image_size"] == (32, 64)
    assert b.boxes["Infiltration"] == [(16.0, 16.0, 4.0, 4.0)]
    assert b.boxes["Mass"] == [(0.0, 0.0, 32.0, 64.0)]
    assert it["00000001_000"].boxes == {} and "box_grid" not in it["00000001_000"].meta


def test_check_partial_nih_download_is_ok_but_a_lost_image_is_not(tmp_path):
    """A partial download (index rows without an image) is reported, not a problem;
    an image that a command would read and cannot is."""
    from doll.data.check import check_dataset, format_report

    root = nih_fixture(tmp_path)
    r = check_dataset("nih", str(root), progress=False)
    assert r["ok"] and r["missing_files"] == 0 and r["images"] == 4
    assert r["rows_without_image"] == 1 and r["rows_without_image_examples"] == ["00000004_000.png"]
    assert "not here: 1 (skipped" in format_report(r) and format_report(r).endswith("OK")
    (root / "images" / "00000003_000.png").write_bytes(b"not a png")
    r = check_dataset("nih", str(root), progress=False)
    assert not r["ok"] and r["unreadable"] == 1 and format_report(r).endswith("PROBLEMS FOUND")


def test_nih_splits_and_valid(tmp_path):
    root = nih_fixture(tmp_path)
    (root / "train_val_list.txt").unlink()
    (root / "test_list.txt").unlink()
    assert {x.split for x in open_dataset("nih", root).items()} == {"train"}
    ds = open_dataset("nih", root, valid_fraction=0.5)
    valid = ds.items("valid")
    assert valid and len(ds.items("train")) + len(valid) == 4
    # patient-level: both images of patient 1 go together
    assert len({x.split for x in ds.items() if x.patient == "1"}) == 1
    assert [x.id for x in valid] == [x.id for x in open_dataset("nih", root, valid_fraction=0.5).items("valid")]


def test_nih_errors(tmp_path):
    with pytest.raises(DollError, match="Data_Entry_2017.csv not found"):
        open_dataset("nih", tmp_path)
    write(tmp_path / "Data_Entry_2017.csv", NIH_CSV)
    with pytest.raises(DollError, match=r"no images\*/ folder"):
        open_dataset("nih", tmp_path)
    img(tmp_path / "images" / "other.png")
    with pytest.raises(DollError, match="none of the 5 images"):
        open_dataset("nih", tmp_path).items()
    write(tmp_path / "Data_Entry_2017.csv", "Image Index,Labels\na.png,Mass\n")
    with pytest.raises(DollError, match="no 'Finding Labels' column"):
        open_dataset("nih", tmp_path).items()
    write(tmp_path / "Data_Entry_2017.csv", "Image Index,Finding Labels\nother.png,Mass|Cancer\n")
    with pytest.raises(DollError, match="'Cancer'.*not an NIH finding"):
        open_dataset("nih", tmp_path).items()
    write(tmp_path / "Data_Entry_2017.csv", "Image Index,Finding Labels\n../../etc/passwd,Mass\n")
    with pytest.raises(DollError, match="not a plain file name"):
        open_dataset("nih", tmp_path).items()
    write(tmp_path / "Data_Entry_2017.csv", "Image Index,Finding Labels\nother.png,Mass\n")
    write(tmp_path / "BBox_List_2017.csv", "Image Index,Finding Label,Bbox [x,y,w,h],,,\nother.png,Mass,1,2,x,4\n")
    with pytest.raises(DollError, match="not 4 numbers"):
        open_dataset("nih", tmp_path).items()
    write(tmp_path / "BBox_List_2017.csv", 'Image Index,Finding Label,"Bbox [x,y,w,h]",a,b,c\nother.png,Mass,1,2,3,4\n')
    assert open_dataset("nih", tmp_path).items()[0].boxes == {"Mass": [(1 / 32, 2 / 32, 3 / 32, 4 / 32)]}  # quoted header
    write(tmp_path / "BBox_List_2017.csv", "Image Index,Finding Label,x,y,w,h\nother.png,Mass,1,2,3,4\n")
    with pytest.raises(DollError, match=r"no 'Bbox \[x,y,w,h\]' column"):
        open_dataset("nih", tmp_path).items()
    with pytest.raises(DollError, match="unknown split 'bogus'"):  # val, Val, validation: spellings of valid
        open_dataset("nih", tmp_path).items("bogus")
    with pytest.raises(DollError, match="--valid-fraction"):
        open_dataset("nih", tmp_path, valid_fraction=1.5)


# --------------------------------------------------------------------------- JSRT
def gif(path: Path, arr: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


def left_lung_mask(size=1024) -> np.ndarray:
    m = np.zeros((size, size), np.uint8)
    m[size // 4 : 3 * size // 4, size // 2 + size // 16 : size - size // 16] = 255  # image's right half
    return m


def test_jsrt_official(tmp_path):
    root = tmp_path / "JSRT"
    imgs = root / "All247images"
    imgs.mkdir(parents=True)
    raw = (np.arange(2048 * 2048, dtype=np.uint32) % 4096).astype(np.uint16).reshape(2048, 2048)
    raw.astype(">u2").tofile(imgs / "JPCLN001.IMG")
    np.full((2048, 2048), 100, np.uint16).astype(">u2").tofile(imgs / "JPCNN001.IMG")
    with open(imgs / "JPCNN002.IMG", "wb") as f:  # listed only, never decoded: a sparse file
        f.truncate(2048 * 2048 * 2)
    scr = root / "scratch"
    gif(scr / "fold1" / "masks" / "left lung" / "JPCLN001.gif", left_lung_mask())
    gif(scr / "fold1" / "masks" / "heart" / "JPCLN001.gif", np.zeros((1024, 1024), np.uint8))
    gif(scr / "fold2" / "masks" / "right lung" / "JPCNN001.gif", np.fliplr(left_lung_mask()).copy())

    ds = open_dataset("jsrt", root)
    assert ds.structures == JSRT_STRUCTURES and ds.classes == ["Nodule"] and ds.layout == "official"
    it = by_id(ds.items())
    assert set(it) == {"JPCLN001", "JPCNN001", "JPCNN002"}
    assert it["JPCLN001"].split == "train" and it["JPCNN001"].split == "test" and it["JPCNN002"].split == "unlabelled"
    assert it["JPCLN001"].labels.tolist() == [1.0] and it["JPCNN001"].labels.tolist() == [0.0]
    assert list(it["JPCLN001"].masks) == ["left lung", "heart"] and it["JPCNN002"].masks == {}
    assert [x.id for x in open_dataset("jsrt", root, fold=2).items("train")] == ["JPCNN001"]

    # decoding: 4095 - raw, and "left lung" is on the image's right half
    shown = read_jsrt_raw(it["JPCLN001"].image)
    assert shown.shape == (2048, 2048) and shown.dtype == np.uint16
    np.testing.assert_array_equal(shown, 4095 - raw)
    assert read_raw(it["JPCNN001"].image).max() == 3995
    m = load_mask(it["JPCLN001"].masks["left lung"], 64)
    assert m.shape == (64, 64) and m[:, 32:].sum() > 0 and m[:, :32].sum() == 0
    r = load_mask(it["JPCNN001"].masks["right lung"], 64)
    assert r[:, :32].sum() > 0 and r[:, 32:].sum() == 0


def test_jsrt_official_variants(tmp_path):
    # *.IMG at the root, masks directly under fold1/<structure> at the root, no masks/ level
    root = tmp_path
    for n in ("JPCLN002", "JPCNN003"):
        with open(root / f"{n}.IMG", "wb") as f:
            f.truncate(2048 * 2048 * 2)
    gif(root / "fold2" / "left_lung" / "JPCLN002.gif", left_lung_mask(32))
    it = by_id(open_dataset("jsrt", root).items())
    assert it["JPCLN002"].split == "test" and list(it["JPCLN002"].masks) == ["left lung"]
    assert it["JPCNN003"].split == "unlabelled"
    # no SCR folder at all: alternate folds by sorted name
    import shutil

    shutil.rmtree(root / "fold2")
    it = by_id(open_dataset("jsrt", root).items())
    assert it["JPCLN002"].split == "train" and it["JPCNN003"].split == "test"


def test_jsrt_png(tmp_path):
    names = ["JPCLN001", "JPCLN002", "JPCNN001", "other"]
    for n in names:
        img(tmp_path / "images" / f"{n}.png")
    (tmp_path / "masks" / "left lung").mkdir(parents=True)
    cv2.imwrite(str(tmp_path / "masks" / "left lung" / "JPCLN001.png"), left_lung_mask(32))
    gif(tmp_path / "masks" / "heart" / "JPCLN002.gif", left_lung_mask(32))
    img(tmp_path / "masks" / "right_clavicle" / "JPCNN001.png.png", value=255)
    ds = open_dataset("jsrt", tmp_path)
    assert ds.layout == "png"
    it = by_id(ds.items())
    assert [it[n].split for n in names] == ["train", "test", "train", "test"]  # alternate by sorted name
    assert math.isnan(it["other"].labels[0]) and it["JPCLN002"].labels[0] == 1
    assert it["JPCLN001"].masks == {"left lung": (tmp_path / "masks" / "left lung" / "JPCLN001.png").resolve()}
    assert list(it["JPCLN002"].masks) == ["heart"] and list(it["JPCNN001"].masks) == ["right clavicle"]
    assert load_mask(it["JPCLN001"].masks["left lung"], 16)[:, 8:].any()

    write(tmp_path / "folds.csv", "image,fold\nJPCLN001.png,2\nJPCLN002,1\nJPCNN001,2\n")
    it = by_id(open_dataset("jsrt", tmp_path, fold="2").items())
    assert [it[n].split for n in names] == ["train", "test", "train", "unlabelled"]

    write(tmp_path / "folds.csv", "image,fold\nJPCLN001.png,3\n")
    with pytest.raises(DollError, match="fold '3' is invalid"):
        open_dataset("jsrt", tmp_path).items()
    write(tmp_path / "folds.csv", "image,split\nJPCLN001.png,1\n")
    with pytest.raises(DollError, match="no 'fold' column"):
        open_dataset("jsrt", tmp_path).items()
    write(tmp_path / "folds.csv", "image,fold\n../../etc/passwd,1\n")
    with pytest.raises(DollError, match="not a file name"):
        open_dataset("jsrt", tmp_path).items()


def test_jsrt_errors(tmp_path):
    with pytest.raises(DollError, match=r"expected All247images/\*.IMG"):
        open_dataset("jsrt", tmp_path)
    (tmp_path / "images").mkdir()
    with pytest.raises(DollError, match="no images found"):
        open_dataset("jsrt", tmp_path)
    img(tmp_path / "images" / "JPCLN001.png")
    with pytest.raises(DollError, match="fold=3 .* invalid"):
        open_dataset("jsrt", tmp_path, fold=3)
    with open(tmp_path / "images" / "JPCLN009.IMG", "wb") as f:
        f.write(b"\0" * 100)
    with pytest.raises(DollError, match="truncated or not JSRT"):
        read_raw(tmp_path / "images" / "JPCLN009.IMG")


# --------------------------------------------------------------------------- Montgomery
def montgomery_fixture(root: Path) -> Path:
    base = root / "MontgomerySet"
    for i, tb in enumerate([0, 1, 0, 1, 0, 0]):
        name = f"MCUCXR_{i:04d}_{tb}.png"
        img(base / "CXR_png" / name, size=(40, 32))
        if i < 4:
            img(base / "ManualMask" / "leftMask" / name, value=255)
        if i < 3:
            img(base / "ManualMask" / "rightMask" / name, value=255)
    return root


def test_montgomery(tmp_path):
    root = montgomery_fixture(tmp_path)
    for r in (root, root / "MontgomerySet"):
        ds = open_dataset("montgomery", r)
        items = ds.items()
        assert len(items) == 6 and ds.structures == ["left lung", "right lung"]
        it = by_id(items)
        assert it["MCUCXR_0001_1"].labels.tolist() == [1.0] and it["MCUCXR_0002_0"].labels.tolist() == [0.0]
        assert set(it["MCUCXR_0000_0"].masks) == {"left lung", "right lung"}
        assert list(it["MCUCXR_0003_1"].masks) == ["left lung"] and it["MCUCXR_0005_0"].masks == {}
        assert it["MCUCXR_0000_0"].meta["merged_structures"] == {"lungs": ["left lung", "right lung"]}
        assert {x.split for x in items} == {"train"}
    ds = open_dataset("montgomery", root, test_fraction=0.5)
    test = [x.id for x in ds.items("test")]
    assert len(test) == 3 and test == [x.id for x in open_dataset("montgomery", root, test_fraction=0.5).items("test")]


def test_montgomery_errors(tmp_path):
    with pytest.raises(DollError, match="CXR_png/ not found"):
        open_dataset("montgomery", tmp_path)
    img(tmp_path / "CXR_png" / "MCUCXR_0001_x.png")
    with pytest.raises(DollError, match="MCUCXR_0001_x.png.*must end in _0"):
        open_dataset("montgomery", tmp_path).items()
    with pytest.raises(DollError, match="test_fraction"):
        open_dataset("montgomery", tmp_path, test_fraction="lots")
    (tmp_path / "CXR_png" / "MCUCXR_0001_x.png").unlink()
    with pytest.raises(DollError, match="no PNG images"):
        open_dataset("montgomery", tmp_path).items()


# --------------------------------------------------------------------------- Shenzhen
def test_shenzhen(tmp_path):
    base = tmp_path / "ChinaSet_AllFiles"
    for i, tb in enumerate([0, 1, 1]):
        img(base / "CXR_png" / f"CHNCXR_{i:04d}_{tb}.png")
    write(base / "CXR_png" / "Thumbs.db", "x")
    img(tmp_path / "mask" / "CHNCXR_0000_0_mask.png", value=255)
    img(tmp_path / "mask" / "CHNCXR_0002_1_mask.png", value=255)
    it = by_id(open_dataset("shenzhen", tmp_path).items())  # ChinaSet_AllFiles/ and mask/ side by side
    assert set(it["CHNCXR_0002_1"].masks) == {"lungs"} and it["CHNCXR_0001_1"].masks == {}
    with pytest.raises(DollError, match="outside --root.*pass .* as --root"):
        open_dataset("shenzhen", base)  # masks next to ChinaSet_AllFiles/, outside the root
    (tmp_path / "mask").rename(base / "mask")
    for r in (tmp_path, base):
        ds = open_dataset("shenzhen", r)
        it = by_id(ds.items())
        assert len(it) == 3 and ds.structures == ["lungs"]
        assert [it[f"CHNCXR_{i:04d}_{tb}"].labels[0] for i, tb in enumerate([0, 1, 1])] == [0, 1, 1]
        assert it["CHNCXR_0000_0"].masks == {"lungs": (base / "mask" / "CHNCXR_0000_0_mask.png").resolve()}
        assert it["CHNCXR_0001_1"].masks == {}
    with pytest.raises(DollError, match="CXR_png/ not found"):
        open_dataset("shenzhen", base / "mask")
    img(base / "CXR_png" / "CHNCXR_0009_7.png")
    with pytest.raises(DollError, match="must end in _0"):
        open_dataset("shenzhen", tmp_path).items()


# --------------------------------------------------------------------------- QaTa
def test_qata(tmp_path):
    base = tmp_path / "QaTa-COV19-v2"
    for i in range(5):
        img(base / "Train Set" / "Images" / f"covid_{i}.png")
        if i != 4:
            img(base / "Train Set" / "Ground-truths" / f"mask_covid_{i}.png", value=255)
    img(base / "Test Set" / "Images" / "covid_0.png")
    img(base / "Test Set" / "Ground-truths" / "mask_covid_0.png", value=255)
    for r in (tmp_path, base):
        ds = open_dataset("qata", r)
        it = by_id(ds.items())
        assert len(it) == 6 and len(ds.items("train")) == 5 and [x.id for x in ds.items("test")] == ["test/covid_0"]
        assert all(x.labels.tolist() == [1.0] for x in it.values())
        assert it["train/covid_1"].masks["infection"].name == "mask_covid_1.png" and it["train/covid_4"].masks == {}
    ds = open_dataset("qata", tmp_path, valid_fraction=0.4)
    assert len(ds.items("valid")) == 2 and len(ds.items("train")) == 3 and len(ds.items("test")) == 1
    with pytest.raises(DollError, match="'Train Set/' not found"):
        open_dataset("qata", tmp_path / "QaTa-COV19-v2" / "Train Set")
    import shutil

    shutil.rmtree(base / "Test Set" / "Images")
    with pytest.raises(DollError, match="Images/ and Ground-truths/"):
        open_dataset("qata", tmp_path).items()


# --------------------------------------------------------------------------- COVID-QU-Ex
def covidqu_fixture(root: Path) -> Path:
    inf = root / "Infection Segmentation Data"
    lung = root / "Lung Segmentation Data"
    for split in ("Train", "Val", "Test"):
        for cls in ("COVID-19", "Non-COVID", "Normal"):
            for base in (inf, lung):
                d = base / split / cls
                img(d / "images" / f"{cls.lower()}_1.png")
                if split != "Test":
                    img(d / "lung masks" / f"{cls.lower()}_1.png", value=255)
                    if base is inf:
                        img(d / "infection masks" / f"{cls.lower()}_1.png", value=255 if cls == "COVID-19" else 0)
    return root


def test_covidqu(tmp_path):
    root = covidqu_fixture(tmp_path)
    ds = open_dataset("covidqu", root)
    assert ds.subset == "infection" and ds.structures == ["infection", "lungs"]
    items = ds.items()
    assert len(items) == 9 and [len(ds.items(s)) for s in ("train", "valid", "test")] == [3, 3, 3]
    it = by_id(items)
    assert it["Train/Non-COVID/non-covid_1"].labels.tolist() == [0, 1, 0]
    assert it["Val/COVID-19/covid-19_1"].labels.tolist() == [1, 0, 0]
    assert set(it["Train/Normal/normal_1"].masks) == {"infection", "lungs"}  # empty mask still listed
    assert load_mask(it["Train/Normal/normal_1"].masks["infection"], 8).sum() == 0
    assert it["Test/COVID-19/covid-19_1"].masks == {}
    ds = open_dataset("covidqu", root, subset="lung")
    assert ds.structures == ["lungs"] and "Lung Segmentation Data" in str(ds.items()[0].image)
    ds = open_dataset("covidqu", root / "Lung Segmentation Data")
    assert ds.subset == "lung" and len(ds.items()) == 9
    with pytest.raises(DollError, match="subset='lung'"):
        open_dataset("covidqu", root / "Infection Segmentation Data", subset="lung")
    with pytest.raises(DollError, match="subset='lungs' .* invalid"):
        open_dataset("covidqu", root, subset="lungs")


def test_covidqu_errors(tmp_path):
    with pytest.raises(DollError, match="'Infection Segmentation Data/' not found"):
        open_dataset("covidqu", tmp_path)
    (tmp_path / "Infection Segmentation Data" / "Train").mkdir(parents=True)
    with pytest.raises(DollError, match="no images found"):
        open_dataset("covidqu", tmp_path).items()


# --------------------------------------------------------------------------- folder
def folder_fixture(root: Path) -> Path:
    img(root / "images" / "a.png")
    img(root / "images" / "sub" / "b.jpg")
    img(root / "images" / "sub" / "c.tif", dtype=np.uint16, value=3000)
    write(root / "images" / "notes.txt", "not an image")
    img(root / "masks" / "lungs" / "a.png", value=255)
    img(root / "masks" / "lungs" / "sub" / "b.bmp", value=255)
    img(root / "masks" / "heart" / "sub" / "c.png", value=255)
    write(root / "labels.csv", "image,Edema,Effusion,split\na.png,1,0,train\nsub/b,-1,,val\nc,1.0,0.0,test\n")
    return root


def test_folder(tmp_path):
    ds = open_dataset("folder", folder_fixture(tmp_path))
    assert ds.classes == ["Edema", "Effusion"] and ds.structures == ["heart", "lungs"]
    it = by_id(ds.items())
    assert set(it) == {"a", "sub/b", "sub/c"}
    assert it["a"].labels.tolist() == [1, 0] and it["a"].split == "train"
    assert it["sub/b"].labels[0] == -1 and math.isnan(it["sub/b"].labels[1]) and it["sub/b"].split == "valid"
    assert it["sub/c"].split == "test" and it["sub/c"].labels.dtype == np.float32
    assert set(it["a"].masks) == {"lungs"} and it["sub/b"].masks["lungs"].suffix == ".bmp"
    assert set(it["sub/c"].masks) == {"heart"}
    assert read_raw(it["sub/c"].image).dtype == np.uint16
    # without labels.csv: no classes, everything train
    (tmp_path / "labels.csv").unlink()
    ds = open_dataset("folder", tmp_path)
    assert ds.classes == [] and {x.split for x in ds.items()} == {"train"} and ds.items()[0].labels.shape == (0,)


def test_folder_errors(tmp_path):
    with pytest.raises(DollError, match="folder images/ not found"):
        open_dataset("folder", tmp_path)
    (tmp_path / "images").mkdir()
    with pytest.raises(DollError, match="no images"):
        open_dataset("folder", tmp_path).items()
    folder_fixture(tmp_path)
    cases = {
        "image,Edema\na.png,2\n": r"line 2, column 'Edema': label value '2' is invalid",
        "image,Edema\na.png,yes\n": "label value 'yes' is invalid",
        "name,Edema\na.png,1\n": "no 'image' column",
        "image,Edema\n../../etc/passwd,1\n": "outside the data root",
        "image,Edema\nnope.png,1\n": "none of the 1 rows",
        "image,Edema,split\na.png,1,holdout\n": "split 'holdout' is invalid",
        "image,Edema\na.png,1\na,0\n": "listed twice",
    }
    for text, msg in cases.items():
        write(tmp_path / "labels.csv", text)
        with pytest.raises(DollError, match=msg):
            open_dataset("folder", tmp_path).items()
    write(tmp_path / "labels.csv", "image,Edema\na.png,1\nmissing.png,0\n")
    ds = open_dataset("folder", tmp_path)
    assert len(ds.items()) == 3 and ds.missing == ["missing.png"]


def test_root_errors(tmp_path):
    with pytest.raises(DollError, match="does not exist"):
        open_dataset("folder", tmp_path / "nowhere")
    with pytest.raises(DollError, match="unknown dataset"):
        open_dataset("imagenet", tmp_path)


def test_symlink_escape_refused(tmp_path):
    outside = img(tmp_path / "outside" / "secret.png")
    root = tmp_path / "root"
    (root / "images").mkdir(parents=True)
    os.symlink(outside, root / "images" / "x.png")
    with pytest.raises(DollError, match="outside the data root"):
        open_dataset("folder", root).items()


# --------------------------------------------------------------------------- CheXpert
def chexpert_fixture(root: Path, prefix: str = "CheXpert-v1.0-small", bom: bool = False) -> Path:
    from doll.data.base import CHEXPERT_CLASSES

    header = ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *CHEXPERT_CLASSES]
    rows = []
    for p in range(4):
        rel = f"train/patient{p:05d}/study1/view1_frontal.jpg"
        img(root / rel)
        labels = ["1.0" if c == p else ("-1.0" if c == p + 1 else "") for c in range(len(CHEXPERT_CLASSES))]
        rows.append([f"{prefix}/{rel}", "Female", "50", "Frontal", "AP", *labels])
    text = "\n".join(",".join(r) for r in [header, *rows]) + "\n"
    (root / "train.csv").write_text(("\ufeff" if bom else "") + text, encoding="utf-8")
    return root


def test_chexpert_renamed_root_bom_and_valid_fraction(tmp_path):
    root = chexpert_fixture(tmp_path / "chexpert_unzipped", bom=True)  # not named CheXpert-v1.0-small, CSV from Excel
    items = open_dataset("chexpert", root).items()
    assert len(items) == 4 and all(it.image.is_file() and root.resolve() in it.image.parents for it in items)
    it = by_id(items)["CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg"]
    assert it.labels[1] == 1.0 and it.labels[2] == -1.0 and math.isnan(it.labels[0])
    # train-classifiers --valid-fraction passes valid_fraction, read by every format; valid_from_train is an alias
    for option in ("valid_fraction", "valid_from_train"):
        ds = open_dataset("chexpert", root, **{option: 0.5, "seed": 3})
        assert len(ds.items("valid")) == 2 and len(ds.items("train")) == 2
    with pytest.raises(DollError, match="--valid-fraction=1.0 for chexpert is out of range"):
        open_dataset("chexpert", root, valid_fraction=1.0).items()


def test_chexpert_truncated_row(tmp_path):
    root = chexpert_fixture(tmp_path / "CheXpert-v1.0-small")
    lines = (root / "train.csv").read_text().splitlines()
    (root / "train.csv").write_text("\n".join([*lines[:-1], lines[-1][:40]]) + "\n")
    with pytest.raises(DollError, match="line 5 has [0-9]+ fields but the header has 19; the file is truncated"):
        open_dataset("chexpert", root).items()


def test_jsrt_folds_csv_with_any_file_name(tmp_path):
    for n in ("JPCLN001", "JPCLN002", "JPCNN001"):
        img(tmp_path / "images" / f"{n}.jpg")
    write(tmp_path / "folds.csv", "image,fold\nJPCLN001.jpg,1\nJPCLN002.IMG.png,2\njpcnn001,2\n")
    it = by_id(open_dataset("jsrt", tmp_path).items())
    assert [it[n].split for n in ("JPCLN001", "JPCLN002", "JPCNN001")] == ["train", "test", "test"]
    write(tmp_path / "folds.csv", "image,fold\nJPCLN101.png,1\n")
    with pytest.raises(DollError, match="none of the 1 images in .*folds.csv is in"):
        open_dataset("jsrt", tmp_path).items()


def test_edited_mask_is_not_served_from_cache(tmp_path, monkeypatch):
    from doll.data.arrays import load_arrays
    from doll.data.base import Item

    monkeypatch.setenv("DOLL_CACHE", str(tmp_path / "cache"))
    mask = img(tmp_path / "heart.png", value=0)
    item = Item(id="a", image=img(tmp_path / "a.png"), masks={"heart": mask})
    assert load_arrays([item], 16, ["heart"], progress=False).masks.sum() == 0
    img(mask, value=255)
    os.utime(mask, ns=(1, 2))  # an edit, whatever the file system's clock resolution
    assert load_arrays([item], 16, ["heart"], progress=False).masks.sum() == 16 * 16


def test_strict_accepts_masks_on_a_subsampled_grid(tmp_path):
    image = img(tmp_path / "a.png", size=(64, 64))
    assert load_mask(img(tmp_path / "half.png", size=(32, 32), value=255), 16, expect_shape=(64, 64)).all()
    with pytest.raises(DollError, match=r"is 48x32 but its image is 64x64 \(--strict\)"):
        load_mask(img(tmp_path / "odd.png", size=(32, 48), value=255), 16, expect_shape=read_raw(image).shape)


def test_finetune_holds_out_patients_when_no_split_has_masks(tmp_path):
    from doll.finetuning.segment import load_task_data
    from doll.finetuning.settings import FinetuneSettings

    root = montgomery_fixture(tmp_path)  # everything is "train"; 4 images have lung masks
    names, train, test, split = load_task_data(FinetuneSettings(task="lung", dataset="montgomery", root=str(root),
                                                                progress=False), 16)
    assert names == ["lungs"] and split == "20% of train patients (seed 0)"
    assert len(train[0]) == 3 and len(test[0]) == 1 and test[1].shape == (1, 1, 16, 16)
    assert {it.id for it in train[2]}.isdisjoint(it.id for it in test[2])


def test_train_classifiers_validates_on_carved_patients_when_a_set_has_no_valid_split(tmp_path):
    from doll.classification.train import train_classifiers

    root = nih_fixture(tmp_path / "nih")  # train_val_list / test_list: no valid split
    for i in range(5, 25):  # more patients, so that 10 % of them is at least one
        name = f"{i:08d}_000.png"
        img(root / "images" / name, value=40 + 8 * i)
        with open(root / "Data_Entry_2017_v2020.csv", "a") as fh:
            fh.write(f"{name},{'Mass' if i % 2 else 'No Finding'},0,{i},50\n")
        with open(root / "train_val_list.txt", "a") as fh:
            fh.write(name + "\n")
    m = train_classifiers(dataset="nih", root=str(root), out=str(tmp_path / "cls"), members=1, epochs=1,
                          image_size=16, batch_size=4, device="cpu", progress=False)
    assert m["validation"] == "10% of train patients (the data set has no valid split)"
    assert m["n_valid"] >= 1 and m["n_train"] + m["n_valid"] == 23  # the 3 + 20 images of train_val_list
