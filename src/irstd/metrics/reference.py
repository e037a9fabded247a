"""Plain per-component Pd/Fa, one image and one component at a time, as the field's evaluation code
computes them: the executable specification that the vectorised metrics are tested and timed against."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from irstd.ops.components import EIGHT_CONNECTED


def regions(mask: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """(area, centroid) of each 8-connected component, in label (raster) order."""
    labels, count = ndimage.label(mask, structure=EIGHT_CONNECTED)
    out = []
    for label, window in enumerate(ndimage.find_objects(labels), start=1):
        coords = np.argwhere(labels[window] == label) + [s.start for s in window]
        out.append((len(coords), coords.mean(axis=0)))
    return out


def reference_pd_fa(preds: Sequence[np.ndarray], truths: Sequence[np.ndarray], fa_rule: str = "component",
                    max_distance: float = 3.0) -> tuple[int, int, int, int]:
    """(targets, found, false-alarm pixels, total pixels) over boolean images of any sizes."""
    targets = found = false_pixels = total_pixels = 0
    for pred, truth in zip(preds, truths, strict=True):
        predicted = regions(pred)
        gt = regions(truth)
        targets += len(gt)
        remaining = list(range(len(predicted)))
        matched = []
        for _, gt_centroid in gt:
            for position, index in enumerate(remaining):
                if np.linalg.norm(predicted[index][1] - gt_centroid) < max_distance:
                    matched.append(index)
                    del remaining[position]
                    break
        found += len(matched)
        if fa_rule == "component":
            false_pixels += sum(predicted[i][0] for i in remaining)
        else:  # the reference code compares areas by value
            matched_areas = [predicted[i][0] for i in matched]
            false_pixels += sum(area for area, _ in predicted if area not in matched_areas)
        total_pixels += pred.size
    return targets, found, false_pixels, total_pixels
