"""Evaluation metrics as torchmetrics classes (tensor states, reduced across DDP ranks)."""

from irstd.metrics.pixel import DatasetIoU, NormalizedIoU, PixelAccuracy, valid_region

__all__ = ["DatasetIoU", "NormalizedIoU", "PixelAccuracy", "valid_region"]
