"""CheXpert v1.0 / v1.0-small as distributed: ``train.csv``, ``valid.csv``.

``Path`` is relative to the folder *above* the data set root
(``CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg``). Label values:
1.0 positive, 0.0 negative, -1.0 uncertain, blank not mentioned (NaN here). The
uncertainty policy is applied later, by :func:`doll.data.labels.apply_policy`, so
that the raw values stay visible to ``doll data check``.

Options: ``views`` = frontal (default) | lateral | all; ``valid_from_train`` = a
fraction of *patients* carved from train.csv as the validation split (default 0:
valid.csv is the validation split).
"""
from __future__ import annotations

import csv
import math
import re
from pathlib import Path

import numpy as np

from doll.data.base import CHEXPERT_CLASSES, DatasetFormat, Item
from doll.errors import DollError

_PATIENT = re.compile(r"(patient\d+)")
_VALUES = {"1.0": 1.0, "1": 1.0, "0.0": 0.0, "0": 0.0, "-1.0": -1.0, "-1": -1.0, "": math.nan}


def parse_label(value: str, where: str) -> float:
    v = value.strip()
    if v not in _VALUES:
        raise DollError(f"{where}: label value {value!r} is not one of 1.0, 0.0, -1.0 or blank")
    return _VALUES[v]


def patient_split(patients: list[str], fraction: float, seed: int = 0) -> set[str]:
    """A deterministic, seeded set of ``fraction`` of the patients (at least one)."""
    uniq = sorted(set(patients))
    rng = np.random.default_rng(seed)
    k = max(1, int(round(fraction * len(uniq))))
    return set(rng.permutation(uniq)[:k].tolist())


class CheXpert(DatasetFormat):
    name = "chexpert"
    classes = CHEXPERT_CLASSES
    structures: list[str] = []

    def _csv_rows(self, csv_name: str) -> list[dict]:
        path = self.root / csv_name
        if not path.exists():
            return []
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            header = reader.fieldnames or []
            missing = [c for c in ["Path", *self.classes] if c not in header]
            if missing:
                raise DollError(f"{path} lacks the column(s) {', '.join(missing)}; is this a CheXpert CSV?")
            return list(reader)

    def _image_base(self, rel_path: str) -> Path:
        # Path is relative to the folder above the root; accept it relative to the root too.
        first = Path(rel_path).parts[0] if rel_path else ""
        return self.root.parent if first == self.root.name or not (self.root / rel_path).exists() else self.root

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
                base = self._image_base(rel)
                image = self.inside(rel, base)
                m = _PATIENT.search(rel)
                patient = m.group(1) if m else rel
                out.append(Item(id=rel, image=image, split=split_name, patient=patient, labels=labels,
                                meta={"view": view, "ap_pa": (row.get("AP/PA") or "").strip()}))
        if not out:
            raise DollError(f"no {views} images listed in {self.root}'s CSVs; try --views all")
        frac = float(self.options.get("valid_from_train", 0) or 0)
        if frac > 0:
            carved = patient_split([it.patient for it in out if it.split == "train"], frac, self.options.get("seed", 0))
            for it in out:
                if it.split == "train" and it.patient in carved:
                    it.split = "valid"
        return out
