"""The one small interface every data set format implements.

A format module (``doll/data/<name>.py``) defines a :class:`DatasetFormat` subclass
whose :meth:`DatasetFormat.items` reads the folder the user unpacked (``root``) and
returns :class:`Item` records. Nothing here decodes pixels; see
:mod:`doll.data.images` for that and :mod:`doll.data.arrays` for the cached,
resized arrays that training reads.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from doll.data.splits import hold_out, patient_of
from doll.errors import DollError

# CheXpert's 14 observations, in the CSV's column order.
CHEXPERT_CLASSES = [
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
]
# The 13 findings that have a location (everything but "No Finding").
FINDINGS = CHEXPERT_CLASSES[1:]
# JSRT/SCR anatomy; "left" is the patient's left, i.e. the image's right half.
JSRT_STRUCTURES = ["left lung", "right lung", "heart", "left clavicle", "right clavicle"]


# other spellings of doll's split names (a data set's folders are often Train / Val / Test)
SPLIT_ALIASES = {"train": "train", "valid": "valid", "test": "test", "val": "valid", "validation": "valid", "dev": "valid",
                 "training": "train", "testing": "test"}


@dataclass
class Item:
    """One image of a data set.

    ``labels`` holds one value per class of the format: 1 positive, 0 negative,
    -1 uncertain, NaN not mentioned. ``masks`` maps a structure or class name to a
    mask file (absent structures are simply missing). ``boxes`` maps a class to a
    list of ``(x, y, w, h)`` boxes in the image's own pixel grid.
    """

    id: str
    image: Path
    split: str = "train"
    patient: str = ""
    labels: np.ndarray | None = None
    masks: dict[str, Path] = field(default_factory=dict)
    boxes: dict[str, list[tuple[float, float, float, float]]] = field(default_factory=dict)
    meta: dict = field(default_factory=dict)


class DatasetFormat:
    """A data set as distributed. Subclasses set the class attributes and ``items``."""

    name: str = ""
    classes: list[str] = []  # image-level label names ([] if the format has none)
    structures: list[str] = []  # mask names ([] if the format has no masks)
    splits: tuple[str, ...] = ("train", "valid", "test")
    # masks may be their image subsampled by a whole factor (JSRT: SCR's 1024 px masks of the
    # 2048 px images); `doll data check` reports any other mask whose size is not its image's
    subsampled_masks: bool = False

    def __init__(self, root: str | Path, **options):
        self.root = Path(root).expanduser().resolve()
        self.options = options
        if not self.root.exists():
            raise DollError(f"data root {self.root} does not exist; pass the folder you unpacked with --root")
        if not self.root.is_dir():
            raise DollError(f"data root {self.root} is not a folder; pass the folder you unpacked with --root")

    def items(self, split: str | None = None) -> list[Item]:
        """All items, or those of one split (read once, then cached). Raises DollError on bad layouts."""
        split = self.split_name(split)
        if getattr(self, "_items", None) is None:
            self._items = self._load()
        return select_split(self._items, split)

    def split_name(self, split: str | None) -> str | None:
        """doll's name of a split, from the data set's own spelling too (``Val``, ``val``,
        ``validation`` -> ``valid``; ``Train``, ``Test``): a DollError for another name."""
        if split is None or split in self.splits:
            return split
        given = str(split).strip().lower()
        wanted = SPLIT_ALIASES.get(given, given)
        if wanted in self.splits:
            return wanted
        raise DollError(f"unknown split {split!r} for {self.name}; choose one of: {', '.join(self.splits)}")

    def _load(self) -> list[Item]:
        """Read every item of the data set (all splits)."""
        raise NotImplementedError

    def carve_from_train(self, items: list[Item], fraction: float, seed: int = 0, to: str = "valid") -> None:
        """Move a seeded ``fraction`` of the patients of the "train" items to split ``to``, in place
        (every image of a patient goes; the key is the patient, else the id): the formats'
        ``valid_fraction`` / ``test_fraction``, drawn by :func:`doll.data.splits.hold_out`."""
        train = [it for it in items if it.split == "train"]
        held = hold_out([patient_of(it) for it in train], fraction, seed)
        for it in train:
            if patient_of(it) in held:
                it.split = to

    # helpers for subclasses -------------------------------------------------
    def inside(self, path: str | Path, base: Path | None = None) -> Path:
        """Join ``path`` to ``base`` (default: the root) and resolve it; refuse a result
        outside the root, lexically ('..', absolute paths) or through a symlink."""
        root = str(self.root)
        full = os.path.normpath(os.path.join(base or root, path))
        real = full if full == root else self._realpath(full) if _under(full, root) else None
        if real is None or not _under(real, root):
            raise DollError(f"path {str(path)!r} points outside the data root {self.root}; paths with '..', "
                            "absolute paths and symlinks that leave the root are refused")
        return Path(real)

    def _realpath(self, full: str) -> str:
        """``os.path.realpath`` of a normalised path under the root, remembering each
        directory's answer: one ``lstat`` per new directory and one per file, instead of
        one per path component of every file (CheXpert: 224k files, 6 components deep;
        it matters most on network file systems)."""
        memo = self.__dict__.setdefault("_real_dirs", {str(self.root): str(self.root)})

        def real_dir(d: str) -> str:
            r = memo.get(d)
            if r is None:
                parent, name = os.path.split(d)
                r = os.path.join(real_dir(parent), name)
                if os.path.islink(r):
                    r = os.path.realpath(r)
                memo[d] = r
            return r

        folder, name = os.path.split(full)
        f = os.path.join(real_dir(folder), name)
        return os.path.realpath(f) if os.path.islink(f) else f


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


# mask structure -> the image class(es) it localises, where the names differ
CLASS_ALIASES = {"infection": ("COVID-19", "COVID", "covid", "Covid-19")}


def class_structure_pairs(classes: list[str], structures: list[str]) -> list[tuple[str, int, str]]:
    """(output name, image-class index, mask structure) for every class that has a mask."""
    pairs = [(c, i, c) for i, c in enumerate(classes) if c in structures]
    if pairs:
        return pairs
    for st in structures:
        for alias in CLASS_ALIASES.get(st, ()):
            if alias in classes:
                pairs.append((alias, classes.index(alias), st))
    if pairs:
        return pairs
    if len(structures) == 1 and len(classes) == 1:
        return [(classes[0], 0, structures[0])]
    return []


def select_split(items: list[Item], split: str | None) -> list[Item]:
    return items if split is None else [it for it in items if it.split == split]
