"""Geometric transforms applied identically to an image and its label (torch, C x H x W)."""

from __future__ import annotations

import torch
from scipy import ndimage

from irstd.ops.components import EIGHT_CONNECTED
from irstd.ops.padding import pad_bottom_right


def random_crop(image: torch.Tensor, label: torch.Tensor, size: int,
                generator: torch.Generator | None = None,
                positive: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """A random `size` x `size` window; images smaller than that are zero-padded first.

    With probability `positive` (and a label that has a target) the window is drawn among those that hold one
    target of the label, chosen uniformly among its 8-connected components, whole when it fits: small and
    border targets are then seen as often as the others, and no crop is all background. With `positive` 0 no
    extra number is drawn, so the uniform crops of a seed are the same as without the option.
    """
    height, width = image.shape[-2:]
    if height < size or width < size:
        image = pad_bottom_right(image, max(height, size), max(width, size))
        label = pad_bottom_right(label, max(height, size), max(width, size))
        height, width = image.shape[-2:]
    target = None
    if positive > 0 and float(torch.rand((), generator=generator)) < positive:
        target = _random_target_box(label, generator)
    if target is None:
        top = int(torch.randint(0, height - size + 1, (1,), generator=generator))
        left = int(torch.randint(0, width - size + 1, (1,), generator=generator))
    else:
        (row_start, row_stop), (col_start, col_stop) = target
        top = _window_start_covering(row_start, row_stop, height, size, generator)
        left = _window_start_covering(col_start, col_stop, width, size, generator)
    window = (..., slice(top, top + size), slice(left, left + size))
    return image[window], label[window]


def _random_target_box(label: torch.Tensor, generator: torch.Generator | None,
                       ) -> tuple[tuple[int, int], tuple[int, int]] | None:
    """The row and column extents (stop exclusive) of one target of `label` (> 0.5), uniformly; None if none."""
    foreground = (label > 0.5).reshape(label.shape[-2:]).numpy()
    components, count = ndimage.label(foreground, structure=EIGHT_CONNECTED)
    if count == 0:
        return None
    rows, cols = ndimage.find_objects(components)[int(torch.randint(0, count, (1,), generator=generator))]
    return (rows.start, rows.stop), (cols.start, cols.stop)


def _window_start_covering(start: int, stop: int, length: int, size: int,
                           generator: torch.Generator | None) -> int:
    """A window start, uniform among those whose `size` window holds [start, stop) (or its first pixel if too long)."""
    if stop - start > size:
        stop = start + 1
    lowest, highest = max(0, stop - size), min(start, length - size)
    return int(torch.randint(lowest, highest + 1, (1,), generator=generator))


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
