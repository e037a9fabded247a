"""What the point-grown initialisers share: finding the point targets, cropping one window around each, painting
the windows' masks back into a padded batch.

A target is an 8-connected component of `points > 0.5` inside its image's valid region; its window is centred at
the floor of the component's centroid, the convention of `irstd.lesps.evolve_labels`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from irstd.ops.components import find_components

# Levels of an 8-bit image: the authors of both methods work on 8-bit crops.
LEVELS = 256


def check_positive(**values: float) -> None:
    for name, value in values.items():
        if not value > 0:
            raise ValueError(f"{name} must be > 0, got {value}")



def find_point_targets(points: Tensor, valid: Tensor) -> tuple[Tensor, Tensor]:
    """Image index (T) and window centre (T x 2, row and col) of each target, image by image in raster order of
    the components' first pixels."""
    targets = find_components((points > 0.5) & valid)
    # Exact in float64 (integer sums, one correctly rounded division), so the floor is the centroid pixel's.
    return targets.image_index.to(points.device), torch.floor(targets.centroid).to(torch.int64).to(points.device)


def gather_windows(image: Tensor, image_index: Tensor, centre: Tensor, valid_hw: Tensor,
                   side: int) -> tuple[Tensor, Tensor, Tensor]:
    """The side x side window centred on each target: its pixel values (T x d x d), which of them lie in the
    image's valid region (T x d x d bool) and their flat indices into the B x 1 x H x W batch (T x d x d)."""
    _, _, height, width = image.shape
    offsets = torch.arange(side, device=image.device) - side // 2
    rows = centre[:, :1] + offsets
    cols = centre[:, 1:] + offsets
    target_hw = valid_hw[image_index]
    rows_inside = (rows >= 0) & (rows < target_hw[:, :1])
    cols_inside = (cols >= 0) & (cols < target_hw[:, 1:])
    inside = rows_inside[:, :, None] & cols_inside[:, None, :]
    # Clamping keeps the gather in bounds; clamped pixels lie outside `inside` and are never used.
    rows, cols = rows.clamp(0, height - 1), cols.clamp(0, width - 1)
    flat_index = (image_index[:, None, None] * height + rows[:, :, None]) * width + cols[:, None, :]
    values = image.reshape(-1)[flat_index]
    return values, inside, flat_index


def paint_masks(image: Tensor, masks: Tensor, flat_index: Tensor, point_pixels: Tensor) -> Tensor:
    """Union of the windows' masks (T x d x d bool, within their valid pixels) and the point pixels, as a 0/1
    tensor of image's shape, dtype and device."""
    out = torch.zeros_like(image, memory_format=torch.contiguous_format)
    out.view(-1)[flat_index[masks]] = 1
    out[point_pixels] = 1
    return out


def rescale(values: Tensor, inside: Tensor) -> tuple[Tensor, Tensor]:
    """Each window's valid values mapped to [0, 1] by its minimum and maximum, and to integer levels 0..255
    (floored, as an 8-bit conversion floors); 0 outside `inside` and for a window of a single value."""
    low = values.masked_fill(~inside, math.inf).flatten(1).amin(dim=1).view(-1, 1, 1)
    high = values.masked_fill(~inside, -math.inf).flatten(1).amax(dim=1).view(-1, 1, 1)
    flat = high == low
    shifted = torch.where(inside, values - low, 0)
    spread = torch.where(flat, 1, high - low)
    intensity = torch.where(flat, 0, shifted / spread)
    # Multiplying before dividing keeps integer data exact, so the levels do not flip under I -> a I + b.
    levels = torch.where(flat, 0, torch.floor(shifted * (LEVELS - 1) / spread)).clamp(0, LEVELS - 1)
    return intensity, levels
