"""Pretraining's reader: the images and targets of a label file, row by row (``LabelRows``).

Per row (224 px, 14 classes) it inflates the image and the saliency row (libdeflate, in
:func:`doll.labels.store.read_rows`), applies the label rule to the explained maps
(uint8 in, bool out) and hands the masks to ``ArrayDataset`` as bool masks or uint8 codes
(``masks.coded``), which are augmented as they are and become float32 once, in the
sample. ``masks[j]`` still gives the float16 targets. Issue 37:
``benchmarks/pretrain_reader.py`` times this reader against the one it replaced, in one
process, and checks that both deliver the same samples bit for bit.
"""
from __future__ import annotations

import os

import h5py
import numpy as np

from doll.errors import DollError
from doll.labels.rule import apply_rule
from doll.labels.store import LabelFile, read_rows

# --soft: the target of saliency s is s / 255 rounded to float16 (as the float16 masks held it)
SOFT_F16 = (np.arange(256) / 255.0).astype(np.float16)
SOFT_F32 = SOFT_F16.astype(np.float32)


class LabelRows:
    """The pretraining data of a label file, read row by row when a batch asks for it, so
    memory does not grow with the file (CheXpert at 224 px: 9.6 GB of images, and 268 GB
    of float16 masks for 14 classes, had they been held as arrays).

    Row ``j`` is file row ``rows[j]``. ``images[j]``: its uint8 image. ``masks[j]``: float16
    (C', H, W) targets for the explained classes ``names``: the label rule applied to the
    saliency (or saliency / 255 with ``soft``) where the class was explained, and an empty
    map where the image label says the class is absent (it wins over a map made with
    ``--targets all|predicted``). ``masks.coded(j)``: the same targets as ArrayDataset takes
    them, bool masks (and None) or, with ``soft``, the uint8 saliency and the float32 target
    of each value. ``valid`` (N, C'): which maps carry a target (the others are left out of
    the loss). ``labels`` (N, C'): the image labels (1, 0, -1, NaN).
    Each process opens its own read-only handle, DataLoader workers included."""

    def __init__(self, lf: LabelFile, rows: np.ndarray, rule: str, soft: bool):
        targets = lf["targets"][:]
        self.used = np.flatnonzero(targets.any(axis=0))
        if not len(self.used):
            raise DollError(f"{lf.path} has no explained class; run `doll explain` with other --targets")
        self.path, self.rows, self.rule, self.soft = str(lf.path), np.asarray(rows), rule, soft
        self.names = [lf.classes[c] for c in self.used]
        self.labels = lf["labels"][:][self.rows][:, self.used]
        self.explained = targets[self.rows][:, self.used] & (self.labels != 0)
        self.valid = ((self.labels == 0) | self.explained).astype(np.float32)
        self.shape = lf["images"].shape[1:]
        self.all_used = len(self.used) == targets.shape[1]  # every class of the file: no class to select
        self.images, self.masks = _Column(self._image, len(self.rows)), _Masks(self._mask, self.coded, len(self.rows))
        self._f, self._pid, self._ds = None, None, {}

    def _dataset(self, key: str) -> h5py.Dataset:
        if self._f is None or self._pid != os.getpid():  # a forked worker opens its own handle
            self._f, self._pid, self._ds = h5py.File(self.path, "r"), os.getpid(), {}
        if key not in self._ds:
            self._ds[key] = self._f[key]
        return self._ds[key]

    def __getstate__(self):  # spawned DataLoader workers get the description, not the handle
        return {**self.__dict__, "_f": None, "_pid": None, "_ds": {}}

    def _image(self, j: int) -> np.ndarray:
        return read_rows(self._dataset("images"), self.rows[j])

    def coded(self, j: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Row ``j``'s targets: bool (C', H, W) masks and None, or with ``soft`` the uint8
        saliency (0 where not explained) and ``SOFT_F32``, the float32 target of each value."""
        values = SOFT_F32 if self.soft else None
        ks = np.flatnonzero(self.explained[j])
        if not len(ks):
            return np.zeros((len(self.used), *self.shape), np.uint8 if self.soft else bool), values
        sal = read_rows(self._dataset("saliency"), self.rows[j])
        if self.all_used and len(ks) == len(sal):  # every class explained: the row is the targets' input
            return (sal if self.soft else apply_rule(sal, self.rule)), values
        codes = np.zeros((len(self.used), *self.shape), np.uint8 if self.soft else bool)
        codes[ks] = sal[self.used[ks]] if self.soft else apply_rule(sal[self.used[ks]], self.rule)
        return codes, values

    def _mask(self, j: int) -> np.ndarray:
        codes, _ = self.coded(j)
        return SOFT_F16[codes] if self.soft else codes.astype(np.float16)


class _Column:
    """``column[j]`` calls ``read(j)``: an array-like view for ArrayDataset."""

    def __init__(self, read, n: int):
        self.read, self.n = read, n

    def __getitem__(self, j):
        return self.read(int(j))

    def __len__(self):
        return self.n


class _Masks(_Column):
    """The mask column: ``masks[j]`` float16 targets, ``masks.coded(j)`` as ArrayDataset takes them."""

    def __init__(self, read, coded, n: int):
        super().__init__(read, n)
        self._coded = coded

    def coded(self, j):
        return self._coded(int(j))
