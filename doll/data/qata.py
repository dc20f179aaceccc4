"""QaTa-COV19 (v2) infection segmentation set (format ``qata``).

Layout: ``QaTa-COV19-v2/{Train Set,Test Set}/{Images,Ground-truths}/``; ``root`` may be
the ``QaTa-COV19-v2`` folder or the folder above it. The mask of ``Images/X.png`` is
``Ground-truths/mask_X.png``.

* ``structures`` = ["infection"]; ``classes`` = ["COVID-19"], 1 for every image
  (all QaTa images are COVID-19 positive; the set has no negatives).
* ``id`` = ``train/X`` or ``test/X`` after the folder the image is in (stable when
  a validation part is carved out); the patient is not known, ``patient`` = ``id``.
* Splits: ``Train Set`` -> "train", ``Test Set`` -> "test". Option ``valid_fraction``
  (default 0) moves that fraction of the training images to "valid"
  (deterministic for option ``seed``, default 0). A missing ``Test Set`` is allowed.
"""
from __future__ import annotations

import numpy as np

from doll.data.base import DatasetFormat, Item
from doll.data.common import IMAGE_EXTS, read_fraction, read_int
from doll.errors import DollError

SETS = {"Train Set": "train", "Test Set": "test"}


class QaTa(DatasetFormat):
    """QaTa-COV19-v2; see the module docstring."""

    name = "qata"
    classes = ["COVID-19"]
    structures = ["infection"]

    def __init__(self, root, **options):
        super().__init__(root, **options)
        self.valid_fraction = read_fraction(self, "valid_fraction", 0.0)
        self.seed = read_int(self, "seed", 0)
        for base in (self.root, self.root / "QaTa-COV19-v2"):
            if any((base / s).is_dir() for s in SETS):
                self.base = base
                break
        else:
            raise DollError(
                f"'Train Set/' not found in {self.root} or {self.root / 'QaTa-COV19-v2'}; "
                "pass the QaTa-COV19-v2 folder (or the folder above it) as --root"
            )

    def _load(self) -> list[Item]:
        items = []
        for folder, split in SETS.items():
            d = self.base / folder
            if not d.is_dir():
                continue
            img_dir, gt_dir = d / "Images", d / "Ground-truths"
            if not img_dir.is_dir():
                raise DollError(f"folder {img_dir} not found; '{folder}' must hold Images/ and Ground-truths/")
            for p in sorted(img_dir.iterdir()):
                if not p.is_file() or p.suffix.lower() not in IMAGE_EXTS:
                    continue
                m = gt_dir / f"mask_{p.name}"
                items.append(
                    Item(
                        id=f"{split}/{p.stem}",
                        image=self.inside(p.relative_to(self.root)),
                        split=split,
                        patient=f"{split}/{p.stem}",
                        labels=np.ones(1, np.float32),
                        masks={"infection": self.inside(m.relative_to(self.root))} if m.is_file() else {},
                    )
                )
        if not items:
            raise DollError(f"no images found in {self.base}/*/Images/; the QaTa-COV19 download is incomplete")
        self.carve_from_train(items, self.valid_fraction, self.seed)  # patient = id here
        return items
