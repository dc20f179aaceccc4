"""Uncertainty policies: raw CheXpert-style labels -> training targets and loss weights.

Raw values: 1 positive, 0 negative, -1 uncertain, NaN not mentioned (blank).

* ``uncertain``: ``ignore`` (weight 0, left out of the loss; default), ``zeros``,
  ``ones``, ``lsr`` (label smoothing regularisation, U-Ones+LSR of Pham et al. 2021:
  an uncertain label becomes a soft target drawn once, uniformly in [0.55, 0.85]).
* ``blank``: ``ignore`` (default) or ``zeros`` (not mentioned = negative).
"""
from __future__ import annotations

import numpy as np

from doll.errors import DollError

UNCERTAIN_POLICIES = ("ignore", "zeros", "ones", "lsr")
BLANK_POLICIES = ("ignore", "zeros")
LSR_RANGE = (0.55, 0.85)


def apply_policy(raw: np.ndarray, uncertain: str = "ignore", blank: str = "ignore", seed: int = 0):
    """Return ``(targets, weights)``, both float32 of ``raw``'s shape."""
    if uncertain not in UNCERTAIN_POLICIES:
        raise DollError(f"unknown --uncertain {uncertain!r}; choose one of {', '.join(UNCERTAIN_POLICIES)}")
    if blank not in BLANK_POLICIES:
        raise DollError(f"unknown --blank {blank!r}; choose one of {', '.join(BLANK_POLICIES)}")
    raw = np.asarray(raw, np.float32)
    targets = np.where(raw == 1, 1.0, 0.0).astype(np.float32)
    weights = np.where((raw == 1) | (raw == 0), 1.0, 0.0).astype(np.float32)
    unc = raw == -1
    if uncertain == "zeros":
        weights[unc] = 1.0
    elif uncertain == "ones":
        targets[unc], weights[unc] = 1.0, 1.0
    elif uncertain == "lsr":
        rng = np.random.default_rng(seed)
        targets[unc] = rng.uniform(*LSR_RANGE, size=int(unc.sum()))
        weights[unc] = 1.0
    if blank == "zeros":
        weights[np.isnan(raw)] = 1.0
    return targets, weights
