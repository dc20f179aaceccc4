"""Helpers shared by the format modules: option parsing, CSV reading, the hold-out (from ``splits``)."""
from __future__ import annotations

import csv
import math
import os
from pathlib import Path

from doll.data.base import SPLIT_ALIASES, DatasetFormat  # noqa: F401 - SPLIT_ALIASES: the formats import it from here
from doll.errors import DollError

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}


# --------------------------------------------------------------------------- helpers
CLI_FLAGS = {"valid_fraction": "--valid-fraction"}  # format options that a command line flag sets


def read_fraction(fmt: DatasetFormat, option: str, default: float = 0.0) -> float:
    """A fraction option in [0, 1)."""
    value = fmt.options.get(option, default)
    name = CLI_FLAGS.get(option, f"option {option}")
    try:
        value = float(value if value is not None else default)
    except (TypeError, ValueError):
        raise DollError(f"{name}={value!r} for {fmt.name} is not a number; give a fraction such as 0.1") from None
    if not 0.0 <= value < 1.0 or math.isnan(value):
        raise DollError(f"{name}={value} for {fmt.name} is out of range; give a fraction in [0, 1)")
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


def read_csv(path: Path, required: list[str], what: str) -> tuple[list[str], list[dict[str, str]]]:
    """Read a CSV with a header; raise DollError naming any missing ``required`` column."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if header is None:
                raise DollError(f"{what} {path} is empty; it needs a header row with: {', '.join(required)}")
            header = [h.strip() for h in header]
            last_needed = max((header.index(c) for c in required if c in header), default=-1)
            rows = []
            for row in reader:
                if not any(v.strip() for v in row):
                    continue
                if len(row) <= last_needed:
                    raise DollError(f"{what} {path} line {reader.line_num} has {len(row)} fields but the header has "
                                    f"{len(header)}; the file is truncated or damaged, get it again")
                rows.append(dict(zip(header, (v.strip() for v in row))))
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
