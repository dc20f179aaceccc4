"""CheXpert v1.0 / v1.0-small as distributed: ``train.csv``, ``valid.csv``.

``Path`` is relative to the folder *above* the data set root
(``CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg``). Label values:
1.0 positive, 0.0 negative, -1.0 uncertain, blank not mentioned (NaN here). The
uncertainty policy is applied later, by :func:`doll.data.policies.apply_policy`, so
that the raw values stay visible to ``doll data check``.

``Path`` may also be relative to the root itself, or start with a folder name other
than the root's (the data set unpacked into a renamed folder).

Options: ``views`` = frontal (default) | lateral | all; ``valid_fraction`` (alias
``valid_from_train``) = a fraction of *patients* carved from train.csv as the validation
split (default 0: valid.csv is the validation split).
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from doll.data.base import CHEXPERT_CLASSES, DatasetFormat, Item
from doll.data.common import parse_label, read_csv, read_fraction, read_int
from doll.errors import DollError

_PATIENT = re.compile(r"(patient\d+)")


class CheXpert(DatasetFormat):
    name = "chexpert"
    classes = CHEXPERT_CLASSES
    structures: list[str] = []

    def _csv_rows(self, csv_name: str) -> list[dict]:
        path = self.root / csv_name
        if not path.exists():
            return []
        return read_csv(path, ["Path", *self.classes], "CheXpert CSV")[1]

    def _image_path(self, rel_path: str) -> Path:
        """``Path`` is relative to the folder above the root (its first part names the root);
        accept it relative to the root too, and under a renamed root folder."""
        parts = Path(rel_path).parts
        if parts and parts[0] == self.root.name:
            return self.inside(rel_path, self.root.parent)
        if len(parts) < 2 or parts[0] in ("train", "valid", "test") or (self.root / rel_path).exists():
            return self.inside(rel_path)
        return self.inside(Path(*parts[1:]))

    def _load(self) -> list[Item]:
        views = self.options.get("views", "frontal")
        if views not in ("frontal", "lateral", "all"):
            raise DollError(f"unknown --views {views!r}; choose frontal, lateral or all")
        train_rows = self._csv_rows("train.csv")
        valid_rows = self._csv_rows("valid.csv")
        if not train_rows and not valid_rows:
            raise DollError(f"no train.csv or valid.csv in {self.root}; pass the CheXpert folder (e.g. CheXpert-v1.0-small) as --root")
        out: list[Item] = []
        for split_name, rows in (("train", train_rows), ("valid", valid_rows)):
            for i, row in enumerate(rows):
                rel = row["Path"].strip()
                view = (row.get("Frontal/Lateral") or ("Lateral" if "lateral" in rel else "Frontal")).strip()
                if views != "all" and view.lower() != views:
                    continue
                where = f"{split_name}.csv row {i + 2}"
                labels = np.array([parse_label(row[c], where) for c in self.classes], np.float32)
                image = self._image_path(rel)
                m = _PATIENT.search(rel)
                patient = m.group(1) if m else rel
                out.append(Item(id=rel, image=image, split=split_name, patient=patient, labels=labels,
                                meta={"view": view, "ap_pa": (row.get("AP/PA") or "").strip()}))
        if not out:
            raise DollError(f"no {views} images listed in {self.root}'s CSVs; try --views all")
        option = "valid_from_train" if "valid_from_train" in self.options else "valid_fraction"
        self.carve_from_train(out, read_fraction(self, option, 0.0), read_int(self, "seed", 0))
        return out
