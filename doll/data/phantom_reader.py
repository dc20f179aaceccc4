"""Reader for a folder made by ``doll data phantom``: CheXpert layout + finding masks.

The images and labels are read by the real CheXpert reader; this adds the
ground-truth finding masks (``findings/masks/<finding>/<path>.png``). A finding
without a mask file is absent from that image (its ground truth is empty).
"""
from __future__ import annotations

from pathlib import Path

from doll.data.base import CHEXPERT_CLASSES, FINDINGS, DatasetFormat, Item
from doll.data.chexpert import CheXpert
from doll.data.phantom import PHANTOM_VERSION
from doll.errors import DollError
from doll.schema import read_phantom_meta


class Phantom(DatasetFormat):
    name = "phantom"
    classes = CHEXPERT_CLASSES
    structures = FINDINGS

    def __init__(self, root, **options):
        super().__init__(root, **options)
        meta_file = self.root / "phantom.json"
        if not meta_file.exists():
            raise DollError(f"{self.root} is not a phantom data set (no phantom.json); make one with `doll data phantom --out DIR`")
        self.meta = read_phantom_meta(meta_file, PHANTOM_VERSION)  # checked: a name, not a path, for chexpert_dir
        self.chexpert = CheXpert(self.root / self.meta["chexpert_dir"], **options)

    def _load(self) -> list[Item]:
        items = self.chexpert.items()
        mask_root = self.root / "findings" / "masks"
        prefix = self.chexpert.root.name
        for it in items:
            rel = Path(it.id)
            if rel.parts and rel.parts[0] == prefix:
                rel = Path(*rel.parts[1:])
            for f in FINDINGS:
                m = mask_root / f / rel.with_suffix(".png")
                if m.exists():
                    it.masks[f] = m
        return items
