"""Target-level metrics: probability of detection (Pd) and false-alarm rate (Fa), and ROC curves.

Pd/Fa follow the field's standard evaluation code: 8-connected components of
prediction and ground truth; ground-truth targets in label order, each matched
to the first not-yet-matched predicted component whose centroid lies at a
Euclidean distance strictly below 3 px from its own; Pd = matched targets /
targets; Fa = pixels of unmatched predicted components / all pixels.
The greedy matching runs as one vectorised step per target *rank*, over all
images of a batch at once, so its cost grows with the most targets in one
image, not with the number of targets.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torchmetrics import Metric

from irstd.metrics.pixel import valid_region
from irstd.ops.components import Components, find_components

FA_RULES = ("component", "area_value")


@dataclass
class Matching:
    """Per-image counts of one batch."""

    targets: torch.Tensor
    found: torch.Tensor
    false_pixels: torch.Tensor
    false_targets: torch.Tensor


def _padded(components: Components, values: torch.Tensor, fill: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Scatter per-component values into B x max_count (+ trailing dims) with a validity mask."""
    batch = components.counts.numel()
    width = int(components.counts.max()) if batch else 0
    slot = torch.arange(components.total, device=values.device) - components.offsets[components.image_index]
    out = torch.full((batch, width, *values.shape[1:]), fill, dtype=values.dtype, device=values.device)
    out[components.image_index, slot] = values
    valid = torch.zeros(batch, width, dtype=torch.bool, device=values.device)
    valid[components.image_index, slot] = True
    return out, valid


def match_targets(pred: torch.Tensor, truth: torch.Tensor, max_distance: float = 3.0,
                  fa_rule: str = "component") -> Matching:
    """Match predicted components to ground-truth targets per image (boolean B x [1 x] H x W masks).

    `fa_rule="component"` counts the pixels of every unmatched predicted component as false alarms.
    `fa_rule="area_value"` reproduces a quirk of the reference code, which drops from the false alarms
    every component whose *area* equals that of a matched component in the same image.
    """
    if fa_rule not in FA_RULES:
        raise ValueError(f"fa_rule must be one of {FA_RULES}, got {fa_rule!r}")
    predicted, targets = find_components(pred), find_components(truth)
    batch = targets.counts.numel()
    target_xy, target_valid = _padded(targets, targets.centroid, 0.0)
    pred_xy, pred_valid = _padded(predicted, predicted.centroid, 0.0)
    pred_area, _ = _padded(predicted, predicted.area, 0)

    used = torch.zeros_like(pred_valid)
    found = torch.zeros(batch, dtype=torch.long, device=pred.device)
    if pred_xy.shape[1] and target_xy.shape[1]:
        close = torch.cdist(target_xy, pred_xy) < max_distance
        close &= target_valid.unsqueeze(2) & pred_valid.unsqueeze(1)
        images = torch.arange(batch, device=pred.device)
        for rank in range(target_xy.shape[1]):
            candidates = close[:, rank] & ~used
            hit = candidates.any(dim=1)
            first = candidates.to(torch.uint8).argmax(dim=1)  # index of the first candidate
            used[images[hit], first[hit]] = True
            found += hit.long()

    unmatched = pred_valid & ~used
    if fa_rule == "area_value":
        shares_matched_area = ((pred_area.unsqueeze(2) == pred_area.unsqueeze(1)) & used.unsqueeze(1)).any(dim=2)
        unmatched &= ~shares_matched_area
    return Matching(targets=targets.counts, found=found, false_pixels=(pred_area * unmatched).sum(dim=1),
                    false_targets=unmatched.sum(dim=1))


