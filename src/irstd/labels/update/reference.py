"""Plain sequential PAL rules: one image, one target at a time, with SciPy's filters and labellers.

The executable specification of `irstd.labels.update.pal` (`easy_set_labels`, which also gives `easy_targets`'
flags, and `pal_update`), written straight from the rules without batching: the batched versions are tested
and timed against it. Pure numpy + SciPy, on B x 1 x H x W arrays.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from irstd.ops.components import EIGHT_CONNECTED

GAUSSIAN_3X3 = np.outer([1, 2, 1], [1, 2, 1]) / 16
SOBEL_X = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], dtype=float)
TAN_22_5, TAN_67_5 = 13573 / 32768, (13573 + 65536) / 32768


def easy_set_reference(
    image: np.ndarray,
    points: np.ndarray,
    valid_hw: np.ndarray,
    *,
    half_window: int = 10,
    low_threshold: float = 20.0,
    high_threshold: float = 40.0,
    max_area: float = 50.0,
    min_easy_fraction: float = 0.8,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(target_easy, image_easy, labels) with the contracts of `easy_targets` and `easy_set_labels`."""
    target_easy, image_easy = [], []
    labels = np.zeros(image.shape, dtype=image.dtype)
    for b in range(image.shape[0]):
        h, w = (int(v) for v in valid_hw[b])
        on_point = points[b, 0, :h, :w] > 0.5
        labels[b, 0, :h, :w] = on_point
        targets, num_targets = ndimage.label(on_point, structure=EIGHT_CONNECTED)
        regions = []
        for target in range(1, num_targets + 1):
            row, col = (int(v) for v in np.argwhere(targets == target).mean(axis=0))
            top, left = max(row - half_window, 0), max(col - half_window, 0)
            bottom, right = min(row + half_window, h), min(col + half_window, w)
            region = _enclosing_region(image[b, 0, top:bottom, left:right].astype(np.float64), row - top,
                                       col - left, low_threshold, high_threshold)
            easy = region is not None and _polygon_area(region) <= max_area
            target_easy.append(easy)
            if easy:
                regions.append((top, left, region))
        is_easy = num_targets == 0 or sum(target_easy[-num_targets:]) / num_targets >= min_easy_fraction
        image_easy.append(is_easy)
        if is_easy:
            for top, left, region in regions:
                labels[b, 0, top: top + region.shape[0], left: left + region.shape[1]][region] = 1
    return np.array(target_easy, dtype=bool), np.array(image_easy, dtype=bool), labels


def _enclosing_region(window: np.ndarray, row: int, col: int, low: float, high: float) -> np.ndarray | None:
    """The filled outer contour of the closed-edge component enclosing (row, col), or None."""
    blurred = np.floor(ndimage.correlate(window, GAUSSIAN_3X3, mode="mirror") + 0.5)
    high_pass = np.maximum(window - blurred, 0)
    dx = ndimage.correlate(high_pass, SOBEL_X, mode="nearest")
    dy = ndimage.correlate(high_pass, SOBEL_X.T, mode="nearest")
    magnitude = np.abs(dx) + np.abs(dy)

    framed = np.pad(magnitude, 1)
    candidate = np.zeros(window.shape, dtype=bool)
    for i in range(window.shape[0]):
        for j in range(window.shape[1]):
            m = magnitude[i, j]
            if m <= low:
                continue
            ax, ay = abs(dx[i, j]), abs(dy[i, j])
            around = framed[i: i + 3, j: j + 3]  # around[1, 1] is the pixel itself
            if ay < ax * TAN_22_5:
                candidate[i, j] = m > around[1, 0] and m >= around[1, 2]
            elif ay > ax * TAN_67_5:
                candidate[i, j] = m > around[0, 1] and m >= around[2, 1]
            elif (dx[i, j] < 0) != (dy[i, j] < 0):
                candidate[i, j] = m > around[0, 2] and m > around[2, 0]
            else:
                candidate[i, j] = m > around[0, 0] and m > around[2, 2]
    chains, _ = ndimage.label(candidate, structure=EIGHT_CONNECTED)
    edges = np.isin(chains, chains[candidate & (magnitude > high)]) & candidate

    dilated = ndimage.binary_dilation(edges, EIGHT_CONNECTED, border_value=0)
    closed = ndimage.binary_erosion(dilated, EIGHT_CONNECTED, border_value=1)
    filled = ndimage.binary_fill_holes(closed)  # holes: 4-connected background not reaching the border
    parts, _ = ndimage.label(filled, structure=EIGHT_CONNECTED)
    if parts[row, col] == 0:
        return None
    return parts == parts[row, col]


def _polygon_area(region: np.ndarray) -> float:
    area = 0.0
    for i in range(region.shape[0] - 1):
        for j in range(region.shape[1] - 1):
            inside = int(region[i: i + 2, j: j + 2].sum())
            area += 1.0 if inside == 4 else 0.5 if inside == 3 else 0.0
    return area


def pal_update_reference(
    pred: np.ndarray,
    label: np.ndarray,
    valid_hw: np.ndarray,
    *,
    Tb: float = 0.5,
    k: float = 0.5,
    r: float = 0.0015,
    window: int = 33,
    seed_box: int = 3,
    decay: float = 0.97,
) -> np.ndarray:
    """Same contract as `pal_update`, on B x 1 x H x W numpy arrays."""
    out = label.copy()
    for b in range(label.shape[0]):
        h, w = (int(v) for v in valid_hw[b])
        out[b, 0, :h, :w] = _update_image(pred[b, 0, :h, :w], label[b, 0, :h, :w], Tb, k, r, window, seed_box,
                                          decay)
    return out


def _update_image(pred, label, Tb, k, r, window, seed_box, decay):
    h, w = label.shape
    row, col = np.indices((h, w))
    targets, num_targets = ndimage.label(label > 0.5, structure=EIGHT_CONNECTED)
    kept = np.zeros((h, w), dtype=bool)
    for target in range(1, num_targets + 1):
        coords = np.argwhere(targets == target)
        centre_row, centre_col = (int(v) for v in coords.mean(axis=0))
        in_window = (np.abs(row - centre_row) <= window // 2) & (np.abs(col - centre_col) <= window // 2)
        in_box = (np.abs(row - centre_row) <= seed_box // 2) & (np.abs(col - centre_col) <= seed_box // 2)
        threshold = pred[in_window].max() * pred.dtype.type(Tb + k * (1 - Tb) * len(coords) / (h * w * r))
        candidates = in_window & (pred > threshold)
        parts, num_parts = ndimage.label(candidates, structure=EIGHT_CONNECTED)
        for part in range(1, num_parts + 1):
            if (in_box & (parts == part)).any():
                kept |= parts == part
    updated = np.where(kept, (label + pred) / 2, label * label.dtype.type(decay))
    return np.where(label == 1, label, updated)
