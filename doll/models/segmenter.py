"""Segmenters: one registry of segmentation-models-pytorch decoders, one input channel, no download.

``build_segmenter(decoder, encoder, classes)`` makes any of ``DECODERS`` through smp's own
factory (``segmentation_models_pytorch.create_model``); ``load_segmenter(folder)`` rebuilds
whatever a doll command saved from its ``config.json`` (the doll section names the
decoder; smp's ``_model_class`` is read for folders written before it did).
``checkpoint_config`` is the one description of a segmenter that every stage saves.

PSPNet is the default: it is the method's network. Adding a decoder is one row in
``DECODERS`` (smp's ``create_model`` name -> its class name).
"""
from __future__ import annotations

from pathlib import Path

import segmentation_models_pytorch as smp
import torch
from segmentation_models_pytorch.base import SegmentationHead
from segmentation_models_pytorch.base.initialization import initialize_head
from torch import nn

from doll.errors import DollError

from doll.models.names import DECODERS, DEFAULT_DECODER, DEFAULT_ENCODER, ENCODERS  # noqa: F401 - re-exported
_DECODER_OF_CLASS = {cls: name for name, cls in DECODERS.items()}


def check_decoder(decoder: str) -> str:
    if decoder not in DECODERS:
        raise DollError(f"unknown --decoder {decoder!r}; choose one of {', '.join(DECODERS)}")
    return decoder


def check_encoder(encoder: str) -> str:
    if encoder not in ENCODERS:
        raise DollError(f"unknown --encoder {encoder!r}; choose one of {', '.join(ENCODERS)}")
    return encoder


def _create(decoder: str, encoder: str, classes: int, aux: bool) -> nn.Module:
    check_decoder(decoder)
    check_encoder(encoder)
    aux_params = {"classes": classes, "dropout": 0.2} if aux else None
    return smp.create_model(decoder, encoder_name=encoder, encoder_weights=None, in_channels=1, classes=classes,
                            aux_params=aux_params)


def build_segmenter(decoder: str, encoder: str, classes: int, aux: bool = False) -> nn.Module:
    """A new segmenter; with ``aux`` also a classification head on the encoder (forward
    returns (masks, labels)). Weights no forward pass reaches are frozen (``freeze_unused``)."""
    model = _create(decoder, encoder, classes, aux)
    freeze_unused(model)
    return model


def size_multiple(model: nn.Module) -> int:
    """The number an input's height and width must be a multiple of (1: any size)."""
    if not getattr(model, "requires_divisible_input_shape", True):
        return 1
    return int(getattr(model.encoder, "output_stride", 32))


def nearest_sizes(decoder: str, encoder: str, size: int) -> tuple[int, list[int]]:
    """The multiple the network needs and, when ``size`` is not one, the nearest sizes it can
    take (below and above; empty when it can take ``size``)."""
    m = size_multiple(_create(decoder, encoder, 1, False))
    if size >= m and not size % m:
        return m, []
    return m, [v for v in ((size // m) * m, (size // m + 1) * m) if v >= m]


def check_image_size(decoder: str, encoder: str, size: int, option: str = "--image-size") -> None:
    """Refuse, before any work, an image size the network cannot take, naming the nearest valid ones."""
    m, near = nearest_sizes(decoder, encoder, size)
    if near:
        raise DollError(f"{option} {size}: a {DECODERS[decoder]} with a {encoder} encoder needs a multiple of {m} "
                        f"(at least {m}); use {' or '.join(map(str, near))}")


def freeze_unused(model: nn.Module, size: int = 64) -> int:
    """Freeze the weights no forward pass reaches; returns how many tensors were frozen.

    smp's PSPNet runs only the first ``encoder_depth`` (3) encoder stages but keeps the
    later ones (its state dict, and so doll's checkpoints, include them). Left trainable,
    they never get a gradient: DDP under torchrun then fails at the second step, and
    ``trainable_params`` counts weights that cannot change. One forward and backward on a
    blank image finds them (for U-Net, FPN and DeepLabV3+ none)."""
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


def decoder_of(model: nn.Module) -> str:
    return _DECODER_OF_CLASS.get(type(model).__name__, type(model).__name__.lower())


def checkpoint_config(model: nn.Module, encoder: str, classes: list[str], image_size: int, stage: str,
                      normalisation: dict, **extra) -> dict:
    """The ``doll`` section of a segmenter's config.json (what ``load_segmenter`` reads)."""
    return {"kind": "segmenter", "stage": stage, "decoder": decoder_of(model), "encoder": encoder,
            "classes": list(classes), "in_channels": 1, "image_size": int(image_size),
            "normalisation": normalisation, **extra}


def replace_head(model: nn.Module, num_classes: int) -> nn.Module:
    """A fresh segmentation head with ``num_classes`` outputs (same kernel and upsampling),
    initialised as smp initialises the head of a new model (Xavier-uniform weights, zero bias).

    PyTorch's default Conv2d initialisation instead (weights 2.4x smaller for PSPNet's
    512-channel 3x3 head, random bias) made fine-tuning from DoLL init lose to random init
    on the phantom anatomy: with the few optimiser steps of a small task it never learnt
    the clavicles (IoU 0.0 in 3 seeds of 3; with this initialisation 0.08-0.30)."""
    conv, up = model.segmentation_head[0], model.segmentation_head[1]
    scale = int(getattr(up, "scale_factor", 1) or 1)
    model.segmentation_head = SegmentationHead(conv.in_channels, num_classes, kernel_size=conv.kernel_size[0],
                                               upsampling=scale).to(conv.weight.device)
    initialize_head(model.segmentation_head)
    if hasattr(model, "_hub_mixin_config"):
        model._hub_mixin_config = {**model._hub_mixin_config, "classes": num_classes}
    return model


def saved_decoder(config: dict) -> str:
    """The decoder a saved segmenter was built with (PSPNet for folders that predate the registry)."""
    doll = config.get("doll", {})
    decoder = doll.get("decoder") or _DECODER_OF_CLASS.get(config.get("_model_class", "PSPNet"))
    if decoder not in DECODERS:
        raise DollError(f"the segmenter's config names decoder {decoder or config.get('_model_class')!r}, which this "
                        f"doll cannot build (known: {', '.join(DECODERS)})")
    return decoder


def load_segmenter(folder: str | Path, config: dict | None = None) -> tuple[nn.Module, dict]:
    """Any segmenter a doll command saved (pretrain, finetune, the lung model), rebuilt from
    its ``config.json`` with its weights, adapters too; returns (model, its ``doll`` config).
    The model is on the CPU, in training mode, as saved (an auxiliary head included)."""
    from doll.models.adapters import set_mode
    from doll.models.checkpoint import load_into, read_config

    config = config or read_config(folder, kind="segmenter")
    cfg = config["doll"]
    model = build_segmenter(saved_decoder(config), cfg["encoder"], len(cfg["classes"]), aux=bool(cfg.get("aux")))
    if cfg.get("mode", "full") != "full":
        set_mode(model, cfg["mode"], cfg["image_size"])
    load_into(model, folder)
    return model, cfg
