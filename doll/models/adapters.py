"""Residual bottleneck adapters for fine-tuning any of doll's segmenters (PSPNet by default; every
``--decoder``).

``--mode adapter``: every pretrained weight is frozen; a small residual bottleneck
(1x1 conv down to ``channels / reduction``, ReLU, 1x1 conv back up, the up-projection
zero-initialised so training starts from the pretrained function) is added after
each encoder stage the network uses and after the decoder, plus a new head.
BatchNorm layers of the frozen network stay in eval mode (their running statistics
are the pretrained ones and are not updated).

``--mode head``: everything frozen but the new head. ``--mode full``: all trainable.
"""
from __future__ import annotations

import torch
from torch import nn

from doll.errors import DollError

MODES = ("full", "adapter", "head")


class Adapter(nn.Module):
    def __init__(self, channels: int, reduction: int = 8):
        super().__init__()
        hidden = max(8, channels // reduction)
        self.down = nn.Conv2d(channels, hidden, 1)
        self.act = nn.ReLU(inplace=True)
        self.up = nn.Conv2d(hidden, channels, 1)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x):
        return x + self.up(self.act(self.down(x)))


def _stage_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    enc = model.encoder
    names = [n for n, _ in enc.named_children()]
    if "layer1" in names:  # ResNet family
        stages = [(f"encoder.layer{i}", getattr(enc, f"layer{i}")) for i in range(1, 5) if hasattr(enc, f"layer{i}")]
    elif hasattr(enc, "features"):  # DenseNet family
        stages = [(f"encoder.features.{n}", m) for n, m in enc.features.named_children() if n.startswith("denseblock")]
    else:
        raise DollError(f"adapter mode supports resnet and densenet encoders, not {type(enc).__name__}")
    return stages + [("decoder", model.decoder)]


def attach_adapters(model: nn.Module, image_size: int = 64, reduction: int = 8) -> nn.ModuleDict:
    """Insert adapters (as forward hooks) after the stages the network actually runs."""
    candidates = _stage_modules(model)
    seen: dict[str, int] = {}
    hooks = []
    for name, mod in candidates:
        hooks.append(mod.register_forward_hook(
            lambda m, i, o, name=name: seen.__setitem__(name, o.shape[1]) if torch.is_tensor(o) else None))
    was_training = model.training
    model.eval()
    with torch.no_grad():
        p = next(model.parameters())
        model(torch.zeros(1, 1, image_size, image_size, device=p.device, dtype=p.dtype))
    model.train(was_training)
    for h in hooks:
        h.remove()
    adapters = nn.ModuleDict()
    for name, mod in candidates:
        if name in seen:
            key = name.replace(".", "_")
            adapters[key] = Adapter(seen[name], reduction).to(next(model.parameters()).device)
            mod.register_forward_hook(lambda m, i, o, key=key: adapters[key](o))
    model.adapters = adapters  # registered as a submodule: saved, moved and optimised with the model
    return adapters


def set_mode(model: nn.Module, mode: str, image_size: int = 64) -> dict:
    """Freeze according to ``mode``; returns parameter counts: ``total_params`` counts the
    weights the network runs, ``unused_params`` those it carries but never runs (the
    encoder stages the decoder keeps (smp's PSPNet uses three), see ``doll.models.segmenter.freeze_unused``)."""
    if mode not in MODES:
        raise DollError(f"unknown --mode {mode!r}; choose one of {', '.join(MODES)}")
    if mode in ("adapter", "head"):
        if mode == "adapter":
            attach_adapters(model, image_size)
        for n, p in model.named_parameters():
            p.requires_grad = n.startswith("segmentation_head") or (mode == "adapter" and n.startswith("adapters"))
        freeze_batchnorm(model)
    unused = sum(p.numel() for p in model.parameters() if getattr(p, "unused", False))
    total = sum(p.numel() for p in model.parameters()) - unused
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"mode": mode, "trainable_params": trainable, "total_params": total, "unused_params": unused,
            "trainable_fraction": trainable / max(total, 1)}


def freeze_batchnorm(model: nn.Module) -> None:
    """Keep BatchNorm layers whose weights are frozen in eval mode, even under model.train()."""
    frozen = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
              and not any(p.requires_grad for p in m.parameters())]
    original_train = model.train

    def train(mode: bool = True):
        original_train(mode)
        for m in frozen:
            m.eval()
        return model

    model.train = train
    model.train(model.training)
