"""Segmenter factory: segmentation-models-pytorch PSPNet, one input channel, no download."""
from __future__ import annotations

import segmentation_models_pytorch as smp
from segmentation_models_pytorch.base import SegmentationHead
from torch import nn

from doll.errors import DollError

ENCODERS = ("resnet18", "resnet34", "resnet50", "densenet121")


def build_pspnet(encoder: str, num_classes: int, **kwargs) -> nn.Module:
    if encoder not in ENCODERS:
        raise DollError(f"unknown --encoder {encoder!r}; choose one of {', '.join(ENCODERS)}")
    return smp.PSPNet(encoder_name=encoder, encoder_weights=None, in_channels=1, classes=num_classes, **kwargs)


def replace_head(model: nn.Module, num_classes: int) -> nn.Module:
    """A fresh segmentation head with ``num_classes`` outputs (same upsampling)."""
    old = model.segmentation_head
    conv = old[0]
    up = old[1]
    scale = getattr(up, "scale_factor", 1) or 1
    model.segmentation_head = SegmentationHead(conv.in_channels, num_classes, kernel_size=conv.kernel_size[0],
                                               upsampling=int(scale))
    return model
