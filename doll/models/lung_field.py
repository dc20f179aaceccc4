"""Lung fields predicted by a `doll finetune --task lung` model.

Used by stage 1 (``train-classifiers --lung-model``: classifiers see only the lung
field, so their evidence cannot come from borders, markers or devices outside it) and
stage 2 (``explain``: inputs masked the same way, saliency kept inside the field).
No ground-truth lung mask is needed at label time: only the model's prediction.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch

from doll.errors import DollError
from doll.models.checkpoint import read_config
from doll.models.segmenter import load_segmenter
from doll.utils import to_tensor

INPUT_MARGIN = 0.04  # dilation of the lung mask that classifier inputs are faded with (x image size)
from doll.models.names import SALIENCY_MARGIN  # noqa: E402,F401 - the default dilation of the saliency field


def lung_field(lung_mask: np.ndarray, margin: float = INPUT_MARGIN) -> np.ndarray:
    """A soft anatomical field from a lung mask: dilated by ``margin`` x size, edges blurred
    (``margin`` 0: the mask itself)."""
    if margin <= 0:
        return (lung_mask > 0).astype(np.float32)
    k = max(1, round(margin * lung_mask.shape[-1]))
    grown = cv2.dilate(lung_mask.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * k + 1, 2 * k + 1)))
    return np.clip(cv2.GaussianBlur(grown.astype(np.float32), (0, 0), k / 2), 0, 1)


def check_field_margin(margin: float) -> None:
    if not 0 <= margin < 0.5:
        raise DollError(f"--field-margin must be in [0, 0.5) (a fraction of the image size), got {margin}")


def lung_model_config(folder: str) -> dict:
    """The ``doll`` config of a `doll finetune --task lung` model folder; DollError otherwise."""
    if not Path(folder).is_dir():
        raise DollError(f"--lung-model {folder} does not exist; train one with `doll finetune --task lung` "
                        "and pass its model/ folder")
    cfg = read_config(folder, kind="segmenter")["doll"]
    if cfg.get("task") != "lung" or cfg.get("classes") != ["lungs"]:
        raise DollError(f"--lung-model {folder} is not a `doll finetune --task lung` model (task {cfg.get('task')!r})")
    return cfg


def load_lung_model(folder: str, device: torch.device) -> tuple[torch.nn.Module, int]:
    """The lung model of ``folder`` on ``device``, in eval mode, and the image size it was trained at."""
    lung_model_config(folder)
    model, cfg = load_segmenter(folder)
    return model.to(device).eval(), cfg["image_size"]


def predict_lung_fields(folder: str, images: np.ndarray, device: torch.device, batch_size: int,
                        margin: float = INPUT_MARGIN, loaded: tuple | None = None) -> np.ndarray:
    """Soft lung fields (N, H, W) in [0, 1] for uint8 images (N, H, W) (``loaded``: the
    result of :func:`load_lung_model`, for callers that predict batch by batch)."""
    masks = predict_lung_masks(folder, images, device, batch_size, loaded)
    return np.stack([lung_field(m, margin) for m in masks])


def predict_lung_masks(folder: str, images: np.ndarray, device: torch.device, batch_size: int,
                       loaded: tuple | None = None) -> np.ndarray:
    """Binary lung masks (N, H, W) uint8 for uint8 images (N, H, W)."""
    model, own = loaded or load_lung_model(folder, device)
    size = images.shape[-1]
    out = np.zeros(images.shape, np.uint8)
    with torch.no_grad():
        for i in range(0, len(images), batch_size):
            batch = np.stack([cv2.resize(np.asarray(im), (own, own), interpolation=cv2.INTER_AREA)
                              for im in images[i:i + batch_size]])
            pred = (model(to_tensor(batch).to(device))[:, 0] > 0).cpu().numpy().astype(np.uint8)
            for j, m in enumerate(pred):
                out[i + j] = cv2.resize(m, (size, size), interpolation=cv2.INTER_NEAREST)
    return out


def mask_images(images: np.ndarray, fields: np.ndarray) -> np.ndarray:
    """uint8 images with everything outside the lung field faded to black (the IG zero baseline)."""
    return np.round(np.asarray(images, np.float32) * fields).astype(np.uint8)
