"""Data sets as distributed, phantoms, preprocessing and cached arrays."""
from __future__ import annotations

from doll.data.arrays import Arrays, labels_of, load_arrays
from doll.data.base import (
    CHEXPERT_CLASSES,
    FINDINGS,
    JSRT_STRUCTURES,
    DatasetFormat,
    Item,
)
from doll.data.registry import FORMATS, open_dataset
from doll.errors import DollError


def load_split(dataset: str, root, split: str | None, image_size: int, structures=None, *, progress: bool = True,
               **options) -> tuple[DatasetFormat, Arrays]:
    """Open ``dataset`` at ``root`` and decode one split (None = all) to cached arrays."""
    fmt = open_dataset(dataset, root, **options)
    return fmt, split_arrays(fmt, split, image_size, structures, progress=progress)


def split_arrays(fmt: DatasetFormat, split: str | None, image_size: int, structures=None, *, progress: bool = True) -> Arrays:
    """Decode one split (None = all) of an opened data set to cached arrays."""
    items = fmt.items(split)
    if not items:
        raise DollError(f"{fmt.name} at {fmt.root} has no images in split {split!r}")
    return load_arrays(items, image_size, structures, progress=progress)


__all__ = ["Arrays", "CHEXPERT_CLASSES", "FINDINGS", "FORMATS", "JSRT_STRUCTURES", "DatasetFormat", "Item",
           "labels_of", "load_arrays", "load_split", "open_dataset", "split_arrays"]
