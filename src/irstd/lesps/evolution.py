"""Batched label evolution of LESPS (Ying et al., CVPR 2023, Sec. 4, Eqs. 1-4).

All targets of all images are handled at once: the d x d windows around the
targets are gathered into one T x d x d tensor, thresholds are per-window
reductions, the candidate components of all windows come from one batched
connected-components call, and the updates of overlapping windows are combined
in closed form from how many targets keep each pixel.
"""

from __future__ import annotations

import torch
from torch import Tensor

from irstd.ops.components import connected_components, find_components
from irstd.ops.regions import check_pred_label


def evolve_labels(
    pred: Tensor,
    label: Tensor,
    valid_hw: Tensor,
    *,
    Tb: float = 0.5,
    k: float = 0.5,
    r: float = 0.0015,
    window: int = 33,
    seed_box: int = 3,
    strict_false_alarm: bool = False,
) -> Tensor:
    """One round of LESPS label evolution (Sec. 4, Eqs. 1-4) for a padded batch.

    Args:
        pred: B x 1 x H x W network probabilities in [0, 1].
        label: B x 1 x H x W current labels, same dtype and device as `pred`.
        valid_hw: B x 2 integers, each image's (height, width) from the top-left corner. The rest is padding:
            it is neither read nor written.
        Tb, k, r: the minimum threshold, its growth rate and the target-area ratio of Eq. 2.
        window: side d of the (odd) square neighbourhood cropped around each target.
        seed_box: side of the (odd) square at the window centre that a candidate component must touch.
        strict_false_alarm: drop components that miss the seed box even when a window holds only one.

    Returns:
        The evolved labels, a new tensor with the dtype and device of `label`.

    Per image (valid region only) and per target, a target being an 8-connected
    component of `label > 0.5` found before any update, with n pixels:

    - the window is the d x d square centred at the floor of the target's
      centroid, clipped to the valid region;
    - Eq. 2: T_adapt = max(pred in window) * (Tb + k (1 - Tb) n / (h w r)), with
      h, w the image's valid size;
    - Eq. 1: candidates are window pixels with pred strictly above T_adapt;
    - Eq. 3: an 8-connected candidate component (within the window) that misses
      the seed_box x seed_box square at the window centre is a false alarm and
      dropped, but only when the window holds several candidate components,
      unless `strict_false_alarm`;
    - Eq. 4: on the kept candidates, label <- (label + pred) / 2.

    Targets are applied as a sequential pass would apply them, each reading the
    label left by the previous ones; a pixel kept by m targets thus ends at
    label / 2^m + pred (1 - 1 / 2^m), whatever the order. Pixels kept by no
    target are unchanged, and pixels whose label is exactly 1 stay 1.

    Relation to the reference code (XinyiYing/LESPS, `Net.update_gt`):

    - False alarms: like here, the reference tests only when the window holds
      more than one candidate component, but it keeps a component if it
      overlaps any pixel with label > 0.5 in the window (the positive pixels of
      Eq. 3, of any target), not the seed box. For an isolated point label,
      which is the centre of its box, the reference is stricter: it also drops
      components touching the box but not the point. Once labels have grown
      beyond the box, or other targets' positive pixels lie in the window, it is
      more lenient: it keeps components touching those far positive pixels.
    - Combination: the reference computes every target's update from the
      original label and merges them, and the old label, with a pixel-wise max.
      That differs from the closed form above where windows' kept candidates
      overlap (it applies one averaging, not m) and wherever pred < label on a
      kept candidate (the max keeps the old, higher label; here it decreases).
    - Window: the reference centres at int(centroid), equal to the floor used
      here, and uses the full image size (no padding) for h, w.
    """
    check_pred_label(pred, label, valid_hw, window, seed_box)
    pred, label = pred.detach(), label.detach()
    batch, _, height, width = label.shape
    device = label.device
    valid_hw = valid_hw.to(device=device, dtype=torch.int64)
    valid_rows = torch.arange(height, device=device).view(1, 1, height, 1) < valid_hw[:, 0].view(batch, 1, 1, 1)
    valid_cols = torch.arange(width, device=device).view(1, 1, 1, width) < valid_hw[:, 1].view(batch, 1, 1, 1)

    image, centre, size = _find_targets((label > 0.5) & valid_rows & valid_cols)
    if image.numel() == 0:
        return label.clone()

    target_hw = valid_hw[image]
    offsets = torch.arange(window, device=device) - window // 2
    rows = centre[:, :1] + offsets  # T x d
    cols = centre[:, 1:] + offsets
    rows_inside = (rows >= 0) & (rows < target_hw[:, :1])
    cols_inside = (cols >= 0) & (cols < target_hw[:, 1:])
    in_window = rows_inside[:, :, None] & cols_inside[:, None, :]  # T x d x d, the window clipped to the valid region
    # Clamping keeps the gather in bounds; the clamped pixels lie outside `in_window` and are masked out below.
    row_index, col_index = rows.clamp(0, height - 1), cols.clamp(0, width - 1)
    pred_window = pred[image[:, None, None], 0, row_index[:, :, None], col_index[:, None, :]]

    peak = pred_window.masked_fill(~in_window, float("-inf")).amax(dim=(1, 2))
    area = (target_hw[:, 0] * target_hw[:, 1]).to(torch.float64)
    # Eq. 2, the factor in float64 whatever pred's dtype, as the reference's Python floats are.
    threshold = peak * (Tb + k * (1 - Tb) * size.to(torch.float64) / (area * r)).to(pred.dtype)
    candidates = (pred_window > threshold[:, None, None]) & in_window  # Eq. 1

    kept = _kept_candidates(candidates, seed_box, strict_false_alarm)  # Eq. 3
    target, row_in_window, col_in_window = kept // (window * window), kept // window % window, kept % window
    pixel = (image[target] * height + rows[target, row_in_window]) * width + cols[target, col_in_window]
    # Only the kept pixels change, so the update works on them alone rather than on the whole batch.
    pixel, times_kept = torch.unique(pixel, return_counts=True)
    old_label = label.reshape(-1)[pixel]
    # Eq. 4 applied times_kept times: the old label's weight halves with each application.
    old_weight = torch.exp2(-times_kept.to(label.dtype))
    new_label = old_label * old_weight + pred.reshape(-1)[pixel] * (1 - old_weight)
    evolved = label.clone(memory_format=torch.contiguous_format)
    evolved.view(-1)[pixel] = torch.where(old_label == 1, old_label, new_label)
    return evolved




