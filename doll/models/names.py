"""The names of doll's networks, without torch (the CLI's settings and help read them):
segmenter decoders (smp class names), encoders and the defaults."""
from __future__ import annotations

DEFAULT_DECODER = "pspnet"
DEFAULT_ENCODER = "resnet34"
DECODERS = {"pspnet": "PSPNet", "unet": "Unet", "unetplusplus": "UnetPlusPlus", "deeplabv3plus": "DeepLabV3Plus",
            "fpn": "FPN"}
ENCODERS = ("resnet18", "resnet34", "resnet50", "densenet121")
