"""seg4cls networks and training tasks: probability maps + embeddings, the multitask (Y-Net) net, the trained summarizers."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from doll.train.losses import masked_bce, multilabel_seg_loss
from doll.train.metrics import auroc_per_class
from doll.train.objectives import SegmentationObjective


class ProbSegObjective(SegmentationObjective):
    """Segmentation whose predictions are the per-class probability maps and a pooled
    embedding of the decoder's features (the segmentation head's input)."""

    def predict(self, model, batch):
        head = getattr(model, "module", model).segmentation_head
        feats = []
        hook = head.register_forward_hook(lambda _m, inputs, _o: feats.append(inputs[0].detach()))
        try:
            logits = model(batch["image"])
        finally:
            hook.remove()
        f = feats[0].float()
        out = {"prob": torch.sigmoid(logits.float()).cpu().numpy().astype(np.float16),
               "embedding": torch.cat([f.mean(dim=(2, 3)), f.amax(dim=(2, 3))], 1).cpu().numpy()}
        if "mask" in batch:  # validation while training: the per-epoch IoU curve
            out.update(self.scored(logits, batch))
        return out

    def metrics(self, out):
        return super().metrics(out) if "inter" in out else {}


class YNet(nn.Module):
    """The segmenter (any --decoder) + a classification head on the encoder's last feature
    (Y-Net style): smp's own ``aux_params`` head (``ClassificationHead``: average pooling,
    dropout 0.2, a linear layer), added to an already built (or pretrained) segmenter; smp's
    forward then returns (masks, labels)."""

    def __init__(self, seg: nn.Module, n_classes: int):
        super().__init__()
        from segmentation_models_pytorch.base import ClassificationHead
        from segmentation_models_pytorch.base.initialization import initialize_head

        seg.classification_head = ClassificationHead(seg.encoder.out_channels[-1], n_classes)
        initialize_head(seg.classification_head)
        self.seg = seg

    def forward(self, x):
        return self.seg(x)


class MultitaskObjective:
    def __init__(self, classes, dice_weight: float = 0.5):
        self.classes, self.dw = classes, dice_weight

    def loss(self, model, batch):
        seg, cls = model(batch["image"])
        return (multilabel_seg_loss(seg, batch["mask"], 1.0, self.dw, batch["valid"])
                + masked_bce(cls, batch["target"], batch["weight"]))

    def predict(self, model, batch):
        _, cls = model(batch["image"])
        return {"prob": torch.sigmoid(cls.float()).cpu().numpy(), "target": batch["target"].cpu().numpy(),
                "weight": batch["weight"].cpu().numpy()}

    def metrics(self, out):
        return {"auroc": auroc_per_class(out["prob"], out["target"], out["weight"], self.classes)["mean"]}



class PerClassLinear(nn.Module):
    def __init__(self, n_classes: int, n_features: int):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(n_classes, n_features))
        self.b = nn.Parameter(torch.zeros(n_classes))

    def forward(self, x):  # (N, C, F)
        return (x * self.w).sum(-1) + self.b


class MaskCNN(nn.Module):
    def __init__(self, n_classes: int, width: int = 16):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(n_classes, width, 3, 2, 1), nn.ReLU(), nn.Conv2d(width, 2 * width, 3, 2, 1), nn.ReLU(),
            nn.Conv2d(2 * width, 2 * width, 3, 2, 1), nn.ReLU(), nn.AdaptiveMaxPool2d(1), nn.Flatten(),
            nn.Linear(2 * width, n_classes))

    def forward(self, x):
        return self.net(x)
