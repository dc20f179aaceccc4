"""The names of doll's networks and the model defaults the CLI shows, without torch (the
CLI's settings, its help and the checkpoint schema read them): classifier architectures,
segmenter decoders (smp class names), encoders, the defaults, the lung field's default margin."""
from __future__ import annotations

CLASSIFIER_ARCHS = ("resnet18", "resnet34", "resnet50", "densenet121", "efficientnet_b0")  # torchvision's
DEFAULT_DECODER = "pspnet"
DEFAULT_ENCODER = "resnet34"
DECODERS = {"pspnet": "PSPNet", "unet": "Unet", "unetplusplus": "UnetPlusPlus", "deeplabv3plus": "DeepLabV3Plus",
            "fpn": "FPN"}
ENCODERS = ("resnet18", "resnet34", "resnet50", "densenet121")
SALIENCY_MARGIN = 0.01  # default dilation of the field that multiplies saliency (`explain --field-margin`)


def one_of(names) -> str:
    """``a, b or c``: a help text's list of choices, written from the registry it comes from."""
    names = list(names)
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"
