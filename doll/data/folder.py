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
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from doll.data.base import DatasetFormat, Item
from doll.data.common import (
    IMAGE_EXTS,
    SPLIT_ALIASES,
    parse_label,
    read_csv,
    walk_images,
)
from doll.errors import DollError


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
