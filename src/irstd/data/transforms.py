"""Geometric transforms applied identically to an image and its label (torch, C x H x W)."""

from __future__ import annotations

import torch

from irstd.ops.padding import pad_bottom_right


def random_crop(image: torch.Tensor, label: torch.Tensor, size: int,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """A random `size` x `size` window; images smaller than that are zero-padded first."""
    height, width = image.shape[-2:]
    if height < size or width < size:
        image = pad_bottom_right(image, max(height, size), max(width, size))
        label = pad_bottom_right(label, max(height, size), max(width, size))
        height, width = image.shape[-2:]
    top = int(torch.randint(0, height - size + 1, (1,), generator=generator))
    left = int(torch.randint(0, width - size + 1, (1,), generator=generator))
    window = (..., slice(top, top + size), slice(left, left + size))
    return image[window], label[window]


def random_dihedral(image: torch.Tensor, label: torch.Tensor,
                    generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One of the 8 flips/90-degree rotations, uniformly (the reference's flips + transpose)."""
    quarter_turns, flip = (int(v) for v in torch.randint(0, 4, (2,), generator=generator))
    if quarter_turns:
        image = torch.rot90(image, quarter_turns, dims=(-2, -1))
        label = torch.rot90(label, quarter_turns, dims=(-2, -1))
    if flip % 2:
        image = torch.flip(image, dims=(-1,))
        label = torch.flip(label, dims=(-1,))
    return image, label
