"""`doll predict`: a doll segmenter applied to new files gives the masks the training code
computes for the same images (finetune full and adapter, pretrain), reads DICOM
(MONOCHROME1 and 2), 16-bit PNG and refuses bad input with one line.

The models are tiny and built once for the module (phantoms of 32 px, ResNet-18 PSPNets, a
hand-made label file with hostile class names, 2 pretraining and 30 fine-tuning steps)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from conftest import cli, cli_exit

SIZE = 32
CLASSES = ["left/lung", ".heart\t"]  # class names are data: a separator, a hidden name, a control character


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict:
    from doll.data.images import load_image, load_mask
    from doll.labels import store

    root = tmp_path_factory.mktemp("predict")
    ph = root / "ph"
    cli("data", "phantom", "--out", ph, "--n", 16, "--size", SIZE, "--seed", 0)
    anatomy = ph / "anatomy"
    files = sorted((anatomy / "images").glob("*.png"))
    n = len(files)
    masks = np.stack([np.stack([load_mask(anatomy / "masks" / s / f.name, SIZE) for s in ("left lung", "heart")])
                      for f in files])
    rows = {"saliency": masks * 255, "images": np.stack([load_image(f, SIZE) for f in files]),
            "targets": np.ones((n, 2), bool), "labels": np.ones((n, 2), np.float32),
            "probs": np.full((n, 2), 0.9, np.float32), "done": np.ones(n, bool), "paths": [f.name for f in files]}
    store.write_label_file(root / "labels.h5", rows, {"classes": CLASSES, "method": "ig", "settings": {},
                                                      "label_rule": "threshold:0.5", "image_size": SIZE,
                                                      "dataset": "folder"})
    paths = {"anatomy": anatomy, "pretrain": root / "pre"}
    cli("pretrain", "--labels", root / "labels.h5", "--out", paths["pretrain"], "--encoder", "resnet18",
        "--max-steps", 2, "--batch-size", 8)
    for mode in ("full", "adapter"):
        paths[mode] = root / f"ft_{mode}"
        cli("finetune", "--task", "jsrt", "--dataset", "jsrt", "--root", anatomy, "--init", paths["pretrain"],
            "--mode", mode, "--max-steps", 30, "--lr", 3e-3, "--batch-size", 4, "--out", paths[mode])
    return paths


def finetune_test_split(anatomy: Path):
    """The test images and masks exactly as `doll finetune --task jsrt` loads them."""
    from doll.finetuning.segment import load_task_data
    from doll.finetuning.settings import FinetuneSettings

    s = FinetuneSettings(task="jsrt", dataset="jsrt", root=str(anatomy), progress=False)
    names, _, (images, masks, items), _ = load_task_data(s, SIZE)
    return names, images, masks, [Path(it.image) for it in items]


def evaluation_masks(folder: Path, images: np.ndarray, n_classes: int) -> np.ndarray:
    """The model's masks through finetune's evaluation code path (its loader, task and predict_all)."""
    from doll.data.dataset import ArrayDataset
    from doll.finetuning.segment import WholeMaskObjective
    from doll.models.segmenter import drop_aux_head, load_segmenter
    from doll.train.engine import predict_all

    model, _ = load_segmenter(folder)
    dummy = np.zeros((len(images), n_classes, SIZE, SIZE), np.uint8)
    return predict_all(drop_aux_head(model), WholeMaskObjective([str(c) for c in range(n_classes)]),
                       ArrayDataset(images, masks=dummy), 4, torch.device("cpu"))["pred"]


def written_masks(out: Path, folders: list[str], stems: list[str]) -> np.ndarray:
    return np.stack([np.stack([cv2.imread(str(out / "masks" / f / f"{s}.png"), cv2.IMREAD_UNCHANGED) for f in folders])
                     for s in stems])


@pytest.mark.parametrize("which", ["full", "adapter", "pretrain"])
def test_predict_gives_the_training_code_s_masks(models, tmp_path, which):
    from doll.finetuning.segment import per_image_iou

    names, images, truth, files = finetune_test_split(models["anatomy"])
    out = tmp_path / "pred"
    # a finetune run's top folder (its model/ is used) and the files listed after one --input
    cli("predict", "--model", models[which], "--input", *files, "--out", out, "--batch-size", 4)
    config = json.loads((out / "config.json").read_text())
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["finished"] and metrics["images"] == len(files)
    stems = [f.stem for f in files]
    if which == "pretrain":
        assert config["structures"] == CLASSES
        assert config["structure_folders"] == dict(zip(CLASSES, ["left_lung", "heart_"]))
        assert sorted(p.name for p in (out / "masks").iterdir()) == ["heart_", "left_lung"]
        assert {p.name for p in out.parent.iterdir()} - {".pred.lock"} == {"pred"}  # nothing outside --out
        folder = models[which]
    else:
        assert config["structures"] == names
        folder = models[which] / "model"
        assert config["model_folder"] == str(folder)
    got = written_masks(out, list(config["structure_folders"].values()), stems)
    assert set(np.unique(got)) <= {0, 255} and got.shape[-2:] == (SIZE, SIZE)
    got = got > 0
    assert 0 < got.mean() < 0.9  # the masks are not trivial
    assert np.array_equal(got, evaluation_masks(folder, images, len(config["structures"])))
    if which != "pretrain":  # and finetune's own per-image test IoU, from its metrics.json
        recorded = json.loads((models[which] / "metrics.json").read_text())["runs"][0]["per_image_iou"]
        assert np.round(per_image_iou(got, truth), 5).tolist() == recorded
    import csv

    rows = list(csv.DictReader((out / "predictions.csv").open()))
    assert len(rows) == len(files) * len(config["structures"])
    first = rows[0]
    k = config["structures"].index(first["structure"])
    assert int(first["area_pixels"]) == got[0, k].sum() and first["image"] == stems[0]
    assert abs(float(first["area_fraction"]) - got[0, k].mean()) < 1e-6
    assert first["mean_probability"] == "" or 0.5 < float(first["mean_probability"]) <= 1
    assert sorted(p.name for p in (out / "overlays").iterdir()) == sorted(f"{s}.png" for s in stems)


def test_dicom_and_16_bit_png_give_the_same_masks(models, tmp_path):
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    image = cv2.imread(str(sorted((models["anatomy"] / "images").glob("*.png"))[1]), cv2.IMREAD_UNCHANGED)
    h, w = 40, 48  # not the model's size, not square: masks come back at this size
    p12 = (cv2.resize(image, (w, h), interpolation=cv2.INTER_NEAREST).astype(np.uint16) * 16)  # 12-bit values

    def dicom(path, pixels, photometric, **extra):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"  # digital X-ray
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = pydicom.Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
        ds.Modality, ds.PhotometricInterpretation, ds.SamplesPerPixel = "DX", photometric, 1
        ds.Rows, ds.Columns = pixels.shape
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        for key, value in extra.items():
            setattr(ds, key, value)
        ds.PixelData = pixels.astype(np.uint16).tobytes()
        ds.save_as(path, enforce_file_format=True)

    scans = tmp_path / "scans"
    scans.mkdir()
    dicom(scans / "scan.dcm", p12, "MONOCHROME2")
    dicom(scans / "scan_inverted.dcm", 4095 - p12, "MONOCHROME1")  # stored inverted: shown the same
    dicom(scans / "1.2.840.99", p12, "MONOCHROME2")  # DICOM without an extension, found by its signature
    cv2.imwrite(str(scans / "scan.png"), p12)  # 16-bit PNG
    (scans / "notes.txt").write_text("not an image: a folder's other files are skipped\n")
    out = tmp_path / "pred"
    cli("predict", "--model", models["full"], "--input", scans, "--out", out)
    config = json.loads((out / "config.json").read_text())
    stems = ["1.2.840.99", "scan", "scan-2", "scan_inverted"]  # sorted files; scan.png's name collides
    assert [Path(f).name for f in config["files"]] == ["1.2.840.99", "scan.dcm", "scan.png", "scan_inverted.dcm"]
    got = written_masks(out, list(config["structure_folders"].values()), stems)
    assert got.shape == (4, 5, h, w) and 0 < (got > 0).mean() < 0.9
    for k in range(1, 4):
        assert np.array_equal(got[k], got[0]), stems[k]

    from doll.data.images import read_raw

    dicom(tmp_path / "window.dcm", p12, "MONOCHROME2", WindowCenter=1000, WindowWidth=1001)  # values 500-1500 shown
    windowed = read_raw(tmp_path / "window.dcm")
    assert windowed.min() == 0 and windowed.max() == 4095
    assert np.array_equal(windowed == 4095, p12 > 1500) and np.array_equal(windowed == 0, p12 <= 500)


def test_older_config_reads_with_the_defaults_and_the_writer_records_every_step(models, tmp_path):
    import doll

    old = tmp_path / "old"
    shutil.copytree(models["full"] / "model", old)
    config = json.loads((old / "config.json").read_text())
    recorded = config["doll"]["normalisation"]
    assert recorded["percentiles"] == [0.5, 99.5] and recorded["resize"] == "area" and "steps" in recorded
    assert (recorded["scale"], recorded["mean"], recorded["std"]) == (1 / 255, 0.5, 0.25)
    config["doll"]["normalisation"] = {"scale": 1 / 255, "mean": 0.5, "std": 0.25}  # as written before
    (old / "config.json").write_text(json.dumps(config))
    model, loaded = doll.load_segmenter(old)
    assert loaded["normalisation"]["percentiles"] == [0.5, 99.5] and not model.training
    files = sorted((models["anatomy"] / "images").glob("*.png"))[:3]
    a = doll.predict(model=str(old), inputs=[str(f) for f in files], out=str(tmp_path / "a"), progress=False)
    b = doll.predict(model=str(models["full"] / "model"), inputs=[str(f) for f in files], out=str(tmp_path / "b"),
                     progress=False)
    assert a["per_structure"] == b["per_structure"] and a["images"] == 3
    for f in (tmp_path / "a" / "masks").rglob("*.png"):
        assert np.array_equal(cv2.imread(str(f)), cv2.imread(str(tmp_path / "b" / f.relative_to(tmp_path / "a"))))


def test_bad_input_is_one_error_line_and_writes_nothing(models, tmp_path, capsys):
    fake = tmp_path / "fake.png"
    fake.write_text("this is not an image\n")
    broken = tmp_path / "broken.dcm"
    broken.write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00\x10\x00garbage")
    good = sorted((models["anatomy"] / "images").glob("*.png"))[0]
    (tmp_path / "empty").mkdir()
    cases = [(fake, "fake.png"), (broken, "broken.dcm"), (tmp_path / "missing.png", "missing.png"),
             (tmp_path / "empty", "holds no image files")]
    for bad, named in cases:
        out = tmp_path / "out"
        code, err = cli_exit(capsys, "predict", "--model", models["adapter"], "--input", good, bad, "--out", out,
                             "--quiet")
        assert code == 2 and err.startswith("error: ") and err.count("\n") == 1 and named in err, err
        assert not out.exists()
    code, err = cli_exit(capsys, "predict", "--model", models["anatomy"], "--input", good, "--out", tmp_path / "o")
    assert code == 2 and err.count("\n") == 1, err  # not a segmenter
    for out, fragment in ((models["full"] / "model", "is inside --model"), (good.parent / "p", "is inside --input"),
                          (models["full"].parent, "holds --model")):  # an --out never overlaps an input
        code, err = cli_exit(capsys, "predict", "--model", models["full"], "--input", good.parent, "--out", out,
                             "--overwrite", "--quiet")
        assert code == 2 and fragment in err and err.count("\n") == 1, err
    assert (models["full"] / "model" / "model.safetensors").is_file() and good.is_file()
    bad_config = tmp_path / "bad_model"
    shutil.copytree(models["full"] / "model", bad_config)
    config = json.loads((bad_config / "config.json").read_text())
    config["doll"]["normalisation"]["std"] = 0
    (bad_config / "config.json").write_text(json.dumps(config))
    code, err = cli_exit(capsys, "predict", "--model", bad_config, "--input", good, "--out", tmp_path / "o")
    assert code == 2 and "normalisation" in err and err.count("\n") == 1, err
