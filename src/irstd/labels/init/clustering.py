"""Monte Carlo linear clustering pseudo-masks from single point labels, after MCLC (Li et al., ICCV 2023).

The "linear clustering" is SLIC (simple linear iterative clustering: k-means on intensity and position from a
regular grid of centres). Around each point the authors' code (`final_size_Prior_code/Baseline_NUAA.py` of
YeRen123455/SIRST-Single-Point-Supervision) clusters a window into 9 superpixels, keeps the one holding the
point, and repeats this 50 times on copies of the window with 5 % salt noise; the pixels kept in most trials form
the mask. With no size prior (theirs comes from the true mask), each trial here also draws its window's size.

All trials of all targets are clustered together: N = targets x trials windows in one tensor, each k-means
iteration a loop over the 9 centres. The randomness is a hash of (seed, the point's pixel, trial, offset), so a
target's mask does not depend on the batch it comes in, nor on the device.
"""

from __future__ import annotations

import torch
from torch import Tensor

from irstd.labels.init.windows import (
    check_positive,
    find_point_targets,
    gather_windows,
    paint_masks,
    rescale,
)
from irstd.ops.components import connected_components
from irstd.ops.regions import check_image_points, valid_region

_LOW_32 = 0xFFFFFFFF
# What each random draw is for, the first key after the seed.
EXTENT_DRAW, SALT_DRAW = 0, 1


def monte_carlo_clustering_masks(
    image: Tensor,
    points: Tensor,
    valid_hw: Tensor,
    *,
    trials: int = 50,
    half_extent: tuple[int, int] = (10, 11),
    segments_per_side: int = 3,
    compactness: float = 0.5,
    salt: float = 0.05,
    iterations: int = 10,
    threshold: float = 0.5,
    seed: int = 0,
) -> Tensor:
    """Grow every point label into the region that SLIC puts it in, in most of many noisy, randomly sized windows.

    Args:
        image: B x 1 x H x W float, any intensity units: each trial's window is rescaled to [0, 1] (its minimum
            to 0, its maximum to 1), so the result does not change under I -> a I + b with a > 0.
        points: B x 1 x H x W point labels; a target is an 8-connected component of `points > 0.5` (one pixel
            usually, or two points on one pixel), its window centred at the floor of its centroid.
        valid_hw: B x 2 integers, each image's valid (height, width) from the top-left; the rest is padding,
            neither read nor written, and points there are ignored.
        trials: Monte Carlo trials per point (the authors' 50).
        half_extent: (low, high): each trial's window reaches from the point up, down, left and right by four
            independent whole numbers of pixels drawn uniformly in [low, high]; (10, 11) is the authors' draw for
            targets of 10-81 px, 78 % of SIRST's (they draw once per target, from its true size).
        segments_per_side: SLIC starts from a segments_per_side^2 grid of centres (the authors' 9 segments).
        compactness: weight of position against intensity: SLIC's distance is (dI / compactness)^2 + (dxy / S)^2,
            S the grid step, I in [0, 1]. The authors use 20 on the absolute 0-100 lightness scale; the median
            SIRST window spans 39 lightness units, so 20 there is about 0.5 of a window's range here.
        salt: share of each trial's window set to the maximum intensity (the authors' salt noise, 0.05).
        iterations: k-means iterations per trial (scikit-image's default for SLIC, 10).
        threshold: a pixel is target when it is kept in more than this share of the trials (0.5: the two-class
            argmax that ends the authors' CRF).
        seed: the random draws are a function of seed, the point's pixel, the trial and the pixel's offset.

    Returns:
        B x 1 x H x W of image's dtype and device: 1 on the union of the targets' masks and on every point pixel
        inside the valid region, 0 elsewhere and on the padding.

    Per target and trial, on the trial window's valid pixels:

    - intensities are rescaled to [0, 1], then each pixel becomes 1 with probability `salt`;
    - centres start on the window's grid, at rows top + floor((i + 1/2) h / g) (likewise columns), with their
      pixel's intensity; each iteration assigns every pixel to its nearest centre (first one on ties) and moves
      every centre that has pixels to their mean intensity and position;
    - the trial keeps the 8-connected part of the point's final segment that holds the point.

    A window with one intensity (flat or saturated ground) is clustered by position and salt alone: the mask is
    the grid cell around the point, roughly, bounded by the window.

    Relation to the authors' code: SLIC there runs on the RGB crop converted to CIELAB, merges segments smaller
    than half a cell into neighbours and limits each centre's search to 2 S; a dense CRF (1 iteration) turns
    the vote into the mask. We cluster the gray level, keep connected parts without merging, search the whole
    window (at 9 segments 2 S spans nearly all of it) and threshold the vote.
    """
    check_image_points(image, points, valid_hw)
    low_half, high_half = half_extent
    if not 0 <= low_half <= high_half:
        raise ValueError(f"half_extent must be (low, high) with 0 <= low <= high, got {half_extent}")
    for name, count in (("trials", trials), ("segments_per_side", segments_per_side), ("iterations", iterations)):
        if count < 1:
            raise ValueError(f"{name} must be >= 1, got {count}")
    check_positive(compactness=compactness)
    if not 0 <= salt < 1:
        raise ValueError(f"salt must lie in [0, 1), got {salt}")
    if not 0 <= threshold < 1:
        raise ValueError(f"threshold must lie in [0, 1), got {threshold}")

    valid_hw = valid_hw.to(device=image.device, dtype=torch.int64)
    valid = valid_region(image.shape, valid_hw, image.device)
    image_index, centre = find_point_targets(points, valid)
    if image_index.numel() == 0:
        return torch.zeros_like(image, memory_format=torch.contiguous_format)
    side = 2 * high_half + 1
    values, inside, flat_index = gather_windows(image, image_index, centre, valid_hw, side)
    kept = cluster_trials(values, inside, centre, trials=trials, half_extent=half_extent,
                          segments_per_side=segments_per_side, compactness=compactness, salt=salt,
                          iterations=iterations, seed=seed)
    votes = kept.sum(dim=1, dtype=torch.float64)
    masks = (votes / trials > threshold) & inside
    return paint_masks(image, masks, flat_index, (points > 0.5) & valid)


