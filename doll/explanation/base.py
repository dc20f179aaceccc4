"""The explainer interface: every method turns images and per-image targets into maps.

An explainer is a class with ``name`` and
``attribute(model, images, targets) -> Attribution`` (or a plain list of maps) where
``images`` is a normalised float tensor (B, 1, H, W) on the model's device,
``targets[i]`` is the list of class indices to explain for image i, and the result
``[i]`` is a float32 array (len(targets[i]), H, W) of signed attributions. Per-map
diagnostics (e.g. IG completeness errors) come back with the maps
(``Attribution.diagnostics``) for ``metrics.json``; ``progress``, when set, is called
with the images finished so far, so the progress bar moves per batch.

What a map explains (``--evidence``): ``class``, the class's own logit; ``abnormal``,
the evidence against the data set's normal class (minus the logit of ``No Finding`` /
``Normal``: whatever makes the image look abnormal, the same map for every class of an
image); ``contrast``, the class logit minus the normal class's. The explainers see a
classifier wrapped in :class:`EvidenceOutput`, so every method explains exactly that
output (IG's completeness holds for it).
"""
from __future__ import annotations

import torch

from doll.errors import DollError
from doll.utils import registered_class

METHODS = {
    "ig": "doll.explanation.ig:IntegratedGradients",
    "ig-smooth": "doll.explanation.ig:SmoothIntegratedGradients",
    "gradcam": "doll.explanation.gradcam:GradCam",
}


EVIDENCE = ("class", "abnormal", "contrast")
NORMAL_CLASSES = ("No Finding", "Normal")  # image labels that mean "nothing to localise"


def check_evidence(evidence: str) -> str:
    if evidence not in EVIDENCE:
        raise DollError(f"unknown --evidence {evidence!r}; choose one of {', '.join(EVIDENCE)}")
    return evidence


def normal_class(classes: list[str], evidence: str) -> int | None:
    """Index of the normal class that ``evidence`` is measured against (None for ``class``)."""
    if check_evidence(evidence) == "class":
        return None
    found = [i for i, c in enumerate(classes) if c in NORMAL_CLASSES]
    if not found:
        raise DollError(f"--evidence {evidence} needs a normal class ({' or '.join(NORMAL_CLASSES)}) among the "
                        f"classifiers' classes ({', '.join(classes)}); use --evidence class")
    return found[0]


class EvidenceOutput(torch.nn.Module):
    """A classifier whose output c is what ``--evidence`` explains for class c."""

    def __init__(self, classifier: torch.nn.Module, evidence: str, normal: int | None):
        super().__init__()
        self.classifier, self.evidence, self.normal = classifier, evidence, normal

    def forward(self, x):
        logits = self.classifier(x)
        if self.evidence == "class":
            return logits
        normal = logits[:, self.normal:self.normal + 1]
        return -normal.expand_as(logits) if self.evidence == "abnormal" else logits - normal


class Attribution(list):
    """What ``Explainer.attribute`` returns: the maps (one float array (targets, H, W) per
    image, as a list) and the method's ``diagnostics`` (e.g. IG's
    ``completeness_rel_error``, one value per explained target, as Captum returns its
    convergence delta; ``fp32_fallbacks``, chunks redone in float32). A plain list of maps,
    what an explainer of your own may return, reads as no diagnostics."""

    def __init__(self, maps=(), **diagnostics):
        super().__init__(maps)
        self.diagnostics = diagnostics


def diagnostics_of(maps) -> dict:
    return getattr(maps, "diagnostics", {})


class Explainer:
    name = ""

    def __init__(self, **settings):
        self.settings = settings
        # set by doll explain before each attribute(): call it with the number of images
        # finished so far in this call, as they finish (the progress bar moves per batch);
        # an explainer that never calls it moves the bar once per block
        self.progress = None

    def report_images(self, count: float) -> None:
        if self.progress is not None:
            self.progress(count)

    def attribute(self, model, images, targets):  # pragma: no cover - interface
        raise NotImplementedError

    def reseed(self, *key) -> None:
        """Called before each ``attribute`` with the block and member explained: a method that
        draws noise restarts its generator from (seed, key), so a block's maps do not depend
        on which blocks ran before it (``--resume``, torchrun shards)."""


def make_explainer(method: str, **settings) -> Explainer:
    """A built-in method by name, or your own Explainer subclass as ``package.module:ClassName``."""
    return registered_class(method, METHODS, Explainer, "--method",
                            f"unknown --method {method!r}; choose one of {', '.join(METHODS)}, "
                            "or name your own explainer as package.module:ClassName")(**settings)
