"""NIH ChestX-ray14 as distributed (format ``nih``).

Layout under ``root``::

    Data_Entry_2017*.csv      Image Index, Finding Labels ("A|B" or "No Finding"), Patient ID
    images*/...               the PNGs, possibly nested (images_001/images/*.png)
    BBox_List_2017.csv        optional: Image Index, Finding Label, Bbox [x,y,w,h] + 3 unnamed columns
    train_val_list.txt        optional official split (one file name a line) -> "train"
    test_list.txt             optional official split -> "test"

* Labels: the 14 findings in :data:`NIH_CLASSES`; 1 if listed, else 0 (the NIH labels
  have no uncertain or unknown values).
* Images are found by file name in any ``images*/`` folder at the root. CSV rows
  whose image is not there are skipped and their names kept in ``self.missing``
  (so a partial download works); if no row has an image, DollError.
* Splits: names in ``test_list.txt`` -> "test"; the rest "train". If only
  ``train_val_list.txt`` exists, names not in it are "test". Without either file,
  everything is "train". Option ``valid_fraction`` (default 0) moves that fraction of
  the *patients* of "train" to "valid" (deterministic, option ``seed``, default 0).
* Boxes: ``item.boxes[finding] = [(x, y, w, h), ...]`` in the image's own pixel grid.
  The file gives them on the 1024x1024 grid; for images of another size they are
  scaled (the size is read from the image header, only for images that have boxes).
  ``item.meta["box_grid"] = 1024`` records the grid of the source file and
  ``item.meta["image_size"] = (width, height)`` the size they were scaled to.
  "Infiltrate" in the box file means "Infiltration".
"""
from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np

from doll.data.base import DatasetFormat, Item
from doll.data.common import IMAGE_EXTS, read_csv, read_fraction, read_int
from doll.errors import DollError

NIH_CLASSES = [
    "Atelectasis",
    "Cardiomegaly",
    "Effusion",
    "Infiltration",
    "Mass",
    "Nodule",
    "Pneumonia",
    "Pneumothorax",
    "Consolidation",
    "Edema",
    "Emphysema",
    "Fibrosis",
    "Pleural_Thickening",
    "Hernia",
]
BOX_GRID = 1024
# Spellings found in the files -> class name.
_ALIASES = {"Infiltrate": "Infiltration", "Pleural Thickening": "Pleural_Thickening"}
_BBOX_COL = "Bbox [x,y,w,h]"


def _image_size(path: Path) -> tuple[int, int]:
    """(width, height) from the header when Pillow is there, else by decoding."""
    try:
        from PIL import Image

        with Image.open(path) as im:
            return im.size
    except ImportError:
        pass
    except Exception:  # noqa: BLE001 - fall back to the full decoder, which raises DollError
        pass
    from doll.data.images import image_shape

    h, w = image_shape(path)
    return w, h


