"""COVID-QU-Ex (format ``covidqu``).

Layout::

    root/Infection Segmentation Data/{Train,Val,Test}/{COVID-19,Non-COVID,Normal}/
         {images,infection masks,lung masks}/<name>.png
    root/Lung Segmentation Data/...   (same shape, no infection masks)

``root`` is the folder holding one or both subset folders, or one subset folder
itself (its subset is then taken from its name).

* Option ``subset``: "infection" (default) or "lung".
* ``structures``: ["infection", "lungs"] for the infection subset, ["lungs"] for the
  lung subset. A mask has the same file name as its image and is listed only when
  the file exists (the Test split may ship without masks). The Non-COVID and Normal
  images of the infection subset have empty (all-zero) infection masks; they are
  listed like any other mask.
* ``classes`` = ["COVID-19", "Non-COVID", "Normal"], one-hot from the class folder.
* Splits: Train -> "train", Val -> "valid", Test -> "test".
* ``id`` = ``<Split>/<class>/<stem>``; the patient is not known, ``patient`` = ``id``.
"""
from __future__ import annotations

import numpy as np

from doll.data.base import DatasetFormat, Item
from doll.data.common import IMAGE_EXTS
from doll.errors import DollError

SUBSETS = {"infection": "Infection Segmentation Data", "lung": "Lung Segmentation Data"}
SPLITS = {"Train": "train", "Val": "valid", "Test": "test"}
CLASSES = ["COVID-19", "Non-COVID", "Normal"]


class CovidQU(DatasetFormat):
    """COVID-QU-Ex; see the module docstring."""

    name = "covidqu"
    classes = list(CLASSES)
    structures = ["infection", "lungs"]

    def __init__(self, root, **options):
        super().__init__(root, **options)
        subset = self.options.get("subset")
        if subset is not None and subset not in SUBSETS:
            raise DollError(f"option subset={subset!r} for covidqu is invalid; choose one of: {', '.join(SUBSETS)}")
        if any((self.root / s).is_dir() for s in SPLITS):  # root is a subset folder
            name = self.root.name.lower()
            inferred = "infection" if "infection" in name else "lung" if "lung" in name else None
            if subset is not None and inferred is not None and subset != inferred:
                raise DollError(
                    f"--root {self.root} is the {inferred} subset but option subset={subset!r}; "
                    "point --root at the folder above it or drop the option"
                )
            self.subset = subset or inferred or "infection"
            self.base = self.root
        else:
            self.subset = subset or "infection"
            self.base = self.root / SUBSETS[self.subset]
            if not self.base.is_dir():
                raise DollError(
                    f"folder '{SUBSETS[self.subset]}/' not found in {self.root}; pass the COVID-QU-Ex folder that "
                    "holds it as --root, or the subset folder itself (e.g. 'Lung Segmentation Data/')"
                )
        self.structures = ["infection", "lungs"] if self.subset == "infection" else ["lungs"]

    def _load(self) -> list[Item]:
        mask_folders = {"infection": "infection masks", "lungs": "lung masks"}
        items = []
        for folder, split in SPLITS.items():
            for c, cls in enumerate(self.classes):
                d = self.base / folder / cls
                img_dir = d / "images"
                if not img_dir.is_dir():
                    continue
                onehot = np.zeros(len(self.classes), np.float32)
                onehot[c] = 1.0
                for p in sorted(img_dir.iterdir()):
                    if not p.is_file() or p.suffix.lower() not in IMAGE_EXTS:
                        continue
                    masks = {}
                    for s in self.structures:
                        m = d / mask_folders[s] / p.name
                        if m.is_file():
                            masks[s] = self.inside(m.relative_to(self.root))
                    items.append(
                        Item(
                            id=f"{folder}/{cls}/{p.stem}",
                            image=self.inside(p.relative_to(self.root)),
                            split=split,
                            patient=f"{folder}/{cls}/{p.stem}",
                            labels=onehot.copy(),
                            masks=masks,
                        )
                    )
        if not items:
            raise DollError(
                f"no images found in {self.base}/{{Train,Val,Test}}/{{{','.join(self.classes)}}}/images/; "
                "the COVID-QU-Ex download is incomplete or --root is wrong"
            )
        return items
