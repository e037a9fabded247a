"""The interface every training-free detector implements."""

from __future__ import annotations

import torch
from torch import nn


class ClassicDetector(nn.Module):
    """A training-free detector: a saliency map, then the method's own threshold rule.

    Subclasses implement `saliency` (batched torch, any device; no parameters to learn) and `segment`.
    Inputs are B x 1 x H x W float images in native intensity units (0-255 for 8-bit frames).
    """

    def saliency(self, image: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def segment(self, saliency: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Boolean detections, B x 1 x H x W."""
        return self.segment(self.saliency(image))


def mean_std_threshold(saliency: torch.Tensor, k: float) -> torch.Tensor:
    """The rule most of these papers use: pixels above mean + k * std of the saliency map, per image."""
    flat = saliency.flatten(1)
    threshold = flat.mean(1) + k * flat.std(1)
    return saliency > threshold.view(-1, 1, 1, 1)
