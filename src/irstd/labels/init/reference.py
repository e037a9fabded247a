"""Plain sequential versions of the point-grown initialisers: one image, one target (and one trial) at a time,
each window cropped by slicing, written straight from the rules.

The executable specifications of `diffusion_pseudo_masks` and `monte_carlo_clustering_masks`: the batched
versions are tested and timed against them. numpy + SciPy; the clustering reference takes its random draws from
`uniform_draws`, so both see the same noise.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage

from irstd.labels.init.clustering import EXTENT_DRAW, SALT_DRAW, uniform_draws
from irstd.ops.components import EIGHT_CONNECTED

LEVELS = 256


def diffusion_pseudo_masks_reference(
    image: np.ndarray,
    points: np.ndarray,
    valid_hw: np.ndarray,
    *,
    window: int = 31,
    steps: int = 40,
    dt: float = 0.2,
    diffusivity: float = 3.2,
    edge_stop: float = 6.0,
    gradient_weight: float = 0.6,
    drift: float = 1.0,
    entropy_footprint: int = 5,
    threshold: float | None = None,
) -> np.ndarray:
    """Same contract as `diffusion_pseudo_masks`, on B x 1 x H x W numpy arrays."""
    out = np.zeros_like(image)
    substeps = max(1, int(np.ceil(4 * dt * (diffusivity + drift))))
    tau = dt / substeps
    half = window // 2
    for b, (row, col, crop, (top, left)) in _point_windows(image, points, valid_hw, half):
        intensity, levels = _rescale(crop)
        entropy = _local_entropy(levels, entropy_footprint)

        def rates(rise: np.ndarray, entropy_a: np.ndarray, entropy_b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            """tau times the rates of flow along each link, forward (towards a's neighbour b) and backward."""
            texture = (1 - gradient_weight) * (entropy_a + entropy_b) / 2 / np.log2(LEVELS)
            conductance = diffusivity * np.exp(-edge_stop * (gradient_weight * np.abs(rise) + texture))
            return tau * (conductance + drift * np.maximum(rise, 0)), tau * (conductance + drift * np.maximum(-rise, 0))

        down, up = rates(intensity[1:] - intensity[:-1], entropy[:-1], entropy[1:])
        right, left_rate = rates(intensity[:, 1:] - intensity[:, :-1], entropy[:, :-1], entropy[:, 1:])
        heat = np.zeros_like(intensity)
        heat[row - top, col - left] = 1
        for _ in range(steps * substeps):
            vertical = down * heat[:-1] - up * heat[1:]
            horizontal = right * heat[:, :-1] - left_rate * heat[:, 1:]
            heat[:-1] -= vertical
            heat[1:] += vertical
            heat[:, :-1] -= horizontal
            heat[:, 1:] += horizontal
        heat = heat / heat.max()
        mask = _otsu_mask(heat) if threshold is None else heat > threshold
        out[b, 0, top: top + crop.shape[0], left: left + crop.shape[1]][mask] = 1
    _paint_points(out, points, valid_hw)
    return out


def monte_carlo_clustering_masks_reference(
    image: np.ndarray,
    points: np.ndarray,
    valid_hw: np.ndarray,
    *,
    trials: int = 50,
    half_extent: tuple[int, int] = (10, 11),
    segments_per_side: int = 3,
    compactness: float = 0.5,
    salt: float = 0.05,
    iterations: int = 10,
    threshold: float = 0.5,
    seed: int = 0,
) -> np.ndarray:
    """Same contract as `monte_carlo_clustering_masks`, on B x 1 x H x W numpy arrays."""
    out = np.zeros_like(image)
    low, high = half_extent
    for b, (row, col, _, _) in _point_windows(image, points, valid_hw, 0):
        height, width = (int(v) for v in valid_hw[b])
        votes = np.zeros((height, width))
        for trial in range(trials):
            draws = uniform_draws(seed, EXTENT_DRAW, row, col, trial, torch.arange(4)).numpy()
            up, down, left_reach, right_reach = (low + np.floor(draws * (high - low + 1))).astype(int)
            top, bottom = max(row - up, 0), min(row + down, height - 1)
            left, right = max(col - left_reach, 0), min(col + right_reach, width - 1)
            intensity, _ = _rescale(image[b, 0, top: bottom + 1, left: right + 1])
            dy = np.arange(top, bottom + 1) - row
            dx = np.arange(left, right + 1) - col
            salted = uniform_draws(seed, SALT_DRAW, row, col, trial, torch.as_tensor(dy)[:, None],
                                   torch.as_tensor(dx)[None, :]).numpy() < salt
            intensity[salted] = 1
            label = _slic(intensity, dy, dx, segments_per_side, compactness, iterations)
            segment = label == label[row - top, col - left]
            parts, _ = ndimage.label(segment, structure=EIGHT_CONNECTED)
            votes[top: bottom + 1, left: right + 1] += parts == parts[row - top, col - left]
        out[b, 0, :height, :width][votes / trials > threshold] = 1
    _paint_points(out, points, valid_hw)
    return out


def _point_windows(image: np.ndarray, points: np.ndarray, valid_hw: np.ndarray, reach: int):
    """Per target, image by image in raster order of first pixels: (b, (row, col, crop, (top, left))), the crop
    reaching `reach` pixels each way from the floor of the target's centroid, clipped to the valid region."""
    for b in range(image.shape[0]):
        height, width = (int(v) for v in valid_hw[b])
        targets, count = ndimage.label(points[b, 0, :height, :width] > 0.5, structure=EIGHT_CONNECTED)
        for target in range(1, count + 1):
            rows, cols = np.nonzero(targets == target)
            row, col = int(np.floor(rows.mean())), int(np.floor(cols.mean()))
            top, left = max(row - reach, 0), max(col - reach, 0)
            crop = image[b, 0, top: min(row + reach + 1, height), left: min(col + reach + 1, width)]
            yield b, (row, col, crop, (top, left))


def _paint_points(out: np.ndarray, points: np.ndarray, valid_hw: np.ndarray) -> None:
    for b in range(out.shape[0]):
        height, width = (int(v) for v in valid_hw[b])
        out[b, 0, :height, :width][points[b, 0, :height, :width] > 0.5] = 1


def _rescale(crop: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    low, high = crop.min(), crop.max()
    if high == low:
        return np.zeros_like(crop), np.zeros_like(crop)
    shifted = crop - low
    return shifted / (high - low), np.clip(np.floor(shifted * (LEVELS - 1) / (high - low)), 0, LEVELS - 1)


def _local_entropy(levels: np.ndarray, footprint: int) -> np.ndarray:
    """Entropy in bits of the levels in each pixel's footprint, clipped to the crop."""
    half = footprint // 2
    entropy = np.zeros_like(levels)
    for i in range(levels.shape[0]):
        for j in range(levels.shape[1]):
            neighbourhood = levels[max(i - half, 0): i + half + 1, max(j - half, 0): j + half + 1]
            _, counts = np.unique(neighbourhood, return_counts=True)
            share = counts / neighbourhood.size
            entropy[i, j] = -(share * np.log2(share)).sum()
    return entropy


def _otsu_mask(heat: np.ndarray) -> np.ndarray:
    """Levels of the heat above Otsu's threshold: the first cut maximising w0 w1 (mu0 - mu1)^2."""
    levels = np.clip(np.floor(heat * (LEVELS - 1)), 0, LEVELS - 1)
    best, cut = -1.0, 0
    for level in range(LEVELS):
        below, above = levels[levels <= level], levels[levels > level]
        if below.size == 0 or above.size == 0:
            continue
        between = below.size * above.size * (below.mean() - above.mean()) ** 2
        if between > best:
            best, cut = between, level
    return levels > cut


def _slic(intensity: np.ndarray, dy: np.ndarray, dx: np.ndarray, per_side: int, compactness: float,
          iterations: int) -> np.ndarray:
    """k-means on (intensity, row, col) from a per_side x per_side grid; the last assignment's labels."""
    height, width = intensity.shape
    grid_rows = [(2 * i + 1) * height // (2 * per_side) for i in range(per_side)]
    grid_cols = [(2 * j + 1) * width // (2 * per_side) for j in range(per_side)]
    centres = [[intensity[r, c], float(dy[r]), float(dx[c])] for r in grid_rows for c in grid_cols]
    step_squared = height * width / per_side**2
    spatial_weight = compactness**2 / step_squared
    y, x = dy[:, None].astype(intensity.dtype), dx[None, :].astype(intensity.dtype)
    for _ in range(iterations):
        # SLIC's distance times compactness^2, summed in the batched version's order, so that ties stay ties.
        distances = np.stack([(intensity - ci) ** 2 + (y - cy) ** 2 * spatial_weight + (x - cx) ** 2 * spatial_weight
                              for ci, cy, cx in centres])
        label = distances.argmin(axis=0)
        for k in range(len(centres)):
            members = label == k
            if members.any():
                centres[k] = [intensity[members].mean(), np.broadcast_to(y, label.shape)[members].mean(),
                              np.broadcast_to(x, label.shape)[members].mean()]
    return label
