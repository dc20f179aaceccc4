"""Segmenter factory: segmentation-models-pytorch PSPNet, one input channel, no download."""
from __future__ import annotations

import segmentation_models_pytorch as smp
from segmentation_models_pytorch.base import SegmentationHead
from torch import nn

from doll.errors import DollError

ENCODERS = ("resnet18", "resnet34", "resnet50", "densenet121")


def build_pspnet(encoder: str, num_classes: int, aux: bool = False) -> nn.Module:
    """PSPNet; with ``aux`` also a classification head on the encoder (forward returns (masks, labels))."""
    if encoder not in ENCODERS:
        raise DollError(f"unknown --encoder {encoder!r}; choose one of {', '.join(ENCODERS)}")
    aux_params = {"classes": num_classes, "dropout": 0.2} if aux else None
    return smp.PSPNet(encoder_name=encoder, encoder_weights=None, in_channels=1, classes=num_classes,
                      aux_params=aux_params)


def drop_aux_head(model: nn.Module) -> nn.Module:
    """Remove the auxiliary classification head (fine-tuning segments only)."""
    if getattr(model, "classification_head", None) is not None:
        model.classification_head = None
        if hasattr(model, "_hub_mixin_config"):
            model._hub_mixin_config = {**model._hub_mixin_config, "aux_params": None}
    return model


def smp_config(model: nn.Module) -> dict:
    """The keys segmentation_models_pytorch.from_pretrained needs, for config.json."""
    return {"_model_class": type(model).__name__, **dict(getattr(model, "_hub_mixin_config", {}) or {})}


def replace_head(model: nn.Module, num_classes: int) -> nn.Module:
    """A fresh segmentation head with ``num_classes`` outputs (same upsampling)."""
    conv, up = model.segmentation_head[0], model.segmentation_head[1]
    scale = int(getattr(up, "scale_factor", 1) or 1)
    model.segmentation_head = SegmentationHead(conv.in_channels, num_classes, kernel_size=conv.kernel_size[0],
                                               upsampling=scale)
    if hasattr(model, "_hub_mixin_config"):
        model._hub_mixin_config = {**model._hub_mixin_config, "classes": num_classes}
    return model
