"""JSRT images with the SCR anatomy masks (format ``jsrt``).

Two layouts, detected automatically (the official one wins if both are there):

(a) Official: ``All247images/*.IMG`` (or ``*.IMG`` directly in ``root``): headerless
    2048x2048 big-endian 12-bit raw, decoded by :func:`doll.data.images.read_jsrt_raw`.
    SCR masks ``<scr>/fold1/masks/<structure>/<name>.gif`` and ``<scr>/fold2/...``
    where ``<scr>`` is the first of ``scratch/``, ``scr/``, ``SCR/``,
    ``scr/scratch/`` or the root itself that has a ``fold1/`` or ``fold2/`` folder;
    ``fold<k>/<structure>/`` without the ``masks/`` level is accepted too. An image's
    fold is the SCR fold that holds its masks. Images without any mask are put in
    the split "unlabelled". If no SCR folder exists at all, the folds are assigned as
    in layout (b) without ``folds.csv`` (so nodule classification still has a split).
(b) PNG conversion: ``images/*.png`` (any common image extension) and
    ``masks/<structure>/<name>.png`` or ``.gif`` (``<name>`` = the image's stem; a
    mask named after the whole file, ``JPCLN001.IMG.png`` or ``JPCLN001.png.png``,
    is accepted too). Folds come from ``root/folds.csv`` (columns ``image,fold``;
    ``image`` = file name or stem, fold 1 or 2; images not listed are "unlabelled")
    if it exists, else from the sorted image names alternately: 1st, 3rd, ... ->
    fold 1; 2nd, 4th, ... -> fold 2.

Structure folder names may use spaces (``left lung``, as SCR) or underscores.
"left" is the patient's left, i.e. the image's right half.

Splits: option ``fold`` (1 or 2, default 1): images of that fold are "train", the
other fold's are "test" (the official SCR two-fold protocol).

Labels: ``Nodule`` = 1 for names starting ``JPCLN``, 0 for ``JPCNN``, NaN otherwise.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from doll.data.base import JSRT_STRUCTURES, DatasetFormat, Item
from doll.data.common import IMAGE_EXTS, read_csv, read_int
from doll.errors import DollError

MASK_EXTS = {".gif", ".png", ".bmp", ".tif", ".tiff"}
KNOWN_EXTS = IMAGE_EXTS | MASK_EXTS | {".img"}


def _key(path: Path) -> str:
    """Match key of an image or mask file (or a name in folds.csv): the name without its
    image extensions (``JPCLN001.IMG.png`` -> ``JPCLN001``), upper case."""
    while path.suffix.lower() in KNOWN_EXTS:
        path = path.with_suffix("")
    return path.name.upper()


def nodule_label(name: str) -> float:
    up = name.upper()
    if up.startswith("JPCLN"):
        return 1.0
    if up.startswith("JPCNN"):
        return 0.0
    return float("nan")


class JSRT(DatasetFormat):
    """JSRT + SCR, official raw layout or PNG conversion; see the module docstring."""

    name = "jsrt"
    classes = ["Nodule"]
    structures = list(JSRT_STRUCTURES)
    splits = ("train", "valid", "test", "unlabelled")
    subsampled_masks = True  # SCR's masks are 1024 px for the 2048 px images

    def __init__(self, root, **options):
        super().__init__(root, **options)
        self.fold = read_int(self, "fold", 1, allowed=(1, 2))
        self.layout, self.images_dir, self._images = self._detect()

    # ------------------------------------------------------------------ layout
    def _detect(self) -> tuple[str, Path, list[Path]]:
        for d in (self.root / "All247images", self.root):
            if d.is_dir():
                imgs = sorted(p for p in d.iterdir() if p.is_file() and p.suffix.upper() == ".IMG")
                if imgs:
                    return "official", d, imgs
        d = self.root / "images"
        if d.is_dir():
            imgs = sorted(p for p in d.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTS)
            if not imgs:
                raise DollError(f"no images found in {d}; the JSRT PNG layout needs images/*.png")
            return "png", d, imgs
        raise DollError(
            f"no JSRT images found in {self.root}: expected All247images/*.IMG (official download) "
            "or images/*.png with masks/<structure>/ (PNG conversion); pass that folder as --root"
        )

    def _structure_dirs(self, base: Path) -> dict[str, Path]:
        """structure -> its mask folder under ``base`` (spaces or underscores, any case)."""
        if not base.is_dir():
            return {}
        present = {p.name.lower().replace("_", " ").replace("-", " "): p for p in base.iterdir() if p.is_dir()}
        return {s: present[s] for s in self.structures if s in present}

    def _mask_index(self, base: Path) -> dict[str, dict[str, Path]]:
        """structure -> {image key: mask path} for the structure folders under ``base``."""
        out: dict[str, dict[str, Path]] = {}
        for s, d in self._structure_dirs(base).items():
            out[s] = {}
            for p in sorted(d.iterdir()):
                if p.is_file() and p.suffix.lower() in MASK_EXTS:
                    out[s].setdefault(_key(p), p)
        return out

    def _scr_folds(self) -> dict[int, dict[str, dict[str, Path]]] | None:
        r = self.root
        for base in (r / "scratch", r / "scr", r / "SCR", r / "scr" / "scratch", r):
            if (base / "fold1").is_dir() or (base / "fold2").is_dir():
                folds = {}
                for k in (1, 2):
                    f = base / f"fold{k}"
                    folds[k] = self._mask_index(f / "masks" if (f / "masks").is_dir() else f)
                return folds
        return None

    # ------------------------------------------------------------------ loading
    def _alternate(self, keys: list[str]) -> dict[str, int]:
        return {k: 1 + i % 2 for i, k in enumerate(sorted(keys))}

    def _folds_csv(self) -> dict[str, int]:
        path = self.root / "folds.csv"
        _, rows = read_csv(path, ["image", "fold"], "JSRT fold list")
        folds = {}
        for n, row in enumerate(rows, start=2):
            name = row["image"]
            if not name or "/" in name or "\\" in name or name in (".", ".."):
                raise DollError(f"{path.name} line {n}: image {name!r} is not a file name; list image file names or stems")
            if row["fold"] not in ("1", "2", "1.0", "2.0"):
                raise DollError(f"{path.name} line {n}: fold {row['fold']!r} is invalid; use 1 or 2")
            folds[_key(Path(name))] = int(float(row["fold"]))
        return folds

    def _load(self) -> list[Item]:
        keys = {_key(p): p for p in self._images}
        if len(keys) != len(self._images):
            raise DollError(f"{self.images_dir} holds several files with the same name in different formats; keep one per image")
        masks: dict[str, dict[str, Path]] = {k: {} for k in keys}
        fold_of: dict[str, int] = {}
        if self.layout == "official":
            scr = self._scr_folds()
            if scr is None:
                fold_of = self._alternate(list(keys))
            else:
                for k in (1, 2):
                    for s, index in scr[k].items():
                        for key, p in index.items():
                            if key not in keys:
                                continue
                            if fold_of.get(key, k) != k:
                                raise DollError(f"masks of {key} are in both fold1 and fold2 of the SCR folder; remove one copy")
                            fold_of[key] = k
                            masks[key][s] = p
        else:
            for s, index in self._mask_index(self.root / "masks").items():
                for key, p in index.items():
                    if key in keys:
                        masks[key][s] = p
            if (self.root / "folds.csv").is_file():
                fold_of = self._folds_csv()
                if not fold_of.keys() & keys.keys():
                    raise DollError(f"none of the {len(fold_of)} images in {self.root / 'folds.csv'} is in "
                                    f"{self.images_dir}; list their file names or stems")
            else:
                fold_of = self._alternate(list(keys))

        items = []
        for key, path in keys.items():
            fold = fold_of.get(key)
            split = "unlabelled" if fold is None else ("train" if fold == self.fold else "test")
            name = path.stem
            items.append(
                Item(
                    id=name,
                    image=self.inside(path.relative_to(self.root)),
                    split=split,
                    patient=name,
                    labels=np.array([nodule_label(name)], np.float32),
                    masks={s: self.inside(m.relative_to(self.root)) for s, m in masks[key].items()},
                    meta={"fold": fold, "layout": self.layout},
                )
            )
        items.sort(key=lambda it: it.id)
        for it in items:  # keep structure order stable
            it.masks = {s: it.masks[s] for s in self.structures if s in it.masks}
        return items
