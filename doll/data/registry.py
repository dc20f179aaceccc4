"""Dataset name -> format class. Adding a data set = one module + one line here, or, without
changing doll, ``--dataset package.module:ClassName`` (docs/extending.md)."""
from __future__ import annotations

from doll.data.base import DatasetFormat
from doll.utils import registered_class

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
    """The format class of a built-in name, or of ``package.module:ClassName`` (your own)."""
    return registered_class(name, FORMATS, DatasetFormat, "--dataset",
                            f"unknown dataset {name!r}; choose one of: {', '.join(FORMATS)}, "
                            "or name your own format as package.module:ClassName")


def open_dataset(name: str, root, **options) -> DatasetFormat:
    """Open the data set ``name`` unpacked at ``root`` (options are format-specific)."""
    return format_class(name)(root, **options)
