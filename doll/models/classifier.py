"""Classifier factory: torchvision architectures with one input channel."""
from __future__ import annotations

import torch
import torchvision
from torch import nn

from doll.errors import DollError

CLASSIFIER_ARCHS = ("resnet18", "resnet34", "resnet50", "densenet121", "efficientnet_b0")


def _first_conv_to_one_channel(model: nn.Module) -> None:
    """Replace the first 3-channel conv by a 1-channel one (RGB weights summed if any)."""
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d) and module.in_channels == 3:
            new = nn.Conv2d(1, module.out_channels, module.kernel_size, module.stride, module.padding,
                            module.dilation, module.groups, module.bias is not None)
            with torch.no_grad():
                new.weight.copy_(module.weight.sum(dim=1, keepdim=True))
                if module.bias is not None:
                    new.bias.copy_(module.bias)
            parent = model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model
            setattr(parent, name.rsplit(".", 1)[-1], new)
            return
    raise DollError("could not find the first 3-channel convolution to adapt to one channel")


def build_classifier(arch: str, num_classes: int) -> nn.Module:
    """A torchvision ``arch`` with one input channel and ``num_classes`` logits, random init."""
    if arch not in CLASSIFIER_ARCHS:
        raise DollError(f"unknown --arch {arch!r}; choose one of {', '.join(CLASSIFIER_ARCHS)}")
    model = torchvision.models.get_model(arch, weights=None, num_classes=num_classes)
    _first_conv_to_one_channel(model)
    return model
