"""Decoding and preprocessing shared by every format.

Rules (documented in the README, versioned by ``PREPROCESS_VERSION`` so caches
invalidate when they change):

* any bit depth (8, 12, 16 bit PNG/JPEG, JSRT raw), colour converted to one channel;
* per-image robust normalisation: the 0.5th and 99.5th intensity percentiles map
  to 0 and 255 (clipped), so 12-bit and 8-bit images look alike;
* resize to a square ``size`` x ``size`` (aspect ratio is not kept: chest X-rays
  are close to square and every published pipeline squashes them); area
  interpolation for images, nearest neighbour for masks;
* DICOM (``.dcm``, ``.dicom``, or any file with the ``DICM`` signature) is read with
  pydicom: the modality LUT (rescale) and the VOI LUT / window applied
  (``apply_modality_lut``, ``apply_voi_lut``), MONOCHROME1 inverted so bones are bright.

:data:`NORMALISATION` records all of it; every model's config.json carries it under
``"normalisation"`` (what ``doll predict`` reads back with :func:`read_normalisation`).
"""
from __future__ import annotations

import warnings
from pathlib import Path

import cv2
import numpy as np

from doll.errors import DollError
from doll.utils import NORMALISATION as NETWORK_INPUT

PREPROCESS_VERSION = 1
LOW_PCT, HIGH_PCT = 0.5, 99.5
RESIZE = {"area": cv2.INTER_AREA}  # interpolation of images, by the name config.json records

# The whole way from an image file to a network's input, as every model's config.json records
# it under "normalisation" (older folders have only scale / mean / std: the other keys then
# take these values, which they were made with).
NORMALISATION = {
    "steps": "one channel; the image's percentiles[0] / percentiles[1] intensity percentiles to 0 / 255 (clipped, "
             "rounded to uint8); resize to image_size x image_size (aspect ratio not kept) with `resize` "
             "interpolation; x * scale; (x - mean) / std",
    "percentiles": [LOW_PCT, HIGH_PCT], "resize": "area", **NETWORK_INPUT, "preprocess_version": PREPROCESS_VERSION,
}
DICOM_EXTS = {".dcm", ".dicom"}


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


def is_dicom(path: str | Path) -> bool:
    """The file has DICOM's signature (``DICM`` after the 128-byte preamble)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:] == b"DICM"


def read_dicom(path: str | Path) -> np.ndarray:
    """A single-frame DICOM image as displayed: modality LUT (rescale slope / intercept) and
    VOI LUT or window applied with pydicom, MONOCHROME1 inverted (its lowest value is white)
    within the output range, colour converted to one channel. Compressed transfer syntaxes
    need pydicom's optional decoders (pylibjpeg, gdcm); without them the error says so."""
    import pydicom
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    path = Path(path)
    try:
        with warnings.catch_warnings():  # pydicom warns about each oddity of a damaged file: the error says it
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(path)
            arr = ds.pixel_array if "PixelData" in ds else None
        if arr is None:
            raise DollError(f"DICOM {path} holds no image (no pixel data)")
        photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        if frames > 1:
            raise DollError(f"DICOM {path} holds {frames} frames; doll reads single-frame images")
        if photometric.startswith("MONOCHROME"):
            arr = apply_voi_lut(apply_modality_lut(arr, ds), ds)
            if photometric == "MONOCHROME1":
                lo, hi = _dicom_display_range(ds)
                arr = (lo + hi) - arr.astype(np.float64 if arr.dtype.kind == "f" else np.int64)
    except DollError:
        raise
    except Exception as exc:  # noqa: BLE001 - pydicom's errors (not DICOM, truncated, no decoder) are bad input
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise DollError(f"cannot read DICOM {path}: {first}") from None
    if arr.ndim == 3 and arr.shape[2] in (3, 4):  # RGB (pydicom converts YBR to RGB)
        arr = cv2.cvtColor(np.ascontiguousarray(arr[:, :, :3]), cv2.COLOR_RGB2GRAY)
    if arr.ndim != 2:
        raise DollError(f"DICOM {path} holds an array of shape {arr.shape}; doll reads single-frame 2-D images")
    return arr


