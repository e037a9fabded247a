"""Evaluation metrics as torchmetrics classes (tensor states, reduced across DDP ranks)."""

from torchmetrics import MetricCollection

from irstd.metrics.detection import FA_RULES, DetectionROC, TargetDetection, match_targets
from irstd.metrics.pixel import DatasetIoU, NormalizedIoU, PixelAccuracy, valid_region


def metric_suite(threshold: float = 0.5, prefix: str = "", fa_rule: str = "component") -> MetricCollection:
    """IoU, nIoU, pixel accuracy, Pd/Fa at one threshold: what training validates and evaluation reports.

    Keys: iou, niou, pixacc, pd, fa, targets, found, false_targets (with `prefix`).
    """
    return MetricCollection({"iou": DatasetIoU(threshold), "niou": NormalizedIoU(threshold),
                             "pixacc": PixelAccuracy(threshold),
                             "detection": TargetDetection(threshold, fa_rule=fa_rule)}, prefix=prefix)


__all__ = ["FA_RULES", "DatasetIoU", "DetectionROC", "NormalizedIoU", "PixelAccuracy", "TargetDetection",
           "match_targets", "metric_suite", "valid_region"]
