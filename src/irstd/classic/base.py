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


def max_fraction_threshold(saliency: torch.Tensor, ratio: float) -> torch.Tensor:
    """The public benchmarks' rule: pixels above min + ratio * (max - min) of the saliency map, per image.

    With ratio = 0.5 this is github.com/Linaom1214/ISTD-Benchmark (method.py / inference.py, Predict.__call__:
    the map is min-max normalised, values below 0.5 * max are zeroed and the metrics count what is left > 0) and,
    for the non-negative maps it is applied to here (min = 0), github.com/Tianfang-Zhang/ISTD-python
    (evaluation/pd_fa.py and my_pd_fa.py: preds / max(preds) > 0.5). A flat map detects nothing.
    """
    flat = saliency.flatten(1)
    low, high = flat.amin(1), flat.amax(1)
    threshold = low + ratio * (high - low)
    return (saliency > threshold.view(-1, 1, 1, 1)) & (high > low).view(-1, 1, 1, 1)
