"""Classifiers users already have (torchvision, timm, torchxrayvision) as doll classifier networks.

A doll classifier takes doll's input, one channel normalised as ``(x / 255 - 0.5) / 0.25``
(``doll.utils.NORMALISATION``), and gives one logit per doll class. An imported network
keeps its own input convention and its own outputs; :class:`ImportedClassifier` wraps it:

* its input: doll's one channel turned, exactly (an affine map per channel), into the
  network's own convention, ``(x * scale - mean[c]) / std[c]`` on the 0-255 pixel ``x``, for
  each of its ``in_channels`` channels (the grey channel repeated for a 3-channel ImageNet
  network: its weights are kept as they are, and so is what it computes);
* its outputs: each doll class is one of the network's outputs (``class_map``), plus a
  fixed logit shift (torchxrayvision's operating points); a class that no output answers
  gets the constant logit :data:`UNMAPPED_LOGIT` (probability ~0, attributions exactly 0).

The folder's ``config.json`` says all of it under ``doll.source`` (written by ``doll
classifiers import``, :mod:`doll.classification.importer`; checked by :class:`doll.schema.ImportSource`);
:func:`classifier_from_config` builds the network of any classifier folder from its doll
section: doll's own (``doll train-classifiers``) or an imported one, by one registry entry
per library (:data:`SOURCES`). The library is looked up in that registry by name: nothing a
file names is ever imported. torchxrayvision's networks are torchvision's DenseNet-121 and
ResNet-50 with one input channel and 18 outputs (the same layers and weight names), so an
imported txv member needs torchxrayvision only when it is imported, not when it is explained.
"""
from __future__ import annotations

from typing import Callable

import torch
import torchvision
from torch import nn

from doll.errors import DollError
from doll.models.classifier import _first_conv_to_one_channel, build_classifier
from doll.utils import NORMALISATION

UNMAPPED_LOGIT = -20.0  # a doll class the imported network has no output for: probability 2e-9, never a target

INSTALL = {"timm": "pip install timm", "txv": "pip install 'doll[txv]' (torchxrayvision)"}


def require_library(library: str):
    """The optional library's module (timm, torchxrayvision), or a DollError saying how to install it."""
    import importlib
    import warnings

    module = {"timm": "timm", "txv": "torchxrayvision"}[library]
    try:
        with warnings.catch_warnings():  # torchxrayvision turns every warning off when imported: keep ours
            return importlib.import_module(module)
    except ImportError:
        raise DollError(f"--from {library} needs {module}, which is not installed; install it with "
                        f"{INSTALL[library]}") from None


def _torchvision(arch: str, outputs: int, in_channels: int) -> nn.Module:
    known = torchvision.models.list_models(module=torchvision.models)  # classification models only
    if arch not in known:
        raise DollError(f"--arch {arch!r} is not a torchvision classification model; choose one of "
                        f"torchvision.models.list_models() (e.g. resnet18, resnet50, densenet121, efficientnet_b0, "
                        "convnext_tiny)")
    model = torchvision.models.get_model(arch, weights=None, num_classes=outputs)
    if in_channels == 1:
        _first_conv_to_one_channel(model)
    return model


def _timm(arch: str, outputs: int, in_channels: int) -> nn.Module:
    timm = require_library("timm")
    try:
        return timm.create_model(arch, pretrained=False, num_classes=outputs, in_chans=in_channels)
    except RuntimeError as exc:  # timm: "Unknown model (...)"
        raise DollError(f"--arch {arch!r} is not a timm model ({str(exc).splitlines()[0]}); see timm.list_models()") \
            from None


TXV_ARCHS = ("densenet121", "resnet50", "resnet101")


def _txv(arch: str, outputs: int, in_channels: int) -> nn.Module:
    """torchxrayvision's classifiers: its DenseNet is torchvision's densenet121 (the same
    layers and weight names, no dropout) and its ResNet a torchvision resnet50/101, each
    with a one-channel first convolution (``doll.classification.importer`` checks the DenseNet
    against torchxrayvision's own class when it imports one)."""
    if arch not in TXV_ARCHS:
        raise DollError(f"--arch {arch!r} is not a torchxrayvision classifier; choose one of {', '.join(TXV_ARCHS)}")
    model = torchvision.models.get_model(arch, weights=None, num_classes=outputs)
    _first_conv_to_one_channel(model)
    return model


