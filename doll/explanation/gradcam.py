"""Grad-CAM (Captum's LayerGradCam on the last convolutional block), for comparison with IG."""
from __future__ import annotations

import numpy as np
import torch
from captum.attr import LayerAttribution, LayerGradCam

from doll.explanation.base import Explainer


def _last_conv_block(model: torch.nn.Module) -> torch.nn.Module:
    for name in ("layer4", "features"):
        if hasattr(model, name):
            return getattr(model, name)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    return convs[-1]


class GradCam(Explainer):
    name = "gradcam"

    def attribute(self, model, images, targets):
        model.eval()
        cam = LayerGradCam(model, _last_conv_block(getattr(model, "classifier", model)))  # unwrap EvidenceOutput
        out = []
        for i, tg in enumerate(targets):
            maps = []
            for c in tg:
                a = cam.attribute(images[i:i + 1], target=c, relu_attributions=True)
                a = LayerAttribution.interpolate(a, tuple(images.shape[-2:]), interpolate_mode="bilinear")
                maps.append(a[0].sum(0).detach().float().cpu().numpy())
            out.append(np.stack(maps) if maps else np.zeros((0, *images.shape[-2:]), np.float32))
        return out
