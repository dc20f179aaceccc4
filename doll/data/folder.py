"""A plain folder of images, with optional masks and labels (format ``folder``).

Layout (only ``images/`` is required)::

    root/
      images/**/<name>.<png|jpg|jpeg|bmp|tif|tiff>   searched recursively
      masks/<structure>/<same relative path>.<any image extension>
      labels.csv                                      optional

* ``id`` is the path relative to ``images/`` without the extension (``a/b/x``).
* ``structures`` are the sub-folders of ``masks/`` (sorted); an image's mask for a
  structure is the file with the same relative path (any image extension).
* ``labels.csv`` has the header ``image,<class 1>,<class 2>,...`` and optionally a
  ``split`` column (``train``/``valid``/``test``; ``val``/``validation`` are read as
  ``valid``). ``image`` is the path relative to ``images/`` (with or without the
  extension) or, when unambiguous, the bare file stem. Values are ``1``, ``0``,
  ``-1`` (uncertain) or blank (unknown, NaN). ``classes`` are the header's columns
  other than ``image`` and ``split``. Images with no row get NaN labels and split
  ``train``; rows naming no existing image are skipped and listed in ``self.missing``.

Options: none.

This module also holds the small helpers the other format readers share
(:data:`IMAGE_EXTS`, :func:`check_split`, :func:`read_fraction`, :func:`hold_out`,
:func:`read_csv`).
"""
from __future__ import annotations

import csv
import hashlib
import math
import os
from pathlib import Path

import numpy as np

from doll.data.base import DatasetFormat, Item
from doll.errors import DollError

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}
SPLIT_ALIASES = {"train": "train", "valid": "valid", "val": "valid", "validation": "valid", "test": "test"}


# --------------------------------------------------------------------------- helpers
def check_split(fmt: DatasetFormat, split: str | None) -> None:
    if split is not None and split not in fmt.splits:
        raise DollError(f"unknown split {split!r} for {fmt.name}; choose one of: {', '.join(fmt.splits)}")


def read_fraction(fmt: DatasetFormat, option: str, default: float = 0.0) -> float:
    """A fraction option in [0, 1)."""
    value = fmt.options.get(option, default)
    try:
        value = float(value if value is not None else default)
    except (TypeError, ValueError):
        raise DollError(f"option {option}={value!r} for {fmt.name} is not a number; give a fraction such as 0.1") from None
    if not 0.0 <= value < 1.0 or math.isnan(value):
        raise DollError(f"option {option}={value} for {fmt.name} is out of range; give a fraction in [0, 1)")
    return value


def read_int(fmt: DatasetFormat, option: str, default: int, allowed: tuple[int, ...] | None = None) -> int:
    value = fmt.options.get(option, default)
    try:
        value = int(value if value is not None else default)
    except (TypeError, ValueError):
        raise DollError(f"option {option}={value!r} for {fmt.name} is not an integer") from None
    if allowed is not None and value not in allowed:
        raise DollError(f"option {option}={value} for {fmt.name} is invalid; choose one of: {', '.join(map(str, allowed))}")
    return value


def hold_out(keys, fraction: float, seed: int = 0) -> set[str]:
    """Deterministically pick ``round(fraction * n)`` of the distinct ``keys`` (e.g. patients).

    Keys are ordered by a hash of ``seed`` and the key, so the choice does not depend on
    file order and adding images changes little. At least one key is picked when
    ``fraction > 0`` and at least one is always left out.
    """
    unique = sorted(set(keys))
    if fraction <= 0 or len(unique) < 2:
        return set()
    n = min(len(unique) - 1, max(1, round(fraction * len(unique))))
    ranked = sorted(unique, key=lambda k: hashlib.sha1(f"{seed}:{k}".encode()).hexdigest())
    return set(ranked[:n])


