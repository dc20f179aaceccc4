"""Decoding and preprocessing shared by every format.

Rules (documented in the README, versioned by ``PREPROCESS_VERSION`` so caches
invalidate when they change):

* any bit depth (8, 12, 16 bit PNG/JPEG, JSRT raw), colour converted to one channel;
* per-image robust normalisation: the 0.5th and 99.5th intensity percentiles map
  to 0 and 255 (clipped), so 12-bit and 8-bit images look alike;
* resize to a square ``size`` x ``size`` (aspect ratio is not kept: chest X-rays
  are close to square and every published pipeline squashes them); area
  interpolation for images, nearest neighbour for masks.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from doll.errors import DollError

PREPROCESS_VERSION = 1
LOW_PCT, HIGH_PCT = 0.5, 99.5


def _quiet_opencv() -> None:
    """OpenCV's decoders log warnings (``[ WARN:0@1.2] ... PNG input buffer is incomplete``)
    straight to stderr before doll's own ``error:`` line about the same file: keep errors only."""
    try:
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    except AttributeError:  # OpenCV builds without cv2.utils.logging
        if hasattr(cv2, "setLogLevel"):
            cv2.setLogLevel(2)  # 2 = error


_quiet_opencv()

JSRT_RAW_SHAPE = (2048, 2048)


def read_jsrt_raw(path: Path) -> np.ndarray:
    """JSRT ``*.IMG``: headerless big-endian uint16, 2048x2048, 12 bits; shown as 4095 - raw."""
    raw = np.fromfile(path, dtype=">u2")
    if raw.size != JSRT_RAW_SHAPE[0] * JSRT_RAW_SHAPE[1]:
        raise DollError(f"{path} has {raw.size} pixels, a JSRT .IMG has 2048x2048; the file is truncated or not JSRT")
    img = raw.reshape(JSRT_RAW_SHAPE).astype(np.int32)
    return (4095 - np.clip(img, 0, 4095)).astype(np.uint16)


def read_raw(path: str | Path) -> np.ndarray:
    """Decode an image file to a 2-D array of its native dtype (no normalisation)."""
    path = Path(path)
    if path.suffix.upper() == ".IMG":
        return read_jsrt_raw(path)
    if path.suffix.lower() == ".gif":  # OpenCV cannot read GIF (SCR masks are GIFs)
        from PIL import Image

        try:
            with Image.open(path) as im:
                return np.asarray(im.convert("L"))
        except Exception as exc:  # noqa: BLE001 - any decoder failure is bad input
            raise DollError(f"cannot read image {path}: {exc}") from None
    data = np.fromfile(path, dtype=np.uint8) if path.exists() else None
    img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED | cv2.IMREAD_ANYDEPTH) if data is not None and data.size else None
    if img is None:
        raise DollError(f"cannot read image {path}: missing, empty or not an image")
    if img.ndim == 3:
        if img.shape[2] == 4:
            img = img[:, :, :3]
        img = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    return img


def normalise(img: np.ndarray) -> np.ndarray:
    """Robust per-image normalisation to uint8 (percentiles 0.5 / 99.5)."""
    img = img.astype(np.float32)
    lo, hi = np.percentile(img, [LOW_PCT, HIGH_PCT])
    if hi - lo < 1e-6:
        return np.zeros(img.shape, np.uint8)
    return np.clip((img - lo) * (255.0 / (hi - lo)), 0, 255).round().astype(np.uint8)


def load_image(path: str | Path, size: int, with_shape: bool = False):
    """Read, normalise and resize: uint8 (size, size) (and the original (H, W) with ``with_shape``)."""
    raw = read_raw(path)
    img = cv2.resize(normalise(raw), (size, size), interpolation=cv2.INTER_AREA)
    return (img, raw.shape[:2]) if with_shape else img


def load_mask(path: str | Path, size: int, expect_shape: tuple[int, int] | None = None) -> np.ndarray:
    """Read a mask (any nonzero pixel is foreground): uint8 0/1 (size, size), nearest neighbour.
    With ``expect_shape`` (``--strict``), a mask must be its image's size or that size
    divided by a whole number in both directions (SCR's 1024 px masks of 2048 px JSRT
    images); any other size is an error."""
    m = read_raw(path)
    if expect_shape is not None and not same_grid(m.shape[:2], expect_shape):
        raise DollError(f"mask {path} is {m.shape[1]}x{m.shape[0]} but its image is {expect_shape[1]}x{expect_shape[0]} "
                        "(--strict); fix the mask or drop --strict to resize it")
    m = (m > 0).astype(np.uint8)
    return cv2.resize(m, (size, size), interpolation=cv2.INTER_NEAREST)


def same_grid(mask_shape: tuple[int, int], image_shape: tuple[int, int]) -> bool:
    """The mask covers the image on the same pixel grid, possibly subsampled by a whole factor."""
    (mh, mw), (ih, iw) = mask_shape, image_shape
    return mh > 0 and mw > 0 and ih % mh == 0 and iw % mw == 0 and ih // mh == iw // mw


def image_shape(path: str | Path) -> tuple[int, int]:
    return read_raw(path).shape[:2]
