"""Decoded, resized arrays of a data set, cached on disk.

Decoding a 2048x2048 JSRT raw file or 224k CheXpert JPEGs every epoch is too slow,
so every stage reads a data set once into uint8 arrays of ``size x size`` and keeps
them as ``.npy`` files under the cache folder (``$DOLL_CACHE``, default
``artifacts/cache``), keyed by the items, their files' sizes and mtimes, the image
size and :data:`doll.data.images.PREPROCESS_VERSION`. Training then memory-maps them.
Clear the cache with ``rm -r artifacts/cache`` (or your ``$DOLL_CACHE``).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
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


CHUNK = 1024  # images decoded between two flushes of the cache files (bounds memory and lost work)


@contextlib.contextmanager
def _build_lock(path: Path, progress: bool):
    """An exclusive lock on ``path`` (POSIX ``flock``): under torchrun, the ranks of a node
    that ask for the same arrays wait for one of them to decode instead of each decoding
    all of them (a waiting process with ``progress`` says so). Where ``fcntl`` is missing
    (Windows) there is no lock."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    with open(path, "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if progress:
                tqdm.write(f"waiting for another process to finish decoding the images into {path.with_suffix('')}")
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _open_cached(folder: Path, items: list[Item], structures: list[str]) -> Arrays:
    images = np.load(folder / "images.npy", mmap_mode="r")
    if len(images) != len(items):
        raise DollError(f"the image cache {folder} holds {len(images)} images, not {len(items)}; delete it")
    masks = np.load(folder / "masks.npy", mmap_mode="r") if structures else None
    has = np.load(folder / "has_mask.npy") if structures else None
    return Arrays(images, masks, has, list(items))


def _has_masks(items: list[Item], structures: list[str]) -> np.ndarray:
    """bool (N, K): whether each item has a mask file for each structure."""
    return np.array([[s in it.masks for s in structures] for it in items], bool)


def _reader(items: list[Item], size: int, structures: list[str], strict: bool):
    def read(i: int):
        it = items[i]
        try:
            img, shape = load_image(it.image, size, with_shape=True)
        except DollError as exc:
            return i, None, None, exc
        masks = None
        if structures:  # a mask that cannot be read raises at once
            masks = np.stack([load_mask(it.masks[s], size, shape if strict else None) if s in it.masks
                              else np.zeros((size, size), np.uint8) for s in structures])
        return i, img, masks, None
    return read


def _decode_into(items, read, images, masks, start: int, progress: bool, on_chunk=None) -> None:
    """Decode items ``start:`` into ``images`` / ``masks`` (arrays or memory maps), CHUNK
    items at a time; ``on_chunk(next_index)`` after each chunk (the cache's checkpoint).
    A chunk with unreadable images raises, naming how many of that chunk are unreadable."""
    workers = min(8, os.cpu_count() or 1)
    n = len(items)
    with ThreadPoolExecutor(workers) as pool, \
            tqdm(total=n, initial=start, desc=f"decoding {n} images", disable=not progress, leave=False) as bar:
        for lo in range(start, n, CHUNK):  # cv2 releases the GIL while decoding
            bad = []
            for i, img, m, err in pool.map(read, range(lo, min(n, lo + CHUNK))):
                if err is not None:
                    bad.append(err)
                    continue
                images[i] = img
                if masks is not None:
                    masks[i] = m
            hi = min(n, lo + CHUNK)
            if bad:
                span = f"the {hi - lo} images" + ("" if hi - lo == n else f" {lo}..{hi - 1} of {n}")
                what = f"none of {span} could be read" if len(bad) == hi - lo else \
                    f"{len(bad)} of {span} could not be read"
                raise DollError(f"{what} (first: {bad[0]}); fix or remove them")
            bar.update(hi - lo)
            if on_chunk is not None:
                on_chunk(hi)


def load_arrays(items: list[Item], size: int, structures: list[str] | None = None, *,
                cache: bool = True, progress: bool = True, strict: bool = False) -> Arrays:
    """Decode ``items`` to uint8 arrays (N, S, S) and masks (N, K, S, S), or memory-map
    them from the cache. An unreadable image or mask raises DollError. ``strict``: a mask
    that is neither its image's size nor that size divided by a whole number raises
    instead of being resized.

    The cache is built in ``<key>.partial/`` by writing each decoded chunk straight into
    memory-mapped ``.npy`` files (memory stays at one chunk, however big the data set) and
    recording how far it got in ``progress.json``; a stopped build resumes there on the
    next call. When complete the folder is renamed to ``<key>/``. A lock file makes
    concurrent callers (torchrun ranks) wait for one build."""
    structures = list(structures or [])
    if not items:
        raise DollError("no images to load; check --root, --dataset and the split")
    n = len(items)
    read = _reader(items, size, structures, strict)
    if not cache:
        images = np.zeros((n, size, size), np.uint8)
        masks = np.zeros((n, len(structures), size, size), np.uint8) if structures else None
        _decode_into(items, read, images, masks, 0, progress)
        return Arrays(images, masks, _has_masks(items, structures) if structures else None, list(items))

    key = _key(items, size, structures) + ("-strict" if strict and structures else "")
    root = cache_dir()
    folder, partial = root / key, root / f"{key}.partial"
    if (folder / "images.npy").exists():
        return _open_cached(folder, items, structures)
    root.mkdir(parents=True, exist_ok=True)
    with _build_lock(root / f"{key}.lock", progress):
        if (folder / "images.npy").exists():  # built by another process while we waited
            return _open_cached(folder, items, structures)
        state_file = partial / "progress.json"
        try:
            state = json.loads(state_file.read_text())
            start = int(state["done"]) if state.get("n") == n else 0
        except (OSError, ValueError, KeyError, TypeError):
            start = 0
        if not all((partial / f).is_file() for f in ["images.npy"] + (["masks.npy"] if structures else [])):
            start = 0
        if start == 0:
            shutil.rmtree(partial, ignore_errors=True)
            partial.mkdir(parents=True)
        mode = "r+" if start else "w+"
        images = np.lib.format.open_memmap(partial / "images.npy", mode, np.uint8, (n, size, size))
        masks = (np.lib.format.open_memmap(partial / "masks.npy", mode, np.uint8, (n, len(structures), size, size))
                 if structures else None)

        maps = [a for a in (images, masks) if a is not None]

        def checkpoint(done: int) -> None:
            for arr in maps:
                arr.flush()
            with atomic_path(state_file) as tmp:
                tmp.write_text(json.dumps({"n": n, "done": done}))

        try:
            _decode_into(items, read, images, masks, start, progress, checkpoint)
        except DollError:  # a bad file: fixing it changes the key, so this build is of no further use
            maps.clear()
            del images, masks
            shutil.rmtree(partial, ignore_errors=True)
            raise
        maps.clear()
        del images, masks  # close the maps before the rename
        if structures:
            with atomic_path(partial / "has_mask.npy") as tmp:
                with open(tmp, "wb") as fh:
                    np.save(fh, _has_masks(items, structures))
        state_file.unlink()
        shutil.rmtree(folder, ignore_errors=True)  # an incomplete folder left by an older version
        os.replace(partial, folder)
    return _open_cached(folder, items, structures)


def labels_of(arrays: Arrays, n_classes: int) -> np.ndarray:
    """(N, C) raw labels of the items (NaN where an item has none)."""
    return np.stack([it.labels if it.labels is not None else np.full(n_classes, np.nan, np.float32)
                     for it in arrays.items]).astype(np.float32)