class TargetDetection(Metric):
    """Pd and Fa at one threshold over a dataset; `compute()` returns a dict:
    pd, fa, targets, found, false_targets (unmatched predicted components, a target-level count)."""

    full_state_update = False

    def __init__(self, threshold: float = 0.5, max_distance: float = 3.0, fa_rule: str = "component", **kwargs):
        super().__init__(**kwargs)
        if fa_rule not in FA_RULES:
            raise ValueError(f"fa_rule must be one of {FA_RULES}, got {fa_rule!r}")
        self.threshold, self.max_distance, self.fa_rule = threshold, max_distance, fa_rule
        for name in ("targets", "found", "false_pixels", "false_targets", "pixels"):
            self.add_state(name, torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, probs: torch.Tensor, target: torch.Tensor, valid_hw: torch.Tensor | None = None) -> None:
        valid = valid_region(probs.shape, valid_hw, probs.device)
        matching = match_targets((probs > self.threshold) & valid, (target > 0) & valid, self.max_distance,
                                 self.fa_rule)
        self.targets += matching.targets.sum()
        self.found += matching.found.sum()
        self.false_pixels += matching.false_pixels.sum()
        self.false_targets += matching.false_targets.sum()
        self.pixels += valid.sum()

    def compute(self) -> dict[str, torch.Tensor]:
        return {
            "pd": self.found.double() / self.targets.clamp(min=1).double(),
            "fa": self.false_pixels.double() / self.pixels.clamp(min=1).double(),
            "targets": self.targets.clone(),
            "found": self.found.clone(),
            "false_targets": self.false_targets.clone(),
        }


class DetectionROC(Metric):
    """ROC curves over a threshold sweep: pixel TPR vs FPR (with its area) and Pd vs Fa.

    Pixel counts come from fixed-bin histograms of the probabilities of target and
    background pixels, so `bins` thresholds cost one pass; Pd/Fa needs a component
    analysis per threshold and uses the shorter `detection_thresholds` list.
    """

    full_state_update = False

    def __init__(self, bins: int = 1000, detection_thresholds: tuple[float, ...] | list[float] = (
            0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95), max_distance: float = 3.0, **kwargs):
        super().__init__(**kwargs)
        self.bins = bins
        self.detection_thresholds = [float(t) for t in detection_thresholds]
        self.max_distance = max_distance
        self.add_state("positive_hist", torch.zeros(bins, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("negative_hist", torch.zeros(bins, dtype=torch.long), dist_reduce_fx="sum")
        count = len(self.detection_thresholds)
        self.add_state("found", torch.zeros(count, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("false_pixels", torch.zeros(count, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("targets", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("pixels", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, probs: torch.Tensor, target: torch.Tensor, valid_hw: torch.Tensor | None = None) -> None:
        valid = valid_region(probs.shape, valid_hw, probs.device)
        truth = (target > 0) & valid
        # bin i holds probabilities in [i/bins, (i+1)/bins); "> t" for t = i/bins counts bins above i
        index = (probs.clamp(0, 1) * self.bins).long().clamp(max=self.bins - 1)
        self.positive_hist += torch.bincount(index[truth], minlength=self.bins)
        self.negative_hist += torch.bincount(index[valid & ~truth], minlength=self.bins)
        self.pixels += valid.sum()
        for i, threshold in enumerate(self.detection_thresholds):
            matching = match_targets((probs > threshold) & valid, truth, self.max_distance)
            self.found[i] += matching.found.sum()
            self.false_pixels[i] += matching.false_pixels.sum()
            if i == 0:
                self.targets += matching.targets.sum()

    def compute(self) -> dict[str, torch.Tensor]:
        # predicted positive at threshold i/bins: every bin >= i (approximates "> t" to one bin width)
        tp = torch.flip(torch.cumsum(torch.flip(self.positive_hist, [0]), 0), [0]).double()
        fp = torch.flip(torch.cumsum(torch.flip(self.negative_hist, [0]), 0), [0]).double()
        tpr = torch.cat([tp / self.positive_hist.sum().clamp(min=1), tp.new_zeros(1)])
        fpr = torch.cat([fp / self.negative_hist.sum().clamp(min=1), fp.new_zeros(1)])
        auc = torch.trapezoid(torch.flip(tpr, [0]), torch.flip(fpr, [0]))
        return {
            "pixel_thresholds": torch.cat([torch.arange(self.bins, dtype=torch.float64) / self.bins,
                                           torch.ones(1, dtype=torch.float64)]),
            "tpr": tpr, "fpr": fpr, "auc": auc,
            "detection_thresholds": torch.tensor(self.detection_thresholds, dtype=torch.float64),
            "pd": self.found.double() / self.targets.clamp(min=1).double(),
            "fa": self.false_pixels.double() / self.pixels.clamp(min=1).double(),
        }