class NIH(DatasetFormat):
    """NIH ChestX-ray14; see the module docstring for layout, splits and options."""

    name = "nih"
    classes = list(NIH_CLASSES)
    structures: list[str] = []

    def __init__(self, root, **options):
        super().__init__(root, **options)
        self.valid_fraction = read_fraction(self, "valid_fraction", 0.0)
        self.seed = read_int(self, "seed", 0)
        csvs = sorted(p for p in self.root.glob("Data_Entry_2017*.csv") if p.is_file())
        if not csvs:
            raise DollError(
                f"Data_Entry_2017.csv not found in {self.root}; pass the NIH ChestX-ray14 folder "
                "that holds Data_Entry_2017.csv and the images*/ folders as --root"
            )
        self.csv = csvs[0]
        self.image_dirs = sorted(p for p in self.root.glob("images*") if p.is_dir())
        if not self.image_dirs:
            raise DollError(f"no images*/ folder found in {self.root}; unpack the NIH image archives (images_001 ...) there")
        self.missing: list[str] = []

    # ------------------------------------------------------------------ loading
    def _index(self) -> dict[str, Path]:
        index: dict[str, Path] = {}
        for top in self.image_dirs:
            for dirpath, dirnames, filenames in os.walk(top):
                dirnames.sort()
                for fn in filenames:
                    if Path(fn).suffix.lower() in IMAGE_EXTS:
                        index.setdefault(fn, Path(dirpath) / fn)
        return index

    def _read_list(self, name: str) -> set[str] | None:
        path = self.root / name
        if not path.is_file():
            return None
        return {line.strip() for line in path.read_text(encoding="utf-8-sig").splitlines() if line.strip()}

    def _load(self) -> list[Item]:
        _, rows = read_csv(self.csv, ["Image Index", "Finding Labels"], "NIH index")
        if not rows:
            raise DollError(f"{self.csv} has no rows; the download is incomplete, fetch Data_Entry_2017.csv again")
        index = self._index()
        test = self._read_list("test_list.txt")
        trainval = self._read_list("train_val_list.txt")
        col = {c: i for i, c in enumerate(self.classes)}

        items: list[Item] = []
        by_name: dict[str, Item] = {}
        seen: set[str] = set()
        self.missing = []
        for n, row in enumerate(rows, start=2):
            where = f"{self.csv.name} line {n}"
            name = row["Image Index"]
            if not name or "/" in name or "\\" in name or name in (".", ".."):
                raise DollError(f"{where}: Image Index {name!r} is not a plain file name; the index file is corrupt or hostile")
            if name in seen:
                raise DollError(f"{where}: image {name} is listed twice; keep one row per image in {self.csv.name}")
            seen.add(name)
            labels = np.zeros(len(self.classes), np.float32)
            findings = [f.strip() for f in row["Finding Labels"].split("|")]
            for f in findings:
                f = _ALIASES.get(f, f)
                if f == "No Finding":
                    continue
                if f not in col:
                    raise DollError(
                        f"{where}: finding {f!r} in 'Finding Labels' is not an NIH finding; "
                        f"use names from: {', '.join(self.classes)}, or 'No Finding'"
                    )
                labels[col[f]] = 1.0
            path = index.get(name)
            if path is None:
                self.missing.append(name)
                continue
            if test is not None:
                split = "test" if name in test else "train"
            elif trainval is not None:
                split = "train" if name in trainval else "test"
            else:
                split = "train"
            stem = Path(name).stem
            patient = row.get("Patient ID") or stem.split("_")[0]
            items.append(
                Item(
                    id=stem,
                    image=self.inside(path.relative_to(self.root)),
                    split=split,
                    patient=str(patient),
                    labels=labels,
                )
            )
            by_name[name] = items[-1]
        if not items:
            raise DollError(
                f"none of the {len(rows)} images listed in {self.csv.name} was found under "
                f"{', '.join(d.name + '/' for d in self.image_dirs)}; unpack the image archives into {self.root}"
            )
        self.carve_from_train(items, self.valid_fraction, self.seed)
        self._add_boxes(by_name)
        return items

    def _add_boxes(self, by_name: dict[str, Item]) -> None:
        path = self.root / "BBox_List_2017.csv"
        if not path.is_file():
            return
        # The header "Bbox [x,y,w,h]" is unquoted in the official file, so its commas
        # split it into "Bbox [x", "y", "w", "h]": the box is the 4 columns from "Bbox".
        header, _ = read_csv(path, ["Image Index", "Finding Label"], "NIH box list")
        starts = [i for i, h in enumerate(header) if h.replace(" ", "").lower().startswith("bbox")]
        if not starts:
            raise DollError(f"NIH box list {path} has no {_BBOX_COL!r} column; fix the header row")
        start = starts[0]

        boxes: dict[str, list[tuple[str, tuple[float, ...]]]] = {}
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            next(reader)
            for n, row in enumerate(reader, start=2):
                if not any(v.strip() for v in row):
                    continue
                where = f"{path.name} line {n}"
                name, label = row[0].strip(), row[1].strip() if len(row) > 1 else ""
                label = _ALIASES.get(label, label)
                if label not in self.classes:
                    raise DollError(f"{where}: finding {label!r} is not an NIH finding; use names from: {', '.join(self.classes)}")
                try:
                    x, y, w, h = (float(v) for v in row[start : start + 4])
                except ValueError:
                    raise DollError(f"{where}: the box {row[start:start + 4]} is not 4 numbers x,y,w,h; fix or remove the row") from None
                if w <= 0 or h <= 0:
                    raise DollError(f"{where}: the box has width {w} and height {h}; both must be positive")
                boxes.setdefault(name, []).append((label, (x, y, w, h)))
        for name, entries in boxes.items():
            it = by_name.get(name)
            if it is None:  # the image is not in this download
                continue
            width, height = _image_size(it.image)
            sx, sy = width / BOX_GRID, height / BOX_GRID
            for label, (x, y, w, h) in entries:
                it.boxes.setdefault(label, []).append((x * sx, y * sy, w * sx, h * sy))
            it.meta["box_grid"] = BOX_GRID
            it.meta["image_size"] = (width, height)