def _dicom_display_range(ds) -> tuple[float, float]:
    """The range of values after the modality and VOI LUTs, as pydicom's ``apply_voi_lut``
    and ``apply_windowing`` take it: MONOCHROME1 is inverted within it (``lo + hi - x``)."""
    voi = ds.get("VOILUTSequence")
    if voi and voi[0].get("LUTDescriptor") is not None and voi[0].get("LUTData") is not None:
        return 0.0, float(2 ** int(voi[0].LUTDescriptor[2]) - 1)
    if ds.get("ModalityLUTSequence"):
        return 0.0, float(2 ** int(ds.ModalityLUTSequence[0].LUTDescriptor[2]) - 1)
    bits = int(ds.get("BitsStored", 16) or 16)
    signed = int(ds.get("PixelRepresentation", 0) or 0) == 1
    lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    slope, intercept = ds.get("RescaleSlope"), ds.get("RescaleIntercept")
    if slope is not None and intercept is not None:
        lo, hi = sorted((lo * float(slope) + float(intercept), hi * float(slope) + float(intercept)))
    return lo, hi


def read_raw(path: str | Path) -> np.ndarray:
    """Decode an image file to a 2-D array of its native dtype (no normalisation): PNG, JPEG,
    BMP, TIFF (any bit depth), GIF, JSRT raw ``.IMG``, DICOM (by extension or signature)."""
    path = Path(path)
    if path.suffix.upper() == ".IMG":
        return read_jsrt_raw(path)
    if path.suffix.lower() in DICOM_EXTS:
        return read_dicom(path)
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
        if data is not None and data.size and is_dicom(path):  # DICOM files often have no extension
            return read_dicom(path)
        raise DollError(f"cannot read image {path}: missing, empty or not an image")
    if img.ndim == 3:
        if img.shape[2] == 4:
            img = img[:, :, :3]
        img = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    return img


def normalise(img: np.ndarray, percentiles: tuple[float, float] = (LOW_PCT, HIGH_PCT)) -> np.ndarray:
    """Robust per-image normalisation to uint8 (percentiles 0.5 / 99.5 by default): the image
    in float32, its percentiles by ``np.percentile`` (linear), values mapped linearly from
    [low, high] to [0, 255], clipped and rounded.

    A uint8 or uint16 image (nearly every X-ray file) gives the same numbers at a fraction of
    the cost (2,320 x 2,828 px: 131 ms -> about 5 ms; ``benchmarks/jpeg_decode.py``): the
    percentiles come from its histogram (:func:`histogram_percentiles`, ``np.percentile``'s
    arithmetic on the two order statistics it needs) and the mapping is a table over its
    possible values, made with the same float arithmetic."""
    levels = {np.dtype(np.uint8): 256, np.dtype(np.uint16): 65536}.get(img.dtype)
    if levels and img.size and _histogram_percentiles_exact():
        lo, hi = histogram_percentiles(img, levels, percentiles)
        if hi - lo < 1e-6:
            return np.zeros(img.shape, np.uint8)
        table = _mapped(np.arange(levels, dtype=np.float32), lo, hi)
        return cv2.LUT(img, table) if levels == 256 and img.ndim == 2 and img.flags.c_contiguous else table[img]
    img = img.astype(np.float32)
    lo, hi = np.percentile(img, list(percentiles))
    if hi - lo < 1e-6:
        return np.zeros(img.shape, np.uint8)
    return _mapped(img, lo, hi)


def _mapped(values: np.ndarray, lo, hi) -> np.ndarray:
    return np.clip((values - lo) * (255.0 / (hi - lo)), 0, 255).round().astype(np.uint8)


def histogram_percentiles(img: np.ndarray, levels: int, percentiles) -> tuple[np.float64, np.float64]:
    """``np.percentile(img.astype(np.float32), list(percentiles))`` of an unsigned integer image
    with ``levels`` possible values, from its histogram: the order statistics at the ranks
    numpy's linear method reads, then numpy's interpolation (``_lerp``: float32 values, float64
    weights, the weight's complement from above at 0.5 and over), step for step."""
    flat = img.reshape(-1)
    if img.ndim == 2 and img.size < 2**24 and img.flags.c_contiguous:  # OpenCV's float32 counts are exact below 2**24
        counts = cv2.calcHist([img], [0], None, [levels], [0, levels]).ravel().astype(np.int64)
    else:
        counts = np.bincount(flat, minlength=levels)
    cumulative = np.cumsum(counts)
    n = flat.size
    virtual = (n - 1) * np.true_divide(list(percentiles), 100)  # as np.percentile: q / 100, then (n - 1) q
    previous = np.floor(virtual)
    following = previous + 1
    previous[virtual >= n - 1] = following[virtual >= n - 1] = -1  # at or past the last: the largest value
    previous[virtual < 0] = following[virtual < 0] = 0
    previous, following = previous.astype(np.intp), following.astype(np.intp)

    def value_at(rank):  # the rank-th smallest pixel value (rank -1: the largest), as float32
        return np.searchsorted(cumulative, np.where(rank < 0, n - 1, rank), side="right").astype(np.float32)

    a, b = value_at(previous), value_at(following)
    gamma = np.asanyarray(virtual - previous, dtype=virtual.dtype)
    diff = b - a
    result = np.add(a, diff * gamma)
    np.subtract(b, diff * (1 - gamma), out=result, where=gamma >= 0.5, casting="unsafe", dtype=result.dtype)
    return result[0], result[1]


