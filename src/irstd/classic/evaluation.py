"""A training-free detector behind the interface `irstd-eval` scores networks through (`detector=tophat` etc.).

The detectors work in native intensity units and apply their own threshold rule, so the wrapper undoes the
normalisation of the evaluation batches and returns the binary detection as 0/1 "probabilities": eval's 0.5
threshold then keeps exactly the method's decision.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from irstd.classic import build_detector
from irstd.classic.base import ClassicDetector


class ClassicModel(nn.Module):
    """A `ClassicDetector` fed normalised images: `(image * std + mean)` restores the native units."""

    def __init__(self, detector: ClassicDetector, mean: float = 0.0, std: float = 1.0):
        super().__init__()
        self.detector = detector
        self.mean, self.std = float(mean), float(std)

    @classmethod
    def from_config(cls, classic: Mapping[str, Any], mean: float = 0.0, std: float = 1.0) -> ClassicModel:
        """From the `detector` config: the registry name under `name`, the detector's keyword arguments beside it."""
        params = dict(classic)
        return cls(build_detector(params.pop("name"), **params), mean, std)

    @torch.no_grad()
    def probabilities(self, image: torch.Tensor) -> torch.Tensor:
        """0/1 detections of whole B x 1 x H x W normalised images (any padding is seen as image content)."""
        return self.detector(image * self.std + self.mean).to(image.dtype)

    def batch_predictor(self, device: torch.device) -> Callable[[Mapping[str, Any]], torch.Tensor]:
        """A predictor over eval batches that runs the detector on each image's valid region only.

        The padded border would otherwise enter the detectors' background statistics (local windows, the
        mean + k std thresholds, low-rank patch models) and change their decisions near the bottom/right edges.
        """
        self.to(device).eval()

        def predict(batch: Mapping[str, Any]) -> torch.Tensor:
            image = batch["image"].to(device)
            probs = torch.zeros_like(image)
            for i, (height, width) in enumerate(batch["valid_hw"].tolist()):
                probs[i:i + 1, :, :height, :width] = self.probabilities(image[i:i + 1, :, :height, :width])
            return probs

        return predict
