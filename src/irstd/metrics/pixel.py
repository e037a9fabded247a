"""Pixel-level segmentation metrics of the IRSTD literature, computed on the unpadded image area."""

from __future__ import annotations

import torch
from torchmetrics import Metric

from irstd.ops.regions import valid_region


class _ThresholdedMetric(Metric):
    full_state_update = False

    def __init__(self, threshold: float = 0.5, **kwargs):
        super().__init__(**kwargs)
        self.threshold = threshold

    def _binarise(self, probs: torch.Tensor, target: torch.Tensor, valid_hw: torch.Tensor | None):
        valid = valid_region(probs.shape, valid_hw, probs.device)
        pred = (probs > self.threshold) & valid
        truth = (target > 0) & valid
        return pred, truth


class DatasetIoU(_ThresholdedMetric):
    """Sum of intersections over sum of unions across all images ("IoU" of published tables)."""

    def __init__(self, threshold: float = 0.5, **kwargs):
        super().__init__(threshold, **kwargs)
        self.add_state("intersection", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("union", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, probs: torch.Tensor, target: torch.Tensor, valid_hw: torch.Tensor | None = None) -> None:
        pred, truth = self._binarise(probs, target, valid_hw)
        self.intersection += (pred & truth).sum()
        self.union += (pred | truth).sum()

    def compute(self) -> torch.Tensor:
        return self.intersection.double() / self.union.clamp(min=1).double()


class NormalizedIoU(_ThresholdedMetric):
    """Mean over images of the per-image IoU ("nIoU"); an image with an empty union scores 0, as in
    the reference implementations (their IoU is tp / (eps + union))."""

    def __init__(self, threshold: float = 0.5, **kwargs):
        super().__init__(threshold, **kwargs)
        self.add_state("iou_sum", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("images", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, probs: torch.Tensor, target: torch.Tensor, valid_hw: torch.Tensor | None = None) -> None:
        pred, truth = self._binarise(probs, target, valid_hw)
        intersection = (pred & truth).flatten(1).sum(1).double()
        union = (pred | truth).flatten(1).sum(1).double()
        self.iou_sum += (intersection / union.clamp(min=1)).sum()
        self.images += probs.shape[0]

    def compute(self) -> torch.Tensor:
        return self.iou_sum / self.images.clamp(min=1)


class PixelAccuracy(_ThresholdedMetric):
    """Correctly predicted target pixels / target pixels, as the field reports "pixel accuracy"."""

    def __init__(self, threshold: float = 0.5, **kwargs):
        super().__init__(threshold, **kwargs)
        self.add_state("correct", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("target_pixels", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, probs: torch.Tensor, target: torch.Tensor, valid_hw: torch.Tensor | None = None) -> None:
        pred, truth = self._binarise(probs, target, valid_hw)
        self.correct += (pred & truth).sum()
        self.target_pixels += truth.sum()

    def compute(self) -> torch.Tensor:
        return self.correct.double() / self.target_pixels.clamp(min=1).double()