def read_csv(path: Path, required: list[str], what: str) -> tuple[list[str], list[dict[str, str]]]:
    """Read a CSV with a header; raise DollError naming any missing ``required`` column."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if header is None:
                raise DollError(f"{what} {path} is empty; it needs a header row with: {', '.join(required)}")
            header = [h.strip() for h in header]
            rows = [dict(zip(header, (v.strip() for v in row))) for row in reader if any(v.strip() for v in row)]
    except UnicodeDecodeError:
        raise DollError(f"{what} {path} is not a text CSV file; re-export it as UTF-8 CSV") from None
    for col in required:
        if col not in header:
            raise DollError(f"{what} {path} has no {col!r} column (found: {', '.join(header)}); fix the header row")
    return header, rows


def walk_images(top: Path) -> list[Path]:
    """All image files under ``top`` (recursively, sorted)."""
    out = []
    for dirpath, dirnames, filenames in os.walk(top):
        dirnames.sort()
        for fn in sorted(filenames):
            if Path(fn).suffix.lower() in IMAGE_EXTS and not fn.startswith("."):
                out.append(Path(dirpath) / fn)
    return out


def parse_label(value: str, where: str) -> float:
    """``1``/``0``/``-1``/blank (also ``1.0`` etc.) -> float; anything else is an error."""
    v = value.strip()
    if v == "":
        return float("nan")
    try:
        x = float(v)
    except ValueError:
        x = None
    if x not in (1.0, 0.0, -1.0):
        raise DollError(f"{where}: label value {value!r} is invalid; use 1, 0, -1 (uncertain) or leave it blank (unknown)")
    return x


# --------------------------------------------------------------------------- format
class Folder(DatasetFormat):
    """``images/`` (+ optional ``masks/<structure>/`` and ``labels.csv``); see the module docstring."""

    name = "folder"

    def __init__(self, root, **options):
        super().__init__(root, **options)
        self.images_dir = self.root / "images"
        if not self.images_dir.is_dir():
            raise DollError(f"folder images/ not found in {self.root}; a 'folder' data set needs root/images/ with the image files")
        self.masks_dir = self.root / "masks"
        self.structures = (
            sorted(p.name for p in self.masks_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
            if self.masks_dir.is_dir()
            else []
        )
        self.labels_csv = self.root / "labels.csv"
        self._header, self._rows = ([], [])
        self.classes = []
        if self.labels_csv.exists():
            self._header, self._rows = read_csv(self.labels_csv, ["image"], "labels file")
            self.classes = [h for h in self._header if h not in ("image", "split") and h != ""]
        self.missing: list[str] = []
        self._items: list[Item] | None = None

    def items(self, split: str | None = None) -> list[Item]:
        check_split(self, split)
        if self._items is None:
            self._items = self._load()
        return self._items if split is None else [it for it in self._items if it.split == split]

    def _load(self) -> list[Item]:
        files = walk_images(self.images_dir)
        if not files:
            raise DollError(f"no images (.png/.jpg/.jpeg/.bmp/.tif/.tiff) found under {self.images_dir}; put the images there")
        by_id: dict[str, Path] = {}
        for p in files:
            rel = p.relative_to(self.images_dir).with_suffix("").as_posix()
            if rel in by_id:
                raise DollError(f"images {by_id[rel].name} and {p.name} in {p.parent} share the id {rel!r}; rename one of them")
            by_id[rel] = p
        by_stem: dict[str, list[str]] = {}
        for rel in by_id:
            by_stem.setdefault(rel.rsplit("/", 1)[-1], []).append(rel)

        masks: dict[str, dict[str, Path]] = {}
        for s in self.structures:
            masks[s] = {}
            sdir = self.masks_dir / s
            for p in walk_images(sdir):
                masks[s].setdefault(p.relative_to(sdir).with_suffix("").as_posix(), p)

        labels: dict[str, np.ndarray] = {}
        splits: dict[str, str] = {}
        for n, row in enumerate(self._rows, start=2):
            where = f"{self.labels_csv.name} line {n}"
            name = row.get("image", "")
            if not name:
                raise DollError(f"{where}: the image column is empty; give the image's path relative to images/")
            self.inside(name, base=self.images_dir)  # refuse ../../ paths
            key = self._match(name, by_id, by_stem, where)
            if key is None:
                self.missing.append(name)
                continue
            if key in labels:
                raise DollError(f"{where}: image {name!r} is listed twice in {self.labels_csv.name}; keep one row per image")
            labels[key] = np.array([parse_label(row.get(c, ""), f"{where}, column {c!r}") for c in self.classes], np.float32)
            if "split" in row and row["split"] != "":
                s = SPLIT_ALIASES.get(row["split"].lower())
                if s is None:
                    raise DollError(f"{where}: split {row['split']!r} is invalid; use train, valid or test")
                splits[key] = s
        if self._rows and not labels:
            raise DollError(
                f"none of the {len(self._rows)} rows of {self.labels_csv} names an image under {self.images_dir}; "
                "the image column must hold paths relative to images/"
            )

        items = []
        for rel, p in by_id.items():
            lab = labels.get(rel)
            if lab is None:
                lab = np.full(len(self.classes), np.nan, np.float32)
            items.append(
                Item(
                    id=rel,
                    image=self.inside(p.relative_to(self.root)),
                    split=splits.get(rel, "train"),
                    patient=rel,
                    labels=lab,
                    masks={s: self.inside(masks[s][rel].relative_to(self.root)) for s in self.structures if rel in masks[s]},
                )
            )
        return items

    @staticmethod
    def _match(name: str, by_id: dict, by_stem: dict, where: str) -> str | None:
        name = name.replace("\\", "/")
        while name.startswith("./"):
            name = name[2:]
        if name in by_id:
            return name
        p = Path(name)
        if p.suffix.lower() in IMAGE_EXTS and p.with_suffix("").as_posix() in by_id:
            return p.with_suffix("").as_posix()
        if "/" not in name:
            cands = by_stem.get(p.stem if p.suffix.lower() in IMAGE_EXTS else name, [])
            if len(cands) > 1:
                raise DollError(f"{where}: {name!r} matches several images ({', '.join(cands[:3])}); give the path relative to images/")
            if cands:
                return cands[0]
        return None