_EXACT: list[bool] = []


def _histogram_percentiles_exact() -> bool:
    """Whether :func:`histogram_percentiles` gives this NumPy's ``np.percentile`` bit for bit,
    checked once per process on a few images (were NumPy's arithmetic ever to change, every
    image would take ``np.percentile`` again, not slightly different numbers)."""
    if not _EXACT:
        rng = np.random.default_rng(0)
        cases = [np.full((1, 1), 7, np.uint8), np.array([[0, 255]], np.uint8), np.full((3, 5), 9, np.uint16)]
        for shape in ((1, 3), (7, 11), (64, 97), (201, 203)):
            cases.append(rng.integers(0, 256, shape, dtype=np.uint8))
            cases.append((rng.integers(0, 4096, shape) * rng.integers(1, 16, shape)).astype(np.uint16))
        quantiles = [(LOW_PCT, HIGH_PCT), (0.0, 100.0), (1.0, 99.0), (2.5, 97.5), (10.0, 90.0)]
        _EXACT.append(all(
            np.array_equal(np.percentile(c.astype(np.float32), list(q)),
                           np.array(histogram_percentiles(c, 256 if c.dtype == np.uint8 else 65536, q)))
            for c in cases for q in quantiles))
    return _EXACT[0]


def preprocess(raw: np.ndarray, size: int, normalisation: dict | None = None) -> np.ndarray:
    """A decoded image as a network takes it before scaling: normalised and resized, uint8
    (size, size). ``normalisation``: a model's recorded block (:func:`read_normalisation`);
    None: doll's own."""
    n = read_normalisation(normalisation)
    return cv2.resize(normalise(raw, n["percentiles"]), (size, size), interpolation=RESIZE[n["resize"]])


def load_image(path: str | Path, size: int, with_shape: bool = False, normalisation: dict | None = None):
    """Read, normalise and resize: uint8 (size, size) (and the original (H, W) with ``with_shape``)."""
    raw = read_raw(path)
    img = preprocess(raw, size, normalisation)
    return (img, raw.shape[:2]) if with_shape else img


def read_normalisation(block: dict | None, source: str = "the model's config.json") -> dict:
    """A model's ``"normalisation"`` block with every key :data:`NORMALISATION` has, checked
    (it is data read from a file): keys an older folder lacks take today's values, which
    that folder was made with; values doll cannot apply are a DollError naming ``source``."""
    if block is None:
        return dict(NORMALISATION)
    if not isinstance(block, dict):
        raise DollError(f"{source}: 'normalisation' is not a mapping; this folder was not written by doll")
    n = {**NORMALISATION, **block}
    try:
        lo, hi = (float(v) for v in n["percentiles"])
        scale, mean, std = float(n["scale"]), float(n["mean"]), float(n["std"])
    except (TypeError, ValueError):
        raise DollError(f"{source}: 'normalisation' {block} is not what doll writes (numbers for percentiles, "
                        "scale, mean, std)") from None
    if not (0 <= lo < hi <= 100) or not scale > 0 or not std > 0 or not np.isfinite([scale, mean, std]).all():
        raise DollError(f"{source}: 'normalisation' {block} is out of range (0 <= low < high <= 100 percentiles, "
                        "positive scale and std)")
    if not isinstance(n["resize"], str) or n["resize"] not in RESIZE:
        raise DollError(f"{source}: 'normalisation' names resize {n['resize']!r}; this doll applies "
                        f"{', '.join(RESIZE)}")
    return {**n, "percentiles": [lo, hi], "scale": scale, "mean": mean, "std": std}


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
