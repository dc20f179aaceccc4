"""Decoded, resized arrays of a data set, cached on disk.

Decoding a 2048x2048 JSRT raw file or 224k CheXpert JPEGs every epoch is too slow,
so every stage reads a data set once into uint8 arrays of ``size x size`` and keeps
them as ``.npy`` files under the cache folder (``$DOLL_CACHE``, default
``artifacts/cache``), keyed by the items, their files' sizes and mtimes, the image
size and :data:`doll.data.images.PREPROCESS_VERSION`. Training then memory-maps them.
Clear the cache with ``rm -r artifacts/cache`` (or your ``$DOLL_CACHE``).
"""
from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from doll.data.base import Item
from doll.data.images import PREPROCESS_VERSION, load_image, load_mask
from doll.errors import DollError
from doll.utils import atomic_path


@dataclass
class Arrays:
    images: np.ndarray  # uint8 (N, S, S)
    masks: np.ndarray | None  # uint8 0/1 (N, K, S, S) for the requested structures
    has_mask: np.ndarray | None  # bool (N, K): the mask file exists
    items: list[Item]


def cache_dir() -> Path:
    return Path(os.environ.get("DOLL_CACHE", "artifacts/cache"))


def _file_key(path: Path | None) -> str:
    """A file's path, size and mtime: an edited file (same name) gets a new cache key."""
    st = path.stat() if path is not None and path.exists() else None
    return f"{path or ''}|{st and st.st_size}|{st and st.st_mtime_ns}\n"


def _key(items: list[Item], size: int, structures: list[str]) -> str:
    h = hashlib.sha1(f"v{PREPROCESS_VERSION}|{size}|{'|'.join(structures)}".encode())
    for it in items:
        h.update(_file_key(it.image).encode())
        for s in structures:
            h.update(_file_key(it.masks.get(s)).encode())
    return h.hexdigest()[:20]


def _decode_all(fn, jobs, desc, progress):
    workers = min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(workers) as pool:  # cv2 releases the GIL while decoding
        return list(tqdm(pool.map(fn, jobs), total=len(jobs), desc=desc, disable=not progress, leave=False))


def load_arrays(items: list[Item], size: int, structures: list[str] | None = None, *,
                cache: bool = True, progress: bool = True, skip_unreadable: bool = False,
                strict: bool = False) -> Arrays:
    """Decode ``items`` to arrays (cached). Unreadable images raise, or are dropped with
    ``skip_unreadable`` (all unreadable always raises). ``strict``: a mask that is neither its
    image's size nor that size divided by a whole number raises instead of being resized."""
    structures = list(structures or [])
    if not items:
        raise DollError("no images to load; check --root, --dataset and the split")
    key = _key(items, size, structures) + ("-strict" if strict and structures else "")
    folder = cache_dir() / key
    if cache and (folder / "images.npy").exists():
        images = np.load(folder / "images.npy", mmap_mode="r")
        keep = np.load(folder / "keep.npy")
        kept = [it for it, k in zip(items, keep) if k]
        masks = np.load(folder / "masks.npy", mmap_mode="r") if structures else None
        has = np.load(folder / "has_mask.npy") if structures else None
        return Arrays(images, masks, has, kept)

    shapes: dict[str, tuple[int, int]] = {}

    def read(it: Item):
        try:
            img, shapes[it.id] = load_image(it.image, size, with_shape=True)
            return img
        except DollError as exc:
            return exc

    decoded = _decode_all(read, items, f"decoding {len(items)} images at {size}px", progress)
    bad = [(it, r) for it, r in zip(items, decoded) if isinstance(r, Exception)]
    if len(bad) == len(items):
        raise DollError(f"none of the {len(items)} images could be read (first: {bad[0][1]})")
    if bad and not skip_unreadable:
        raise DollError(f"{len(bad)} of {len(items)} images could not be read (first: {bad[0][1]}); fix or remove them")
    keep = np.array([not isinstance(r, Exception) for r in decoded])
    kept = [it for it, k in zip(items, keep) if k]
    images = np.stack([r for r in decoded if not isinstance(r, Exception)]) if kept else np.zeros((0, size, size), np.uint8)
    masks = has = None
    if structures:
        has = np.array([[s in it.masks for s in structures] for it in kept], bool)

        def read_masks(it: Item):
            expect = shapes[it.id] if strict else None
            return np.stack([load_mask(it.masks[s], size, expect) if s in it.masks else np.zeros((size, size), np.uint8)
                             for s in structures])

        masks = np.stack(_decode_all(read_masks, kept, "decoding masks", progress))
    if cache:
        folder.mkdir(parents=True, exist_ok=True)
        for name, arr in (("keep", keep), ("masks", masks), ("has_mask", has), ("images", images)):
            if arr is not None:
                with atomic_path(folder / f"{name}.npy") as tmp:
                    with open(tmp, "wb") as fh:
                        np.save(fh, arr)
    return Arrays(images, masks, has, kept)


def labels_of(arrays: Arrays, n_classes: int) -> np.ndarray:
    """(N, C) raw labels of the kept items (NaN where an item has none)."""
    return np.stack([it.labels if it.labels is not None else np.full(n_classes, np.nan, np.float32)
                     for it in arrays.items]).astype(np.float32)
