"""Segmenter factory: segmentation-models-pytorch PSPNet, one input channel, no download."""
from __future__ import annotations

import segmentation_models_pytorch as smp
import torch
from segmentation_models_pytorch.base import SegmentationHead
from segmentation_models_pytorch.base.initialization import initialize_head
from torch import nn

from doll.errors import DollError

ENCODERS = ("resnet18", "resnet34", "resnet50", "densenet121")


def build_pspnet(encoder: str, num_classes: int, aux: bool = False) -> nn.Module:
    """PSPNet; with ``aux`` also a classification head on the encoder (forward returns (masks, labels))."""
    if encoder not in ENCODERS:
        raise DollError(f"unknown --encoder {encoder!r}; choose one of {', '.join(ENCODERS)}")
    aux_params = {"classes": num_classes, "dropout": 0.2} if aux else None
    model = smp.PSPNet(encoder_name=encoder, encoder_weights=None, in_channels=1, classes=num_classes,
                       aux_params=aux_params)
    freeze_unused(model)
    return model


def freeze_unused(model: nn.Module, size: int = 64) -> int:
    """Freeze the weights no forward pass reaches; returns how many tensors were frozen.

    smp's PSPNet runs only the first ``encoder_depth`` (3) encoder stages but keeps the
    later ones (its state dict, and so doll's checkpoints, include them). Left trainable,
    they never get a gradient: DDP under torchrun then fails at the second step, and
    ``trainable_params`` counts weights that cannot change. One forward and backward on a
    blank image finds them."""
    was_training = model.training
    model.eval()  # no BatchNorm statistics updated, no dropout
    p = next(model.parameters())
    out = model(torch.zeros(1, 1, size, size, device=p.device, dtype=p.dtype))
    sum(o.float().sum() for o in (out if isinstance(out, tuple) else (out,))).backward()
    frozen = 0
    for q in model.parameters():
        if q.requires_grad and q.grad is None:
            q.requires_grad_(False)
            q.unused = True  # survives load_state_dict; set_mode leaves it out of the counts
            frozen += 1
        q.grad = None
    model.train(was_training)
    return frozen


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
    """A fresh segmentation head with ``num_classes`` outputs (same upsampling), initialised
    as smp initialises the head of a new model (Xavier-uniform weights, zero bias).

    PyTorch's default Conv2d initialisation instead (weights 2.4x smaller for PSPNet's
    512-channel 3x3 head, random bias) made fine-tuning from DoLL init lose to random init
    on the phantom anatomy: with the few optimiser steps of a small task it never learnt
    the clavicles (IoU 0.0 in 3 seeds of 3; with this initialisation 0.08-0.30)."""
    conv, up = model.segmentation_head[0], model.segmentation_head[1]
    scale = int(getattr(up, "scale_factor", 1) or 1)
    model.segmentation_head = SegmentationHead(conv.in_channels, num_classes, kernel_size=conv.kernel_size[0],
                                               upsampling=scale)
    initialize_head(model.segmentation_head)
    if hasattr(model, "_hub_mixin_config"):
        model._hub_mixin_config = {**model._hub_mixin_config, "classes": num_classes}
    return model
