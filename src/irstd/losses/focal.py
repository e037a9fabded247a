"""Focal loss of the LESPS reference, on logits."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def focal_loss(logits: torch.Tensor, target: torch.Tensor, alpha: float = 2.0, gamma: float = 4.0) -> torch.Tensor:
    """Sum over pixels of `-log(p)(1-p)^a y - log(1-p) p^a (1-y)^g`, divided by max(1, #(y == 1)).

    Soft targets are allowed (evolved labels lie in [0, 1]); only pixels whose
    label is exactly 1 count as positives for the normalisation, as in the
    reference. Works on logits with log-sigmoid, which equals the reference's
    `log(p + 1e-12)` without its clamp at p -> 0.
    """
    prob = torch.sigmoid(logits)
    log_p = F.logsigmoid(logits)
    log_not_p = F.logsigmoid(-logits)
    positive = -log_p * (1 - prob).pow(alpha) * target
    negative = -log_not_p * prob.pow(alpha) * (1 - target).pow(gamma)
    num_positive = target.eq(1).sum().clamp(min=1)
    return (positive + negative).sum() / num_positive


class FocalLoss(nn.Module):
    """Focal loss summed over deep-supervision heads when a backbone returns several maps."""

    def __init__(self, alpha: float = 2.0, gamma: float = 4.0):
        super().__init__()
        self.alpha = alpha
        self.gamma = gamma

    def forward(self, logits: torch.Tensor | Sequence[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        heads = logits if isinstance(logits, (list, tuple)) else [logits]
        return sum(focal_loss(head, target, self.alpha, self.gamma) for head in heads)
