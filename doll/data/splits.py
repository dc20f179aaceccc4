"""The one patient hold-out: which patients a seeded fraction takes out of a split.

Every hold-out in doll draws from here: a format's ``valid_fraction`` / ``test_fraction``
(:meth:`doll.data.base.DatasetFormat.carve_from_train`), pretraining's validation
patients, ``finetune``'s test patients when a data set has no split with masks, and
seg4cls' validation patients. So the same keys, fraction and seed give the same patients
in every stage. (``doll.data.common.hold_out`` is this function.)
"""
from __future__ import annotations

import hashlib


def hold_out(keys, fraction: float, seed: int = 0) -> set[str]:
    """Deterministically pick ``round(fraction * n)`` of the distinct ``keys`` (e.g. patients).

    Keys are ordered by a hash of ``seed`` and the key, so the choice does not depend on
    file order and adding images changes little. At least one key is picked when
    ``fraction > 0`` and at least one is always left out.
    """
    unique = sorted(set(keys))
    if fraction <= 0 or len(unique) < 2:
        return set()
    n = min(len(unique) - 1, max(1, round(fraction * len(unique))))
    ranked = sorted(unique, key=lambda k: hashlib.sha1(f"{seed}:{k}".encode()).hexdigest())
    return set(ranked[:n])


def patient_of(item) -> str:
    """The hold-out key of an item: its patient, else (patient unknown) its id."""
    return item.patient or item.id
