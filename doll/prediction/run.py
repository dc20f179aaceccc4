"""``doll predict``: apply a doll segmenter to new images with the preprocessing it was trained with.

Every input is read and preprocessed first (doll's readers: 8/16-bit PNG, JPEG, JSRT raw,
DICOM; then the steps the model's config.json records under ``normalisation``), so a bad
input stops the run before anything is written. Then, batch by batch on the device (no
gradients, autocast on CUDA): the logits, resized (bilinear) to the image's own size,
thresholded at ``--threshold`` on the probability, and written to ``--out``:

* ``masks/<structure>/<image>.png``: 0 / 255, the input's original size;
* ``overlays/<image>.png``: the image (normalised, at least 256 px a side) with coloured contours;
* ``predictions.csv``: one row per image and structure: ``image, file, structure, mask,
  area_pixels, area_fraction, mean_probability`` (over the mask's pixels; empty for an empty mask);
* ``config.json`` (settings, the model and the preprocessing used, the files read) and
  ``metrics.json`` (counts, mean areas, time; ``"finished": true``, written last).

Structure names come from the model's config.json and image names from file names: both
are made safe file names (``doll.outputs.safe_name``) before they become paths.
"""
from __future__ import annotations

import csv
import io
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm

from doll.data.images import normalise, preprocess, read_raw
from doll.errors import DollError
from doll.outputs import releases_outputs
from doll.prediction.inputs import gather, output_names
from doll.prediction.model import load_segmenter
from doll.train.engine import amp_dtype
from doll.utils import (
    atomic_path,
    check_inputs_apart,
    check_positive,
    check_setting_values,
    prepare_out_dir,
    resolve_device,
    to_tensor,
    unique_names,
    write_json,
    write_png_file,
)

# contour colours (BGR), one per structure in the model's order
PALETTE = [(75, 25, 230), (75, 180, 60), (25, 225, 255), (200, 130, 0), (48, 130, 245), (180, 30, 145),
           (240, 240, 70), (230, 50, 240), (60, 245, 210), (212, 190, 250), (128, 128, 0), (255, 190, 220),
           (40, 110, 170), (200, 250, 255)]
OVERLAY_MIN_SIDE = 256  # smaller images are enlarged (nearest neighbour) so that contours stay visible


@dataclass
class PredictSettings:
    model: str = ""  # a doll segmenter folder, or a finetune run's top folder
    inputs: list[str] | None = None  # image files and folders of images
    out: str = ""
    batch_size: int = 16
    threshold: float = 0.5  # on the probability: a pixel is in a structure when its probability is above it
    device: str = "auto"
    seed: int = 0
    overwrite: bool = False
    progress: bool = True

    def __post_init__(self):
        if not str(self.model).strip():
            raise DollError("--model is empty; name a doll segmenter folder (doll pretrain's --out or a finetune run)")
        if not str(self.out).strip():
            raise DollError("--out is empty; name the folder to write the masks into")
        if isinstance(self.inputs, (str, Path)):
            self.inputs = [self.inputs] if str(self.inputs).strip() else []
        if not self.inputs:
            raise DollError("--input names no image; give image files or folders of images")
        self.model, self.out, self.inputs = str(self.model), str(self.out), [str(p) for p in self.inputs]
        check_setting_values(self)  # types, finite numbers, the seed's range: as every command's settings
        check_positive(batch_size=self.batch_size)
        if not 0 < self.threshold < 1:
            raise DollError(f"--threshold must be a probability in (0, 1), got {self.threshold}")