def uniform_draws(seed: int, *keys: Tensor | int) -> Tensor:
    """Uniform numbers in [0, 1) (float64), one per element of the broadcast keys: a 32-bit integer hash
    (xor-shift-multiply, multipliers below 2^31 so that int64 products never overflow) chained over the keys."""
    state = torch.as_tensor(seed & _LOW_32, dtype=torch.int64)
    for key in keys:
        # A plain number joins the state's device; a tensor brings the state to its own.
        key = torch.as_tensor(key, dtype=torch.int64, device=key.device if isinstance(key, Tensor) else state.device)
        state = _hash32(state.to(key.device) ^ (key & _LOW_32))
    return state.to(torch.float64) / 2.0**32


def _hash32(x: Tensor) -> Tensor:
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & _LOW_32
    x = x ^ (x >> 15)
    x = (x * 0x5BD1E995) & _LOW_32
    return x ^ (x >> 16)


def cluster_trials(values: Tensor, inside: Tensor, centre: Tensor, *, trials: int, half_extent: tuple[int, int],
                   segments_per_side: int, compactness: float, salt: float, iterations: int, seed: int) -> Tensor:
    """T x trials x d x d, True where a trial keeps the pixel in the point's segment."""
    num_targets, side, _ = values.shape
    device, dtype = values.device, values.dtype
    low_half, high_half = half_extent
    offsets = torch.arange(side, device=device) - high_half
    trial = torch.arange(trials, device=device)
    row, col = centre[:, 0].view(-1, 1, 1), centre[:, 1].view(-1, 1, 1)

    # Reaches up, down, left, right: T x trials x 4.
    direction = torch.arange(4, device=device)
    reach = low_half + torch.floor(uniform_draws(seed, EXTENT_DRAW, row, col, trial.view(1, -1, 1), direction)
                                   * (high_half - low_half + 1)).to(torch.int64)
    rows_in = (offsets >= -reach[..., 0:1]) & (offsets <= reach[..., 1:2])  # T x trials x d
    cols_in = (offsets >= -reach[..., 2:3]) & (offsets <= reach[..., 3:4])
    window = rows_in[..., :, None] & cols_in[..., None, :] & inside[:, None]  # T x trials x d x d
    window = window.flatten(0, 1)  # N = T * trials windows, target-major
    windows = window.shape[0]

    intensity, _ = rescale(values.repeat_interleave(trials, dim=0), window)
    salted = uniform_draws(seed, SALT_DRAW, row[..., None], col[..., None], trial.view(1, -1, 1, 1),
                           offsets.view(1, 1, -1, 1), offsets.view(1, 1, 1, -1)) < salt
    intensity = torch.where(salted.flatten(0, 1) & window, 1, intensity)

    # The window is a rectangle (a trial's reach clipped to the valid region): its first row and col, its size.
    rows_any, cols_any = window.any(dim=2), window.any(dim=1)
    top = torch.where(rows_any, torch.arange(side, device=device), side).amin(dim=1)
    left = torch.where(cols_any, torch.arange(side, device=device), side).amin(dim=1)
    height, width = rows_any.sum(dim=1), cols_any.sum(dim=1)
    grid = torch.arange(segments_per_side, device=device)
    # floor((i + 1/2) h / g) in integers: (2 i + 1) h // (2 g).
    centre_rows = top[:, None] + (2 * grid + 1) * height[:, None] // (2 * segments_per_side)  # N x g
    centre_cols = left[:, None] + (2 * grid + 1) * width[:, None] // (2 * segments_per_side)
    centre_rows = centre_rows[:, :, None].expand(-1, -1, segments_per_side).flatten(1)  # N x g^2, row-major grid
    centre_cols = centre_cols[:, None, :].expand(-1, segments_per_side, -1).flatten(1)
    centre_intensity = intensity[torch.arange(windows, device=device)[:, None], centre_rows, centre_cols]
    # Positions are offsets from the point, so the sequential reference computes in the same numbers.
    centre_y = offsets[centre_rows].to(dtype)
    centre_x = offsets[centre_cols].to(dtype)
    step_squared = (height * width).to(dtype) / segments_per_side**2

    position = offsets.to(dtype)
    # SLIC's distance scaled by compactness^2: (dI)^2 + (dy^2 + dx^2) compactness^2 / S^2, the same argmin with the
    # scaling on the small row and column terms rather than on every pixel.
    spatial_weight = (compactness**2 / step_squared).view(-1, 1, 1)
    for _ in range(iterations):
        nearest = torch.full_like(intensity, torch.inf)
        label = torch.zeros(intensity.shape, dtype=torch.int64, device=device)
        for k in range(segments_per_side**2):
            rows_term = (position.view(1, -1, 1) - centre_y[:, k, None, None]) ** 2 * spatial_weight
            cols_term = (position.view(1, 1, -1) - centre_x[:, k, None, None]) ** 2 * spatial_weight
            distance = intensity - centre_intensity[:, k, None, None]
            distance.mul_(distance).add_(rows_term).add_(cols_term)
            closer = distance < nearest  # strict: ties stay with the first centre
            torch.minimum(nearest, distance, out=nearest)
            label.masked_fill_(closer, k)
        centre_intensity, centre_y, centre_x = _segment_means(label, window, intensity, position,
                                                              (centre_intensity, centre_y, centre_x))

    middle = high_half
    segment = (label == label[:, middle, middle].view(-1, 1, 1)) & window
    parts = connected_components(segment)
    kept = parts == parts[:, middle, middle].view(-1, 1, 1)
    return kept.view(num_targets, trials, side, side)


def _segment_means(label: Tensor, window: Tensor, intensity: Tensor, position: Tensor,
                   previous: tuple[Tensor, Tensor, Tensor]) -> tuple[Tensor, ...]:
    """Each segment's mean intensity, row and col offset over its window pixels (N x segments each); a segment
    left without pixels keeps its previous centre."""
    windows, segments = previous[0].shape
    side = label.shape[-1]
    # Pixels outside their window all go to one extra slot, which is dropped: no boolean indexing.
    slot = torch.where(window, torch.arange(windows, device=label.device).view(-1, 1, 1) * segments + label,
                       windows * segments)
    columns = (torch.ones_like(intensity), intensity, position.view(1, -1, 1).expand(windows, side, side),
               position.view(1, 1, -1).expand(windows, side, side))
    totals = torch.zeros(windows * segments + 1, len(columns), dtype=intensity.dtype, device=label.device)
    totals.index_add_(0, slot.flatten(), torch.stack(columns, dim=-1).view(-1, len(columns)))
    members, sums = totals[:-1, :1], totals[:-1, 1:]
    means = torch.where(members > 0, sums / members.clamp(min=1), torch.stack(previous, dim=-1).view(-1, 3))
    return tuple(means.view(windows, segments, 3).unbind(dim=-1))
