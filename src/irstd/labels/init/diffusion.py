"""Diffusion pseudo-masks from single point labels, after Diffuse-to-Detect (Yao et al., ICML 2026).

Each point is a unit of heat released at t = 0 in a window around it. The heat is carried as the authors'
particles are (`utils/diffusion_annotation.py` of yuanhang-yao/diffuse-to-detect): it diffuses with a
conductance D0 exp(-beta (alpha |grad I| + (1 - alpha) H / 8)) that edges (|grad I|) and texture (H, the local
5 x 5 histogram entropy in bits) hold back, and it drifts up the intensity gradient, towards the target. We
integrate the particles' Fokker-Planck equation deterministically instead of sampling 260 walkers, and
threshold the heat, normalised to its peak, with Otsu's rule, as the authors do before their CRF.

All targets of all images are diffused together: their windows are gathered into one T x d x d tensor and every
time step is a few whole-tensor operations.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from irstd.labels.init.windows import (
    LEVELS,
    check_positive,
    find_point_targets,
    gather_windows,
    paint_masks,
    rescale,
)
from irstd.ops.regions import check_image_points, valid_region


def diffusion_pseudo_masks(
    image: Tensor,
    points: Tensor,
    valid_hw: Tensor,
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
) -> Tensor:
    """Grow every point label into a mask by edge-stopped heat diffusion.

    Args:
        image: B x 1 x H x W float, any intensity units: each window is rescaled to [0, 1] (its minimum to 0,
            its maximum to 1), so the result does not change under I -> a I + b with a > 0.
        points: B x 1 x H x W point labels; a target is an 8-connected component of `points > 0.5` (one pixel
            usually, or two points on one pixel), its heat source the floor of its centroid.
        valid_hw: B x 2 integers, each image's valid (height, width) from the top-left; the rest is padding,
            neither read nor written, and points there are ignored.
        window: side of the odd square window around each point; heat never leaves it. 31 is the authors'
            box for a 10-81 px target (centroid +- 11 px) with their 4 px margin.
        steps, dt: the authors' particle schedule, 40 steps of 0.2: the heat diffuses for a time steps * dt.
            Each step is split into as many explicit sub-steps as keep the scheme stable and the heat >= 0.
        diffusivity: D0, the conductance on flat ground (a particle's variance grows by 2 D0 per unit time).
        edge_stop: beta, how strongly edges and texture lower the conductance.
        gradient_weight: alpha, the share of the edge term; 1 - alpha goes to the local entropy.
        drift: speed of the heat's drift up the intensity gradient (the authors' particles drift by grad I dt).
        entropy_footprint: side of the square over which the local entropy is computed.
        threshold: None for Otsu's threshold of each window's heat (256 bins, as the authors'); a number in
            (0, 1) keeps the pixels whose heat exceeds that fraction of the window's peak.

    Returns:
        B x 1 x H x W of image's dtype and device: 1 on the union of the targets' masks and on every point pixel
        inside the valid region, 0 elsewhere and on the padding.

    Per target, on the window's valid pixels, with I rescaled to [0, 1] and H the entropy of the 8-bit levels
    of I in the pixel's footprint (footprint pixels outside the window do not count):

    - conductance between 4-neighbours p, q: c = D0 exp(-beta (alpha |I_q - I_p| + (1 - alpha) (H_p + H_q) / 16)),
      the gradient taken across the link as in Perona and Malik's scheme;
    - drift from p to q: v = drift (I_q - I_p), moved upwind;
    - u_p += tau sum_q [c (u_q - u_p) + max(-v, 0) u_q - max(v, 0) u_p], tau = dt / ceil(4 dt (D0 + drift)),
      from u = 1 at the source and 0 elsewhere; no heat crosses the window's or the valid region's border;
    - the mask: pixels whose heat, as a fraction of the window's peak and floored to 256 levels, exceeds
      Otsu's threshold of those levels (or exceeds `threshold`).

    A window with one intensity (flat or saturated ground) conducts everywhere: its mask is the disc that the
    heat reaches, clipped to the window.

    Relation to the authors' code: their window is the target's box from its true mask (a size prior we do not
    have) plus 4 px; we use a fixed window. We leave out their CLAHE contrast step, the SLIC superpixel fused
    with the heat (weight 1 - rho = 0.16), extra sources at bright peaks in that superpixel, the centre prior of
    one-pixel targets and the dense CRF after Otsu. Their gradient is per pixel (central differences, /255
    units); ours is per link, in window-range units.
    """
    check_image_points(image, points, valid_hw)
    if window < 3 or window % 2 == 0:
        raise ValueError(f"window must be an odd size >= 3 to have a centre pixel, got {window}")
    if entropy_footprint < 1 or entropy_footprint % 2 == 0:
        raise ValueError(f"entropy_footprint must be a positive odd size, got {entropy_footprint}")
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    check_positive(dt=dt, diffusivity=diffusivity)
    if edge_stop < 0 or drift < 0:
        raise ValueError(f"edge_stop and drift must be >= 0, got {edge_stop}, {drift}")
    if not 0 <= gradient_weight <= 1:
        raise ValueError(f"gradient_weight must lie in [0, 1], got {gradient_weight}")
    if threshold is not None and not 0 < threshold < 1:
        raise ValueError(f"threshold must lie in (0, 1) or be None for Otsu's, got {threshold}")

    valid_hw = valid_hw.to(device=image.device, dtype=torch.int64)
    valid = valid_region(image.shape, valid_hw, image.device)
    image_index, centre = find_point_targets(points, valid)
    if image_index.numel() == 0:
        return torch.zeros_like(image, memory_format=torch.contiguous_format)
    values, inside, flat_index = gather_windows(image, image_index, centre, valid_hw, window)
    heat = diffuse(values, inside, steps=steps, dt=dt, diffusivity=diffusivity, edge_stop=edge_stop,
                   gradient_weight=gradient_weight, drift=drift, entropy_footprint=entropy_footprint)
    masks = otsu_mask(heat, inside) if threshold is None else (heat > threshold) & inside
    return paint_masks(image, masks, flat_index, (points > 0.5) & valid)


def diffuse(values: Tensor, inside: Tensor, *, steps: int, dt: float, diffusivity: float, edge_stop: float,
            gradient_weight: float, drift: float, entropy_footprint: int) -> Tensor:
    """Heat of each T x d x d window after the diffusion, divided by its peak (0 outside `inside`)."""
    num_windows, side, _ = values.shape
    intensity, levels = rescale(values, inside)
    entropy = local_entropy(levels, inside, entropy_footprint)
    complexity_weight = (1 - gradient_weight) / 2 / math.log2(LEVELS)
    substeps = max(1, math.ceil(4 * dt * (diffusivity + drift)))
    tau = dt / substeps

    def link_rates(dim: int) -> tuple[Tensor, Tensor]:
        """tau times the rates at which heat moves forward (from index i to i + 1 along `dim`) and backward."""
        first = [slice(None)] * 3
        second = [slice(None)] * 3
        first[dim], second[dim] = slice(None, -1), slice(1, None)
        first, second = tuple(first), tuple(second)
        rise = intensity[second] - intensity[first]
        complexity = gradient_weight * rise.abs() + complexity_weight * (entropy[first] + entropy[second])
        conductance = diffusivity * torch.exp(-edge_stop * complexity)
        both_inside = inside[first] & inside[second]
        forward = torch.where(both_inside, tau * (conductance + drift * rise.clamp(min=0)), 0)
        backward = torch.where(both_inside, tau * (conductance + drift * (-rise).clamp(min=0)), 0)
        return forward, backward

    down, up = link_rates(1)
    right, left = link_rates(2)
    heat = torch.zeros_like(intensity)
    heat[:, side // 2, side // 2] = 1
    for _ in range(steps * substeps):
        vertical = down * heat[:, :-1] - up * heat[:, 1:]  # net flow from row i to row i + 1
        horizontal = right * heat[:, :, :-1] - left * heat[:, :, 1:]
        heat[:, :-1] -= vertical
        heat[:, 1:] += vertical
        heat[:, :, :-1] -= horizontal
        heat[:, :, 1:] += horizontal
    peak = heat.flatten(1).amax(dim=1).view(num_windows, 1, 1)
    return heat / peak


def local_entropy(levels: Tensor, inside: Tensor, footprint: int) -> Tensor:
    """Shannon entropy in bits of the levels in each pixel's footprint x footprint neighbourhood, counting only
    pixels inside the window (T x d x d; 0 outside)."""
    num_windows, side, _ = levels.shape
    slots = footprint * footprint

    def neighbourhoods(x: Tensor) -> Tensor:  # T x d^2 x slots; slices, as unfold (im2col) is slow on the CPU
        padded = F.pad(x, (footprint // 2,) * 4)
        return torch.stack([padded[:, i: i + side, j: j + side] for i in range(footprint) for j in range(footprint)],
                           dim=-1).view(num_windows, side * side, slots)

    counted = neighbourhoods(inside.to(levels.dtype)) > 0
    # Pixels that do not count get values above every level, each its own: they sort last, in runs of one.
    outsider = LEVELS + torch.arange(slots, device=levels.device, dtype=levels.dtype)
    ordered = torch.where(counted, neighbourhoods(levels), outsider).sort(dim=-1).values
    # Each sorted value's run of equal values, from the run's first and last slots.
    slot = torch.arange(slots, device=levels.device)
    change = ordered[..., 1:] != ordered[..., :-1]
    edge = torch.ones_like(change[..., :1])
    first = torch.where(torch.cat([edge, change], dim=-1), slot, 0).cummax(dim=-1).values
    last = torch.where(torch.cat([change, edge], dim=-1), slot, slots - 1).flip(-1).cummin(dim=-1).values.flip(-1)
    total = counted.sum(dim=-1, keepdim=True).clamp(min=1).to(levels.dtype)
    share = (last - first + 1).to(levels.dtype) / total
    # A level seen m times among n contributes -(m / n) log2(m / n): -(1 / n) log2(m / n) per occurrence.
    entropy = torch.where(ordered < LEVELS, -torch.log2(share) / total, 0).sum(dim=-1)
    return entropy.view(num_windows, side, side) * inside


def otsu_mask(heat: Tensor, inside: Tensor) -> Tensor:
    """Pixels whose heat, floored to 256 levels, lies above Otsu's threshold of its window's valid levels."""
    num_windows = heat.shape[0]
    levels = torch.floor(heat * (LEVELS - 1)).clamp(0, LEVELS - 1).to(torch.int64)
    histogram = torch.zeros(num_windows, LEVELS, dtype=torch.float64, device=heat.device)
    histogram.scatter_add_(1, levels.flatten(1), inside.flatten(1).to(torch.float64))
    level = torch.arange(LEVELS, dtype=torch.float64, device=heat.device)
    below = histogram.cumsum(dim=1)
    below_sum = (histogram * level).cumsum(dim=1)
    count, total = below[:, -1:], below_sum[:, -1:]
    above = count - below
    # w0 w1 (mu0 - mu1)^2 up to the constant count^2; a split leaving one class empty is no split.
    between = (below_sum * count - total * below) ** 2 / (below * above)
    between = torch.where((below > 0) & (above > 0), between, -1)
    cut = between.argmax(dim=1).view(num_windows, 1, 1)
    return (levels > cut) & inside