def _to_size(logits: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(C, h, w) logits resized (bilinear) to (C, H, W); unchanged when already that size."""
    if logits.shape[1:] == tuple(shape):
        return logits
    h, w = shape
    resized = cv2.resize(np.ascontiguousarray(logits.transpose(1, 2, 0)), (w, h), interpolation=cv2.INTER_LINEAR)
    return resized[None] if resized.ndim == 2 else resized.transpose(2, 0, 1)


def _overlay(image: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """BGR: the uint8 image with each mask's outer contours in its structure's colour."""
    h, w = image.shape
    k = max(1, math.ceil(OVERLAY_MIN_SIDE / min(h, w)))
    if k > 1:
        image = cv2.resize(image, (w * k, h * k), interpolation=cv2.INTER_NEAREST)
    picture = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    thickness = max(1, round(max(picture.shape[:2]) / 256))
    for c, mask in enumerate(masks):
        m = mask.astype(np.uint8)
        if k > 1:
            m = cv2.resize(m, (w * k, h * k), interpolation=cv2.INTER_NEAREST)
        contours, _ = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(picture, contours, -1, PALETTE[c % len(PALETTE)], thickness)
    return picture


@releases_outputs
def predict(settings: PredictSettings | None = None, **kwargs) -> dict:
    """Apply a doll segmenter to images; writes masks, overlays and predictions.csv into
    ``out`` and returns what ``metrics.json`` holds::

        doll.predict(model="runs/ft", inputs=["scans/", "extra.dcm"], out="runs/pred")
    """
    s = settings or PredictSettings(**kwargs)
    t0 = time.time()
    s.model = str(Path(s.model).expanduser().resolve())
    files = gather(s.inputs)
    s.inputs = [str(Path(p).expanduser().resolve()) for p in s.inputs]
    device = resolve_device(s.device)
    model, cfg = load_segmenter(s.model)
    size, norm, structures = cfg["image_size"], cfg["normalisation"], list(cfg["classes"])
    folders = unique_names(structures, "structure")
    names = output_names(files)
    inputs = {"--model": s.model, "--model's segmenter": cfg["folder"], **{f"--input {p}": p for p in s.inputs}}
    check_inputs_apart(s.out, inputs)

    # every image read before anything is written: a bad input is an error with no output
    images = np.empty((len(files), size, size), np.uint8)
    shapes = []
    for i, f in enumerate(tqdm(files, desc="reading", unit="image", leave=False, disable=not s.progress)):
        raw = read_raw(f)
        if raw.ndim != 2 or min(raw.shape) < 1:
            raise DollError(f"cannot read image {f}: it is not a 2-D image")
        images[i] = preprocess(raw, size, norm)
        shapes.append(tuple(int(v) for v in raw.shape))

    out = prepare_out_dir(s.out, overwrite=s.overwrite, settings=asdict(s), command="predict", inputs=inputs,
                          holds="an earlier prediction")
    write_json(out / "config.json", {"command": "predict", **asdict(s), "model_folder": cfg["folder"],
                                     "structures": structures, "structure_folders": dict(zip(structures, folders)),
                                     "image_size": size, "normalisation": norm, "files": [str(f) for f in files]})
    torch.manual_seed(s.seed)
    model.to(device)
    cut = math.log(s.threshold / (1 - s.threshold))  # on the logits: probability > t  <=>  logit > log(t / (1 - t))
    dtype = amp_dtype(device)
    rows, areas = [], np.zeros((len(files), len(structures)))
    starts = range(0, len(files), s.batch_size)
    with torch.no_grad(), torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
        for lo in tqdm(starts, desc="predicting", unit="batch", disable=not s.progress):
            x = to_tensor(images[lo:lo + s.batch_size], norm["scale"], norm["mean"], norm["std"]).to(device)
            logits = model(x)
            logits = (logits[0] if isinstance(logits, tuple) else logits).float().cpu().numpy()
            for j, lg in enumerate(logits):
                i = lo + j
                lg = _to_size(lg, shapes[i])
                masks = lg > cut
                for c, (structure, folder) in enumerate(zip(structures, folders)):
                    mask_file = Path("masks") / folder / f"{names[i]}.png"
                    write_png_file(out / mask_file, masks[c].astype(np.uint8) * 255)
                    area = int(masks[c].sum())
                    areas[i, c] = area / masks[c].size
                    mean_p = float((1 / (1 + np.exp(-lg[c][masks[c]].astype(np.float64)))).mean()) if area else None
                    rows.append({"image": names[i], "file": str(files[i]), "structure": structure,
                                 "mask": mask_file.as_posix(), "area_pixels": area,
                                 "area_fraction": round(float(areas[i, c]), 6),
                                 "mean_probability": "" if mean_p is None else round(mean_p, 6)})
                shown = normalise(read_raw(files[i]), norm["percentiles"])
                write_png_file(out / "overlays" / f"{names[i]}.png", _overlay(shown, masks))

    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    with atomic_path(out / "predictions.csv") as tmp:
        tmp.write_text(text.getvalue())
    seconds = time.time() - t0
    metrics = {"command": "predict", "model": cfg["folder"], "images": len(files), "structures": structures,
               "threshold": s.threshold, "image_size": size, "device": str(device),
               "per_structure": {name: {"images_with_mask": int((areas[:, c] > 0).sum()),
                                        "mean_area_fraction": float(areas[:, c].mean())}
                                 for c, name in enumerate(structures)},
               "seconds": round(seconds, 2), "images_per_second": round(len(files) / max(seconds, 1e-9), 2),
               "outputs": {"masks": str(out / "masks"), "overlays": str(out / "overlays"),
                           "predictions": str(out / "predictions.csv")},
               "finished": True}
    write_json(out / "metrics.json", metrics)
    return metrics
