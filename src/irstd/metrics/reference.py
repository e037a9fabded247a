"""Plain per-component Pd/Fa, written from the field's evaluation rules, one image at a time."""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def regions(mask: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """(area, centroid) of each 8-connected component, in label (raster) order."""
    labels, count = ndimage.label(mask, structure=np.ones((3, 3)))
    out = []
    for label in range(1, count + 1):
        coords = np.argwhere(labels == label)
        out.append((len(coords), coords.mean(axis=0)))
    return out


def reference_pd_fa(preds: list[np.ndarray], truths: list[np.ndarray], fa_rule: str = "component"):
    """Returns (targets, found, false_pixels, total_pixels) over a list of boolean images."""
    targets = found = false_pixels = total_pixels = 0
    for pred, truth in zip(preds, truths, strict=True):
        predicted = regions(pred)
        gt = regions(truth)
        targets += len(gt)
        remaining = list(range(len(predicted)))
        matched = []
        for _, gt_centroid in gt:
            for position, index in enumerate(remaining):
                if np.linalg.norm(predicted[index][1] - gt_centroid) < 3:
                    matched.append(index)
                    del remaining[position]
                    break
        found += len(matched)
        if fa_rule == "component":
            false_pixels += sum(predicted[i][0] for i in remaining)
        else:  # the reference compares areas by value
            matched_areas = [predicted[i][0] for i in matched]
            false_pixels += sum(area for area, _ in predicted if area not in matched_areas)
        total_pixels += pred.size
    return targets, found, false_pixels, total_pixels
