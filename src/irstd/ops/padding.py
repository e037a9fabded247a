"""Padding at the bottom and right, the field's convention: an image keeps its top-left origin in a padded batch."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def pad_bottom_right(tensor: torch.Tensor, height: int, width: int, value: float = 0.0) -> torch.Tensor:
    """Pad the last two dims at the bottom and right up to `height` x `width`."""
    pad_h = height - tensor.shape[-2]
    pad_w = width - tensor.shape[-1]
    if pad_h < 0 or pad_w < 0:
        raise ValueError(f"cannot pad {tuple(tensor.shape[-2:])} down to {(height, width)}")
    if pad_h == 0 and pad_w == 0:
        return tensor
    return F.pad(tensor, (0, pad_w, 0, pad_h), value=value)


def padded_size(size: int, multiple: int) -> int:
    return -(-size // multiple) * multiple
