"""Training objectives: what a batch means to the training engine, the two kinds every
stage builds on. (A fine-tuning ``--task``, ``doll.finetuning.tasks``, is a whole run that
builds one or more objectives.)

An objective has ``loss(model, batch)``, ``predict(model, batch)`` (per-sample numpy arrays)
and ``metrics(outputs)`` (floats over a whole split); see ``doll.train.engine``.
``ClassificationObjective``: multi-label image labels (stage 1, seg4cls's classifier).
``SegmentationObjective``: multi-label masks, optionally with an auxiliary image-label head
(stage 3; stage 4's tasks extend it).
"""
from __future__ import annotations

import numpy as np
import torch

from doll.train.losses import masked_bce, multilabel_seg_loss
from doll.train.metrics import auroc_per_class, mean_over_images, overlap_counts, scores_from_counts


class ClassificationObjective:
    def __init__(self, classes: list[str]):
        self.classes = classes

    def loss(self, model, batch):
        return masked_bce(model(batch["image"]), batch["target"], batch["weight"])

    def predict(self, model, batch):
        prob = torch.sigmoid(model(batch["image"]).float())
        return {"prob": prob.cpu().numpy(), "target": batch["target"].cpu().numpy(),
                "weight": batch["weight"].cpu().numpy()}

    def metrics(self, out):
        p = np.clip(out["prob"], 1e-7, 1 - 1e-7)
        bce = -(out["target"] * np.log(p) + (1 - out["target"]) * np.log(1 - p)) * out["weight"]
        return {"auroc": auroc_per_class(out["prob"], out["target"], out["weight"], self.classes)["mean"],
                "loss": float(bce.sum() / max(out["weight"].sum(), 1))}


class SegmentationObjective:
    """Multi-label segmentation: loss on (image, mask, valid), IoU per class on validation.

    A network with an auxiliary classification head (smp ``aux_params``) returns
    (masks, labels); its labels get a masked BCE on the image labels, weighted ``aux_weight``.
    """

    def __init__(self, names: list[str], background_weight: float = 1.0, dice_weight: float = 0.5,
                 aux_weight: float = 0.0):
        self.names, self.bg, self.dw, self.aux = names, background_weight, dice_weight, aux_weight

    def loss(self, model, batch):
        out = model(batch["image"])
        seg, cls = out if isinstance(out, tuple) else (out, None)
        loss = multilabel_seg_loss(seg, batch["mask"], self.bg, self.dw, batch.get("valid"))
        if cls is not None and self.aux > 0 and "target" in batch:
            loss = loss + self.aux * masked_bce(cls, batch["target"], batch["weight"])
        return loss

    def predict(self, model, batch):
        out = model(batch["image"])
        return self.scored(out[0] if isinstance(out, tuple) else out, batch)

    @staticmethod
    def scored(logits, batch) -> dict:
        """What ``metrics`` reads, reduced per image and class on the device: intersection
        and union of the predicted (logit > 0) and true (>= 0.5) masks, whether the class is
        present, and whether its map is known. Validation memory is then (N, C) numbers,
        not (N, C, H, W) masks (CheXpert's validation tenth at 224 px: 27 GB)."""
        pred, truth = logits.float() > 0, batch["mask"] >= 0.5
        inter, union = overlap_counts(pred, truth)
        out = {"inter": inter.cpu().numpy(), "union": union.cpu().numpy(),
               "present": truth.any(dim=3).any(dim=2).cpu().numpy()}
        if "valid" in batch:
            out["valid"] = batch["valid"].cpu().numpy()
        return out

    def metrics(self, out):
        """Mean over classes of each class's IoU over the images where it is present and its map
        known: the empty-mask rule ``"skip"`` of ``doll.train.metrics``."""
        iou = scores_from_counts(out["inter"], out["union"], out["present"], empty="skip", valid=out.get("valid"))["iou"]
        per = [v for v in mean_over_images(iou) if v is not None]
        return {"iou": float(np.mean(per)) if per else float("nan")}
