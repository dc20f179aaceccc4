"""Shenzhen TB set (format ``shenzhen``).

Layout: ``ChinaSet_AllFiles/CXR_png/*.png``; ``root`` may be ``ChinaSet_AllFiles/``
or the folder above it. The lung masks are distributed separately as
``mask/<stem>_mask.png``; the ``mask/`` (or ``masks/``) folder is looked for next to
``CXR_png/`` and in ``root`` (so with ``root`` = the folder holding both
``ChinaSet_AllFiles/`` and ``mask/`` everything is found). A ``mask/`` folder next to
a ``root`` that *is* ``ChinaSet_AllFiles/`` lies outside the root and is refused
with a message saying to pass the parent. Images without a mask are listed with
``masks = {}`` (about a third of the images have no published mask).

* ``structures`` = ["lungs"]; ``classes`` = ["Tuberculosis"] from the last character
  of the stem (``CHNCXR_0001_0.png`` -> 0).
* One image per patient: ``patient`` = ``id`` = the file stem.
* Splits: everything "train", unless options ``test_fraction`` / ``valid_fraction``
  (default 0; deterministic for option ``seed``, default 0) hold patients out.
"""
from __future__ import annotations

from pathlib import Path

from doll.data.base import DatasetFormat, Item
from doll.data.common import read_fraction, read_int
from doll.data.montgomery import apply_fractions, find_base, tb_item
from doll.errors import DollError


class Shenzhen(DatasetFormat):
    """Shenzhen Hospital CXR set; see the module docstring."""

    name = "shenzhen"
    classes = ["Tuberculosis"]
    structures = ["lungs"]

    def __init__(self, root, **options):
        super().__init__(root, **options)
        self.base = find_base(self.root, ["ChinaSet_AllFiles"], "ChinaSet_AllFiles")
        read_fraction(self, "test_fraction")
        read_fraction(self, "valid_fraction")
        read_int(self, "seed", 0)
        self.mask_dir = self._find_masks()

    def _find_masks(self) -> Path | None:
        for d in (self.base, self.root):
            for n in ("mask", "masks"):
                if (d / n).is_dir():
                    return d / n
        if self.base == self.root:  # masks unpacked next to ChinaSet_AllFiles/, outside the root
            for n in ("mask", "masks"):
                if (self.root.parent / n).is_dir():
                    raise DollError(
                        f"the Shenzhen lung masks are at {self.root.parent / n}, outside --root {self.root}; "
                        f"pass {self.root.parent} as --root so that both are inside it"
                    )
        return None

    def _load(self) -> list[Item]:
        cxr = self.base / "CXR_png"
        files = sorted(p for p in cxr.iterdir() if p.is_file() and p.suffix.lower() == ".png")
        if not files:
            raise DollError(f"no PNG images in {cxr}; the Shenzhen download is incomplete")
        items = []
        for p in files:
            masks = {}
            if self.mask_dir is not None:
                m = self.mask_dir / f"{p.stem}_mask.png"
                if m.is_file():
                    masks["lungs"] = self.inside(m.relative_to(self.root))
            items.append(tb_item(self, p, masks))
        apply_fractions(self, items)
        return items
