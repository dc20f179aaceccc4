"""The images ``doll predict`` reads: files and folders named by the user, and the names
their outputs get.

A folder contributes the image files directly in it (not its subfolders), sorted by name:
PNG, JPEG, BMP, TIFF, JSRT ``.IMG``, DICOM (``.dcm``, ``.dicom``, or no known extension and
DICOM's signature); other files (a CSV, a README) are skipped. A file named on its own is
always read, whatever its extension. The output name of an image is its file name without
the image extension (``JPCLN001.IMG`` -> ``JPCLN001``), made a safe file name; names that
collide get ``-2``, ``-3``, ... in input order.
"""
from __future__ import annotations

from pathlib import Path

from doll.data.common import IMAGE_EXTS
from doll.data.images import DICOM_EXTS, is_dicom
from doll.errors import DollError
from doll.utils import unique_names

EXTS = IMAGE_EXTS | DICOM_EXTS | {".img"}


def stem(path: Path) -> str:
    """The file name without its image extensions (``x.IMG.png`` -> ``x``; ``1.2.840.5`` stays)."""
    name = path.name
    while Path(name).suffix.lower() in EXTS | {".gif"}:
        name = name[: -len(Path(name).suffix)]
    return name


def gather(inputs: list[str | Path]) -> list[Path]:
    """The image files ``inputs`` name, in order (a file given twice is read once)."""
    files: list[Path] = []
    for given in inputs:
        path = Path(given).expanduser()
        if not str(given).strip():
            raise DollError("--input is empty; name an image file or a folder of images")
        if not path.exists():
            raise DollError(f"--input {given} does not exist")
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")
                           and (p.suffix.lower() in EXTS or is_dicom(p)))
            if not found:
                raise DollError(f"--input {given} holds no image files (PNG, JPEG, BMP, TIFF, JSRT .IMG or DICOM; "
                                "subfolders are not searched)")
            files.extend(found)
        else:
            files.append(path)
    seen, out = set(), []
    for f in files:
        key = f.resolve()
        if key not in seen:
            seen.add(key)
            out.append(key)
    return out


def output_names(files: list[Path]) -> list[str]:
    return unique_names([stem(f) for f in files], "image")
