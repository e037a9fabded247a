"""Tiled inference for frames too large for one forward pass: overlapping tiles, feathered blending.

Tiles overlap by `overlap` pixels; each tile's prediction is weighted by a ramp that
falls towards the tile's inner borders (never towards the frame's own border), ignoring
the outermost quarter of the overlap, and the weighted sum is normalised. A target on a
tile border is therefore seen whole by a neighbouring tile and blended without a seam.
Memory is bounded by the tile size.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from irstd.ops.padding import pad_bottom_right, padded_size


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets covering [0, length) with tiles of `tile` pixels overlapping by at least `overlap`."""
    if length <= tile:
        return [0]
    stride = tile - overlap
    starts = list(range(0, length - tile, stride))
    return starts + [length - tile]


def _ramp(length: int, overlap: int, fade_start: bool, fade_end: bool, device, dtype) -> torch.Tensor:
    """Tile weights along one axis: 0 on the outer quarter of an inner overlap (where zero padding
    distorts the prediction), rising linearly to 1 across the rest of it."""
    weight = torch.ones(length, device=device, dtype=dtype)
    if overlap > 0:
        margin = overlap // 4
        rise = ((torch.arange(overlap, device=device, dtype=dtype) - margin + 1) / (overlap - margin + 1)).clamp(min=0)
        if fade_start:
            weight[:overlap] = rise
        if fade_end:
            weight[-overlap:] = torch.minimum(weight[-overlap:], rise.flip(0))
    return weight


@torch.no_grad()
def predict_tiled(predict: Callable[[torch.Tensor], torch.Tensor], image: torch.Tensor, tile: int = 512,
                  overlap: int = 64, multiple: int = 32) -> torch.Tensor:
    """Probabilities for a B x 1 x H x W batch, computed tile by tile.

    `predict` maps a B x 1 x h x w batch (h, w multiples of `multiple`) to probabilities of
    the same size. Frames no larger than one tile go through in one pass.
    """
    if tile % multiple or tile <= 0:
        raise ValueError(f"tile size {tile} must be a positive multiple of {multiple}")
    if not 0 <= overlap < tile:
        raise ValueError(f"tile overlap {overlap} must lie in [0, {tile})")
    batch, _, height, width = image.shape
    if height <= tile and width <= tile:
        padded = pad_bottom_right(image, padded_size(height, multiple), padded_size(width, multiple))
        return predict(padded)[..., :height, :width]
    # frames smaller than a tile along one side are padded up to it so every tile has the same shape
    full = pad_bottom_right(image, max(height, tile), max(width, tile))
    out_height, out_width = full.shape[-2:]
    total = torch.zeros(batch, 1, out_height, out_width, device=image.device, dtype=image.dtype)
    weights = torch.zeros(1, 1, out_height, out_width, device=image.device, dtype=image.dtype)
    rows, cols = tile_starts(out_height, tile, overlap), tile_starts(out_width, tile, overlap)
    for top in rows:
        row_weight = _ramp(tile, overlap, top > 0, top + tile < out_height, image.device, image.dtype)
        for left in cols:
            col_weight = _ramp(tile, overlap, left > 0, left + tile < out_width, image.device, image.dtype)
            weight = row_weight[:, None] * col_weight[None, :]
            window = (..., slice(top, top + tile), slice(left, left + tile))
            total[window] += predict(full[window]) * weight
            weights[window] += weight
    return (total / weights)[..., :height, :width]
