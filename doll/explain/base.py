"""The explainer interface: every method turns images and per-image targets into maps.

An explainer is a class with ``name`` and
``attribute(model, images, targets) -> list[np.ndarray]`` where ``images`` is a
normalised float tensor (B, 1, H, W) on the model's device, ``targets[i]`` is the
list of class indices to explain for image i, and the result ``[i]`` is a float32
array (len(targets[i]), H, W) of signed attributions. ``stats`` collects per-map
diagnostics (e.g. IG completeness errors) for ``metrics.json``.
"""
from __future__ import annotations

import importlib

from doll.errors import DollError

METHODS = {
    "ig": "doll.explain.ig:IntegratedGradients",
    "ig-smooth": "doll.explain.ig:SmoothIntegratedGradients",
    "gradcam": "doll.explain.gradcam:GradCam",
}


class Explainer:
    name = ""

    def __init__(self, **settings):
        self.settings = settings
        self.stats: dict[str, list[float]] = {}

    def attribute(self, model, images, targets):  # pragma: no cover - interface
        raise NotImplementedError


def make_explainer(method: str, **settings) -> Explainer:
    if method not in METHODS:
        raise DollError(f"unknown --method {method!r}; choose one of {', '.join(METHODS)}")
    module, cls = METHODS[method].split(":")
    return getattr(importlib.import_module(module), cls)(**settings)
