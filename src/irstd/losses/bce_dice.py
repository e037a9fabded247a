"""Binary cross-entropy plus a weighted Dice loss, on logits."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def bce_dice_loss(logits: torch.Tensor, target: torch.Tensor, dice_weight: float = 1.0,
                  smooth: float = 1.0) -> torch.Tensor:
    """`BCE + dice_weight * (1 - (2 sum(p t) + smooth) / (sum(p) + sum(t) + smooth))`, with p = sigmoid(logits).

    BCE is the mean over all pixels of the batch; the Dice sums run over the whole batch, so a batch without
    targets still has a defined Dice term (which smooth keeps from dividing by zero). Soft targets are allowed.
    """
    bce = F.binary_cross_entropy_with_logits(logits, target.to(logits.dtype))
    prob = torch.sigmoid(logits)
    dice = 1 - (2 * (prob * target).sum() + smooth) / (prob.sum() + target.sum() + smooth)
    return bce + dice_weight * dice


class BCEDiceLoss(nn.Module):
    """BCE + weighted Dice, summed over deep-supervision heads when a backbone returns several maps."""

    def __init__(self, dice_weight: float = 1.0, smooth: float = 1.0):
        super().__init__()
        if dice_weight < 0:
            raise ValueError(f"dice_weight must be >= 0, got {dice_weight}")
        if smooth < 0:
            raise ValueError(f"smooth must be >= 0, got {smooth}")
        self.dice_weight = dice_weight
        self.smooth = smooth

    def forward(self, logits: torch.Tensor | Sequence[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        heads = logits if isinstance(logits, (list, tuple)) else [logits]
        return sum(bce_dice_loss(head, target, self.dice_weight, self.smooth) for head in heads)
