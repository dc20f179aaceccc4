"""Torch datasets over cached arrays, with chest-X-ray-safe augmentation.

Augmentation (training only): small rotation (+-7 deg), scale (0.9-1.1), translation
(+-6 %), brightness/contrast (+-10 %) and gamma (0.8-1.25). No horizontal flip: left
and right structures are labelled and the heart sits on the patient's left. The
random draw depends only on ``(seed, epoch, index)``, so a resumed run sees exactly
the same augmented images as an uninterrupted one.

Optional for classifiers, ``hide`` (Hide-and-Seek, Singh & Lee, ICCV 2017): the image is
cut into an 8 x 8 grid and each cell is blacked out (the IG baseline, and the fill
outside a lung field) with probability ``hide``, so that a classifier cannot rely on the
single most telling spot and has to learn from all of the evidence; its explanations
then cover more of the lesion.
"""
from __future__ import annotations

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from doll.data.images import NORMALISATION  # noqa: F401 - re-exported: what every model's config.json records
from doll.utils import MEAN, STD, to_tensor  # noqa: F401 - re-exported: the networks' input

HIDE_GRID = 8  # Hide-and-Seek cells per side


def hide_cells(img: np.ndarray, p: float, rng: np.random.Generator) -> np.ndarray:
    """Black out each cell of a HIDE_GRID x HIDE_GRID grid with probability ``p`` (a copy)."""
    h, w = img.shape[:2]
    keep = rng.random((HIDE_GRID, HIDE_GRID)) >= p
    rows = np.minimum(np.arange(h) * HIDE_GRID // h, HIDE_GRID - 1)
    cols = np.minimum(np.arange(w) * HIDE_GRID // w, HIDE_GRID - 1)
    return img * keep[rows][:, cols].astype(img.dtype)


def augment(img: np.ndarray, masks: np.ndarray | None, rng: np.random.Generator, hide: float = 0.0):
    s = img.shape[0]
    angle = rng.uniform(-7, 7)
    scale = rng.uniform(0.9, 1.1)
    tx, ty = rng.uniform(-0.06, 0.06, size=2) * s
    m = cv2.getRotationMatrix2D((s / 2, s / 2), angle, scale)
    m[:, 2] += (tx, ty)
    out = cv2.warpAffine(img, m, (s, s), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    x = out.astype(np.float32) / 255.0
    x = np.clip(x ** rng.uniform(0.8, 1.25), 0, 1)
    x = np.clip((x - 0.5) * rng.uniform(0.9, 1.1) + 0.5 + rng.uniform(-0.1, 0.1), 0, 1)
    out = (x * 255).round().astype(np.uint8)
    if hide > 0:  # drawn last, so that hide=0 leaves every other draw as it was
        out = hide_cells(out, hide, rng)
    if masks is not None:
        if masks.dtype == np.float16:  # OpenCV does not warp float16
            masks = masks.astype(np.float32)
        # the same border as the image's: a structure mirrored into view is labelled where it shows
        masks = np.stack([cv2.warpAffine(k, m, (s, s), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_REFLECT)
                          for k in masks])
    return out, masks


class ArrayDataset(Dataset):
    """Rows of cached arrays. Each sample is a dict with ``image`` (1, S, S), ``index``,
    and, when given, ``target``/``weight`` (C,) image labels, ``mask`` (K, S, S) float and
    ``valid`` (K,): which mask channels carry a label (others are left out of the loss).
    ``hide`` > 0 adds Hide-and-Seek to the augmentation (image labels only: a hidden
    cell would make a mask wrong)."""

    def __init__(self, images, targets=None, weights=None, masks=None, valid=None, augment: bool = False,
                 seed: int = 0, indices=None, hide: float = 0.0):
        if hide and masks is not None:
            raise ValueError("hide (Hide-and-Seek) is for image labels only, not masks")
        self.images, self.targets, self.weights, self.masks, self.valid = images, targets, weights, masks, valid
        self.indices = np.arange(len(images)) if indices is None else np.asarray(indices)
        self.augment, self.seed, self.epoch, self.hide = augment, seed, 0, hide
        # an image listed several times (a few masks cycled) gets a different augmentation per copy
        self.repeats = len(np.unique(self.indices)) < len(self.indices)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, i):
        j = int(self.indices[i])
        img = np.asarray(self.images[j])
        masks = np.asarray(self.masks[j]) if self.masks is not None else None
        if self.augment:
            key = [self.seed, self.epoch, j, i] if self.repeats else [self.seed, self.epoch, j]
            img, masks = augment(img, masks, np.random.default_rng(key), self.hide)
        sample = {"image": to_tensor(img), "index": j}
        if self.targets is not None:
            sample["target"] = torch.as_tensor(self.targets[j], dtype=torch.float32)
            sample["weight"] = torch.as_tensor(self.weights[j], dtype=torch.float32)
        if masks is not None:
            sample["mask"] = torch.tensor(masks, dtype=torch.float32)  # a copy: cached arrays are read-only
        if self.valid is not None:
            sample["valid"] = torch.as_tensor(self.valid[j], dtype=torch.float32)
        return sample
