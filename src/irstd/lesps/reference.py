"""Plain sequential LESPS label evolution (Sec. 4, Eqs. 1-4): one image, one target at a time, full-image masks.

The executable specification of `irstd.lesps.evolve_labels`, written straight from its rules without
batching: the batched version is tested and timed against it. Pure numpy + SciPy.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from irstd.ops.components import EIGHT_CONNECTED


def evolve_labels_reference(
    pred: np.ndarray,
    label: np.ndarray,
    valid_hw: np.ndarray,
    *,
    Tb: float = 0.5,
    k: float = 0.5,
    r: float = 0.0015,
    window: int = 33,
    seed_box: int = 3,
    strict_false_alarm: bool = False,
) -> np.ndarray:
    """Same contract as `evolve_labels`, on B x 1 x H x W numpy arrays."""
    out = label.copy()
    for b in range(label.shape[0]):
        h, w = (int(v) for v in valid_hw[b])
        out[b, 0, :h, :w] = _evolve_image(
            pred[b, 0, :h, :w], label[b, 0, :h, :w], Tb, k, r, window, seed_box, strict_false_alarm
        )
    return out


def _evolve_image(pred, label, Tb, k, r, window, seed_box, strict_false_alarm):
    h, w = label.shape
    row, col = np.indices((h, w))
    targets, num_targets = ndimage.label(label > 0.5, structure=EIGHT_CONNECTED)
    current = label.copy()
    for target in range(1, num_targets + 1):
        coords = np.argwhere(targets == target)
        n = len(coords)
        centre_row, centre_col = (int(v) for v in coords.mean(axis=0))
        in_window = (np.abs(row - centre_row) <= window // 2) & (np.abs(col - centre_col) <= window // 2)
        in_box = (np.abs(row - centre_row) <= seed_box // 2) & (np.abs(col - centre_col) <= seed_box // 2)

        threshold = pred[in_window].max() * pred.dtype.type(Tb + k * (1 - Tb) * n / (h * w * r))  # Eq. 2
        candidates = in_window & (pred > threshold)  # Eq. 1

        parts, num_parts = ndimage.label(candidates, structure=EIGHT_CONNECTED)  # Eq. 3
        if strict_false_alarm or num_parts > 1:
            for part in range(1, num_parts + 1):
                if not (in_box & (parts == part)).any():
                    candidates &= parts != part

        current = np.where(candidates, (current + pred) / 2, current)  # Eq. 4, on the label as updated so far
    current[label == 1] = 1
    return current