# library -> (arch, number of outputs, input channels) -> the library's network, randomly initialised
SOURCES: dict[str, Callable[[str, int, int], nn.Module]] = {"torchvision": _torchvision, "timm": _timm, "txv": _txv}


def build_network(library: str, arch: str, outputs: int, in_channels: int) -> nn.Module:
    if library not in SOURCES:
        raise DollError(f"unknown --from {library!r}; choose one of {', '.join(SOURCES)}")
    return SOURCES[library](arch, outputs, in_channels)


def input_map(normalisation: dict, in_channels: int) -> tuple[list[float], list[float]]:
    """Gain and offset per channel taking doll's input to the network's own:
    ``net[c] = doll * gain[c] + offset[c]`` (both are affine in the 0-255 pixel)."""
    r = float(normalisation["scale"]) / NORMALISATION["scale"]
    mean, std = list(normalisation["mean"]), list(normalisation["std"])
    if len(mean) != in_channels or len(std) != in_channels:
        raise DollError(f"the normalisation has {len(mean)} mean(s) and {len(std)} std(s) for a network of "
                        f"{in_channels} input channel(s)")
    gain = [NORMALISATION["std"] * r / s for s in std]
    offset = [(NORMALISATION["mean"] * r - m) / s for m, s in zip(mean, std)]
    return gain, offset


class ImportedClassifier(nn.Module):
    """An imported network with doll's input and doll's classes (see the module's doc).
    Its weights are the network's, under ``net.``; the rest is set from config.json."""

    def __init__(self, net: nn.Module, in_channels: int, normalisation: dict, index: list[int], shift: list[float]):
        super().__init__()
        self.net = net
        gain, offset = input_map(normalisation, in_channels)
        self.register_buffer("gain", torch.tensor(gain).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("offset", torch.tensor(offset).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("index", torch.tensor(index, dtype=torch.long), persistent=False)
        self.register_buffer("shift", torch.tensor(shift, dtype=torch.float32), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.net(x * self.gain + self.offset)  # (B, 1, H, W) -> (B, in_channels, H, W)
        if not torch.is_tensor(logits):  # torchvision's Inception/GoogLeNet in training mode: (logits, aux)
            logits = logits[0]
        padded = torch.cat([logits, logits.new_full((logits.shape[0], 1), UNMAPPED_LOGIT)], dim=1)
        return padded.index_select(1, self.index) + self.shift.to(padded.dtype)


def output_index(classes: list[str], source: dict) -> tuple[list[int], list[float]]:
    """For each doll class, the network output it is (``len(outputs)``: none, the constant
    logit) and its logit shift."""
    outputs, class_map = list(source["outputs"]), source["class_map"]
    shifts = source.get("logit_shift") or {}
    index = [outputs.index(class_map[c]) if class_map.get(c) is not None else len(outputs) for c in classes]
    return index, [float(shifts.get(c, 0.0)) for c in classes]


def imported_classifier(cfg: dict) -> ImportedClassifier:
    """The (randomly initialised) network of an imported classifier folder's doll section."""
    source = cfg["source"]
    net = build_network(source["library"], cfg["arch"], len(source["outputs"]), source["in_channels"])
    index, shift = output_index(cfg["classes"], source)
    return ImportedClassifier(net, source["in_channels"], source["normalisation"], index, shift)


def classifier_from_config(cfg: dict) -> nn.Module:
    """The network of a classifier folder, from its config.json's doll section (as
    :func:`doll.models.checkpoint.read_config` returns it, checked): doll's own
    (``build_classifier(arch, classes)``) or, when it has a ``source``, an imported one."""
    if cfg.get("source"):
        return imported_classifier(cfg)
    return build_classifier(cfg["arch"], len(cfg["classes"]))