def _find_targets(positive: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Image index, floor of the centroid (row, col) and pixel count of each 8-connected component of `positive`."""
    targets = find_components(positive)
    # The centroid sums are exact integers in float64, and an exact division is correctly rounded, so this
    # floor equals the reference's int() of the float centroid.
    centre = torch.floor(targets.centroid).to(torch.int64)
    return targets.image_index, centre, targets.area


def _kept_candidates(candidates: Tensor, seed_box: int, strict: bool) -> Tensor:
    """Flat indices into the T x d x d `candidates` of the pixels that survive false alarm elimination (Eq. 3)."""
    num_windows, side, _ = candidates.shape
    component = connected_components(candidates[:, None]).flatten()
    pixel = component.nonzero().squeeze(1)
    ids, component_of_pixel = torch.unique(component[pixel], return_inverse=True)
    num_components = ids.numel()

    near_centre = (torch.arange(side, device=pixel.device) - side // 2).abs() <= seed_box // 2
    in_box = (near_centre[:, None] & near_centre[None, :]).flatten()[pixel % (side * side)]
    keep = torch.zeros(num_components, dtype=torch.bool, device=pixel.device)
    keep[component_of_pixel[in_box]] = True
    if not strict:
        window_of_component = torch.zeros_like(ids).scatter_(0, component_of_pixel, pixel // (side * side))
        components_in_window = torch.bincount(window_of_component, minlength=num_windows)
        keep |= components_in_window[window_of_component] == 1
    return pixel[keep[component_of_pixel]]
