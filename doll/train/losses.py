"""Losses shared by the stages."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def masked_bce(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Multi-label BCE where weight 0 leaves an entry (uncertain / not mentioned) out."""
    loss = F.binary_cross_entropy_with_logits(logits.float(), target, reduction="none") * weight
    return loss.sum() / weight.sum().clamp_min(1.0)


def multilabel_seg_loss(logits: torch.Tensor, target: torch.Tensor, background_weight: float = 1.0,
                        dice_weight: float = 0.0, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Per-pixel, per-class BCE with background pixels down-weighted, plus optional soft Dice.

    ``target`` may be soft (in [0, 1]); pixels with target < 0.5 count as background.
    ``valid`` (N, K) leaves out class maps with no label.
    """
    logits = logits.float()
    w = torch.where(target >= 0.5, torch.ones_like(target), torch.full_like(target, background_weight))
    if valid is not None:
        w = w * valid[:, :, None, None]
    bce = (F.binary_cross_entropy_with_logits(logits, target, reduction="none") * w).sum() / w.sum().clamp_min(1.0)
    if dice_weight <= 0:
        return bce
    p = torch.sigmoid(logits)
    inter = (p * target).sum(dim=(2, 3))
    denom = p.sum(dim=(2, 3)) + target.sum(dim=(2, 3))
    dice = 1 - (2 * inter + 1) / (denom + 1)
    if valid is not None:
        dice = (dice * valid).sum() / valid.sum().clamp_min(1.0)
    else:
        dice = dice.mean()
    return bce + dice_weight * dice
