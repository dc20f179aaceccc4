"""Montgomery County TB set (format ``montgomery``).

Layout: ``MontgomerySet/CXR_png/*.png`` with lung masks
``MontgomerySet/ManualMask/leftMask/<same name>`` and ``.../rightMask/<same name>``;
``root`` may be ``MontgomerySet/`` itself or the folder above it.

* ``structures`` = ["left lung", "right lung"] from ``leftMask`` / ``rightMask`` (the
  folder names are taken at their word: "left" = the patient's left). Users who want
  one lung mask merge the two; ``item.meta["merged_structures"]`` =
  ``{"lungs": ["left lung", "right lung"]}`` says so.
* ``classes`` = ["Tuberculosis"]: the last character of the file stem
  (``MCUCXR_0001_0.png`` -> 0, ``..._1.png`` -> 1); any other ending is an error.
* One image per patient: ``patient`` = ``id`` = the file stem.
* Splits: everything "train", unless option ``test_fraction`` (default 0) and/or
  ``valid_fraction`` (default 0) move that fraction of the patients to "test" /
  "valid" (deterministic for a given option ``seed``, default 0).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from doll.data.base import DatasetFormat, Item
from doll.data.common import read_fraction, read_int
from doll.errors import DollError

MERGED = {"lungs": ["left lung", "right lung"]}


def tb_label(path: Path) -> float:
    """TB label from the last character of the stem (``..._0`` / ``..._1``)."""
    last = path.stem[-1:]
    if last not in ("0", "1"):
        raise DollError(
            f"cannot read the TB label of {path.name}: the file name must end in _0 (normal) or _1 (TB); "
            "remove or rename files that are not part of the data set"
        )
    return float(last)


def tb_item(fmt: DatasetFormat, path: Path, masks: dict[str, str], meta: dict | None = None) -> Item:
    """One image of a TB collection (Montgomery, Shenzhen): one patient per image, its TB label
    from the file name, everything in "train" until ``apply_fractions`` moves some out."""
    return Item(id=path.stem, image=fmt.inside(path.relative_to(fmt.root)), split="train", patient=path.stem,
                labels=np.array([tb_label(path)], np.float32), masks=masks, meta=meta or {})


def apply_fractions(fmt: DatasetFormat, items: list[Item]) -> None:
    """Move ``test_fraction`` then ``valid_fraction`` of the patients of "train" out (in place)."""
    seed = read_int(fmt, "seed", 0)
    for option, split in (("test_fraction", "test"), ("valid_fraction", "valid")):
        fmt.carve_from_train(items, read_fraction(fmt, option, 0.0), seed, to=split)


def find_base(root: Path, names: list[str], what: str) -> Path:
    """The first of ``root``, ``root/<name>`` ... that holds ``CXR_png/``."""
    for base in [root] + [root / n for n in names]:
        if (base / "CXR_png").is_dir():
            return base
    raise DollError(
        f"CXR_png/ not found in {root} or in {', '.join(n + '/' for n in names)} below it; "
        f"pass the {what} folder (or the folder above it) as --root"
    )


class Montgomery(DatasetFormat):
    """Montgomery County CXR set; see the module docstring."""

    name = "montgomery"
    classes = ["Tuberculosis"]
    structures = ["left lung", "right lung"]

    def __init__(self, root, **options):
        super().__init__(root, **options)
        self.base = find_base(self.root, ["MontgomerySet", "NLM-MontgomeryCXRSet/MontgomerySet"], "MontgomerySet")
        read_fraction(self, "test_fraction")  # validate options early
        read_fraction(self, "valid_fraction")
        read_int(self, "seed", 0)

    def _load(self) -> list[Item]:
        cxr = self.base / "CXR_png"
        files = sorted(p for p in cxr.iterdir() if p.is_file() and p.suffix.lower() == ".png")
        if not files:
            raise DollError(f"no PNG images in {cxr}; the Montgomery download is incomplete")
        mask_dirs = {"left lung": self.base / "ManualMask" / "leftMask", "right lung": self.base / "ManualMask" / "rightMask"}
        items = []
        for p in files:
            masks = {}
            for s, d in mask_dirs.items():
                m = d / p.name
                if m.is_file():
                    masks[s] = self.inside(m.relative_to(self.root))
            items.append(tb_item(self, p, masks, {"merged_structures": {k: list(v) for k, v in MERGED.items()}}))
        apply_fractions(self, items)
        return items
