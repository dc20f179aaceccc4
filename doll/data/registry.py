"""Dataset name -> format class. Adding a data set = one module + one line here."""
from __future__ import annotations

import importlib

from doll.data.base import DatasetFormat
from doll.errors import DollError

FORMATS = {
    "chexpert": "doll.data.chexpert:CheXpert",
    "phantom": "doll.data.phantom_reader:Phantom",
    "nih": "doll.data.nih:NIH",
    "jsrt": "doll.data.jsrt:JSRT",
    "montgomery": "doll.data.montgomery:Montgomery",
    "shenzhen": "doll.data.shenzhen:Shenzhen",
    "qata": "doll.data.qata:QaTa",
    "covidqu": "doll.data.covidqu:CovidQU",
    "folder": "doll.data.folder:Folder",
}


def format_class(name: str) -> type[DatasetFormat]:
    if name not in FORMATS:
        raise DollError(f"unknown dataset {name!r}; choose one of: {', '.join(FORMATS)}")
    module, cls = FORMATS[name].split(":")
    try:
        return getattr(importlib.import_module(module), cls)
    except ModuleNotFoundError:
        raise DollError(f"dataset {name!r} is not available in this version of doll") from None


def open_dataset(name: str, root, **options) -> DatasetFormat:
    """Open the data set ``name`` unpacked at ``root`` (options are format-specific)."""
    return format_class(name)(root, **options)
