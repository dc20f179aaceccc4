"""Classifier factory: torchvision architectures with one input channel."""
from __future__ import annotations

import re

import torch
import torchvision
from torch import nn

from doll.errors import DollError
from doll.models.checkpoint import read_weights_file
from doll.models.names import CLASSIFIER_ARCHS  # noqa: F401 - the names, without torch; importable from here


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


HEADS = ("fc.", "classifier.")  # torchvision's last layer (ResNet; DenseNet, EfficientNet): new for our classes
# torchvision's first DenseNet files name a layer's parts "norm.1", "conv.2"; the models today "norm1", "conv2"
_OLD_DENSENET_KEY = re.compile(r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$")


def load_pretrained(model: nn.Module, arch: str, path: str) -> int:
    """Every weight of ``arch`` but its classification head from a local file (e.g. torchvision's
    ImageNet weights, downloaded by you): the first convolution's RGB kernels are summed for
    our one channel. Anything missing or of another shape is an error, not a silent partial
    load. Returns the number of tensors loaded."""
    state = {_OLD_DENSENET_KEY.sub(r"\1\2", k): v for k, v in read_weights_file(path, "--init imagenet:").items()}
    own = model.state_dict()
    needed = [k for k in own if not k.startswith(HEADS) and not k.endswith("num_batches_tracked")]
    matched, wrong = {}, []
    for k in needed:
        v = state.get(k)
        if v is not None and v.ndim == 4 and v.shape[1] == 3 and own[k].shape[1] == 1:
            v = v.sum(dim=1, keepdim=True)
        if v is None or v.shape != own[k].shape:
            wrong.append(k)
        else:
            matched[k] = v
    if wrong:
        raise DollError(f"--init imagenet:{path}: {len(wrong)} of the {len(needed)} {arch} weights are missing from "
                        f"the file or have another shape (first: {wrong[0]}); is it a torchvision {arch} checkpoint?")
    model.load_state_dict(matched, strict=False)
    return len(matched)
