"""Soft IoU loss of BasicIRSTD (XinyiYing/BasicIRSTD, loss.py `SoftIoULoss`), on logits."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def soft_iou_loss(logits: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """`1 - (sum(p t) + smooth) / (sum(p) + sum(t) - sum(p t) + smooth)`, with p = sigmoid(logits).

    The sums run over the whole batch at once (one ratio per batch, not a mean of per-image ratios), as in
    BasicIRSTD, whose smooth is 1. Soft targets are allowed.
    """
    prob = torch.sigmoid(logits)
    intersection = (prob * target).sum()
    return 1 - (intersection + smooth) / (prob.sum() + target.sum() - intersection + smooth)


class SoftIoULoss(nn.Module):
    """Soft IoU loss summed over deep-supervision heads when a backbone returns several maps.

    BasicIRSTD averages over heads instead; the sum keeps every loss of this package on one convention (the
    factor is the number of heads, which Adam's step size does not see).
    """

    def __init__(self, smooth: float = 1.0):
        super().__init__()
        if smooth < 0:
            raise ValueError(f"smooth must be >= 0, got {smooth}")
        self.smooth = smooth

    def forward(self, logits: torch.Tensor | Sequence[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        heads = logits if isinstance(logits, (list, tuple)) else [logits]
        return sum(soft_iou_loss(head, target, self.smooth) for head in heads)
