"""PAL's progressive label learning (Yu et al., ICCV 2025, "From Easy to Hard: Progressive Active Learning
Framework for Infrared Small Target Detection with Single Point Supervision"), as pure tensor functions.

PAL first trains on the images whose points are easy (each enclosed by a small closed contour of image edges),
then, every few epochs, admits the hard images whose points the model has learnt to find, and updates the labels
of the admitted images with a LESPS-like rule that also decays the label away from every target:

- `easy_targets`, `easy_set_labels`: the easy-set test, once before training, and the labels it gives;
- `admission_scores`, `admitted_labels`, `AdmissionSchedule`: when hard images join, which, with which label;
- `pal_update`: the label update of the admitted images.

Every function handles all targets of all images at once: the windows around the targets are gathered into one
tensor and filtered, labelled and measured together. `irstd.labels.update.reference` holds the same rules
written one target at a time.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from irstd.ops.components import connected_components, find_components
from irstd.ops.regions import check_image_points, check_pred_label, valid_region

# cv2.Canny's direction bins, tan(22.5 deg) and tan(67.5 deg), in its 15-bit fixed point.
_TAN_22_5 = 13573 / 32768
_TAN_67_5 = (13573 + 65536) / 32768
# 4-connectivity inside each image plane and none across planes, for one scipy.ndimage.label call per batch.
_PLANE_WISE_4_CONNECTED = [[[0, 0, 0], [0, 0, 0], [0, 0, 0]], [[0, 1, 0], [1, 1, 1], [0, 1, 0]],
                           [[0, 0, 0], [0, 0, 0], [0, 0, 0]]]


# ---------------------------------------------------------------------------------------------------------------
# Easy set


def easy_targets(
    image: Tensor,
    points: Tensor,
    valid_hw: Tensor,
    *,
    half_window: int = 10,
    low_threshold: float = 20.0,
    high_threshold: float = 40.0,
    max_area: float = 50.0,
    min_easy_fraction: float = 0.8,
) -> tuple[Tensor, Tensor]:
    """PAL's easy-set test: which targets are enclosed by a small closed edge contour, and which images are easy.

    Args:
        image: B x 1 x H x W grey levels in 8-bit units (0-255; the edge thresholds are in these units).
        points: B x 1 x H x W point labels; a target is an 8-connected component of `points > 0.5` in the valid
            region, and its point is the floor of the component's centroid (as in `irstd.lesps.evolve_labels`).
        valid_hw: B x 2 integers, each image's valid (height, width) from the top-left corner.
        half_window: the edge test looks at rows and columns [point - half_window, point + half_window),
            clipped to the valid region.
        low_threshold, high_threshold: Canny's hysteresis thresholds on the gradient magnitude |dx| + |dy|.
        max_area: largest area (of the contour polygon through pixel centres) of an enclosing contour.
        min_easy_fraction: an image is easy when at least this fraction of its targets is.

    Returns:
        (target_easy, image_easy): a bool per target, in the order of `irstd.ops.components.find_components`,
        and a bool per image. An image without targets is easy (PAL trains on it from the start).

    Per target, in its window alone (YuChuang1205/PAL, utilts.py `process_image` and
    `center_point_inside_contour`): high-pass = max(window - round(3 x 3 Gaussian blur of it), 0), with the
    window's border reflected (cv2's BORDER_REFLECT_101); Canny edges of the high-pass (3 x 3 Sobel with
    replicated border, L1 magnitude, cv2's non-maximum suppression and 8-connected hysteresis); a 3 x 3 closing
    of the edges. The point is enclosed when it lies on an edge or in a hole (a 4-connected background region
    that does not reach the window's border) of an 8-connected edge component; the contour is that component's
    outer boundary, and the target is easy when the contour's polygon area is at most `max_area`.
    The polygon area is counted exactly from the filled region: 1 per 2 x 2 pixel block inside it, 1/2 per
    block with three pixels inside (cv2.contourArea of the external contour).
    """
    return _easy_set(image, points, valid_hw, half_window, low_threshold, high_threshold, max_area,
                     min_easy_fraction)[:2]


def easy_set_labels(
    image: Tensor,
    points: Tensor,
    valid_hw: Tensor,
    *,
    half_window: int = 10,
    low_threshold: float = 20.0,
    high_threshold: float = 40.0,
    max_area: float = 50.0,
    min_easy_fraction: float = 0.8,
) -> tuple[Tensor, Tensor]:
    """PAL's round-0 labels: in each easy image, its points and the regions enclosed by its easy targets' contours.

    Same arguments as `easy_targets`. Returns (labels, image_easy): B x 1 x H x W labels in `image`'s dtype, 1 on
    the points of every image and on the enclosed regions of easy images' easy targets, 0 elsewhere (padding
    included); and the per-image easy flags. PAL trains only on easy images until it admits the others, whose
    labels then come from `admitted_labels`.
    """
    target_easy, image_easy, image_index, region, flat_index = _easy_set(
        image, points, valid_hw, half_window, low_threshold, high_threshold, max_area, min_easy_fraction)
    labels = ((points > 0.5) & valid_region(image.shape, valid_hw, image.device)).to(image.dtype)
    chosen = target_easy & image_easy[image_index]
    labels.view(-1)[flat_index[chosen][region[chosen]]] = 1
    return labels, image_easy


def _easy_set(image, points, valid_hw, half_window, low_threshold, high_threshold, max_area, min_easy_fraction):
    """easy_targets' flags, plus each target's image, enclosing region (T x S x S) and its pixels' flat indices."""
    check_image_points(image, points, valid_hw)
    if half_window < 1:
        raise ValueError(f"half_window must be >= 1, got {half_window}")
    if not 0 <= low_threshold <= high_threshold:
        raise ValueError(f"need 0 <= low_threshold <= high_threshold, got {low_threshold}, {high_threshold}")
    if not 0 <= min_easy_fraction <= 1:
        raise ValueError(f"min_easy_fraction must lie in [0, 1], got {min_easy_fraction}")
    batch, _, height, width = image.shape
    device = image.device
    valid_hw = valid_hw.to(device=device, dtype=torch.int64)
    valid = valid_region(image.shape, valid_hw, device)
    targets = find_components((points > 0.5) & valid)
    image_index = targets.image_index.to(device)
    centre = torch.floor(targets.centroid).to(device=device, dtype=torch.int64)
    num_targets, side = image_index.numel(), 2 * half_window
    if num_targets == 0:
        nothing = torch.zeros(0, side, side, dtype=torch.bool, device=device)
        return (nothing[:, 0, 0], torch.ones(batch, dtype=torch.bool, device=device), image_index, nothing,
                nothing.long())

    # The window of PAL's crop, placed at the top-left of a side x side grid; `extent` is its clipped size.
    start = (centre - half_window).clamp(min=0)
    extent = torch.minimum(centre + half_window, valid_hw[image_index]) - start
    grid = torch.arange(side, device=device)
    in_window = ((grid < extent[:, :1])[:, :, None] & (grid < extent[:, 1:])[:, None, :])[:, None]

    framed = torch.arange(-1, side + 1, device=device)  # the grid and a one-pixel frame around it
    rows = start[:, :1] + _reflect_101(framed, extent[:, :1])
    cols = start[:, 1:] + _reflect_101(framed, extent[:, 1:])
    padded = image[image_index[:, None, None], 0, rows[:, :, None], cols[:, None, :]][:, None]
    blur = image.new_tensor([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]]) / 16
    # cv2 rounds the 8-bit blur and saturates the difference at 0: only pixels brighter than around them remain.
    blurred = torch.floor(F.conv2d(padded, blur[None, None]) + 0.5)
    high_pass = (padded[..., 1:-1, 1:-1] - blurred).clamp(min=0)

    edges = _canny(high_pass, in_window, extent, low_threshold, high_threshold)
    closed = _erode(_dilate(edges) & in_window, in_window)
    filled = _fill_holes(closed[:, 0])

    component = connected_components(filled)
    target_rows = torch.arange(num_targets, device=device)
    at_point = component[target_rows, centre[:, 0] - start[:, 0], centre[:, 1] - start[:, 1]]
    region = (component == at_point[:, None, None]) & (at_point > 0)[:, None, None]
    target_easy = (at_point > 0) & (_contour_area(region) <= max_area)

    easy_count = torch.bincount(image_index[target_easy], minlength=batch)
    target_count = torch.bincount(image_index, minlength=batch)
    # A float64 ratio, as PAL's Python division: 4 of 5 points is exactly 0.8.
    image_easy = (target_count == 0) | (easy_count.double() / target_count.clamp(min=1) >= min_easy_fraction)

    # Indices of grid pixels beyond a clipped window are meaningless, and never used: regions stay inside.
    flat_index = (image_index[:, None, None] * height + start[:, :1, None] + grid[:, None]) * width + (
        start[:, 1:, None] + grid)
    return target_easy, image_easy, image_index, region, flat_index


def _reflect_101(steps: Tensor, length: Tensor) -> Tensor:
    """Indices `steps` (P) reflected into [0, length) per row of `length` (T x 1) without repeating the edge."""
    index = steps.abs().expand(length.shape[0], -1)
    index = torch.where(index >= length, 2 * (length - 1) - index, index)
    return torch.minimum(index.clamp(min=0), length - 1)


def _canny(values: Tensor, inside: Tensor, extent: Tensor, low: float, high: float) -> Tensor:
    """cv2.Canny (3 x 3 Sobel, L1 magnitude) of T x 1 x S x S windows whose valid part is `inside`."""
    num, _, side, _ = values.shape
    device = values.device
    framed = torch.arange(-1, side + 1, device=device)
    rows = torch.minimum(framed.clamp(min=0), extent[:, :1] - 1)  # replicated border, as cv2.Canny's Sobel
    cols = torch.minimum(framed.clamp(min=0), extent[:, 1:] - 1)
    padded = values[torch.arange(num, device=device)[:, None, None], 0, rows[:, :, None], cols[:, None, :]][:, None]
    sobel = values.new_tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
    dx = F.conv2d(padded, sobel[None, None])
    dy = F.conv2d(padded, sobel.T[None, None])
    magnitude = (dx.abs() + dy.abs()).masked_fill(~inside, 0)

    framed_magnitude = F.pad(magnitude, (1, 1, 1, 1))  # cv2 compares with 0 beyond the border

    def neighbour(dr: int, dc: int) -> Tensor:
        return framed_magnitude[..., 1 + dr: 1 + dr + side, 1 + dc: 1 + dc + side]

    horizontal = dy.abs() < dx.abs() * _TAN_22_5
    vertical = dy.abs() > dx.abs() * _TAN_67_5
    anti_diagonal = (dx < 0) != (dy < 0)
    along_row = (magnitude > neighbour(0, -1)) & (magnitude >= neighbour(0, 1))
    along_column = (magnitude > neighbour(-1, 0)) & (magnitude >= neighbour(1, 0))
    along_diagonal = (magnitude > neighbour(-1, -1)) & (magnitude > neighbour(1, 1))
    along_anti_diagonal = (magnitude > neighbour(-1, 1)) & (magnitude > neighbour(1, -1))
    maximal = torch.where(horizontal, along_row, torch.where(
        vertical, along_column, torch.where(anti_diagonal, along_anti_diagonal, along_diagonal)))

    candidate = inside & maximal & (magnitude > low)
    return _components_touching(candidate, candidate & (magnitude > high))


def _components_touching(mask: Tensor, seeds: Tensor) -> Tensor:
    """The 8-connected components of `mask` that hold a `seeds` pixel (hysteresis)."""
    component = connected_components(mask)
    hit = torch.zeros(int(component.max()) + 1 if component.numel() else 1, dtype=torch.bool, device=mask.device)
    hit[component[seeds]] = True
    hit[0] = False
    return hit[component]


def _dilate(mask: Tensor) -> Tensor:
    return F.max_pool2d(mask.float(), 3, stride=1, padding=1) > 0


def _erode(mask: Tensor, inside: Tensor) -> Tensor:
    """3 x 3 erosion that ignores pixels outside `inside` (cv2's default border for morphology)."""
    return inside & ~_dilate(inside & ~mask)


def _fill_holes(mask: Tensor) -> Tensor:
    """`mask` (N x H x W) with its holes filled: background pixels 4-connected to nothing beyond the border."""
    background = F.pad(~mask, (1, 1, 1, 1), value=True)  # a frame that is outside
    # SciPy labels 4-connected pixels directly, 5x faster on the CPU than the node grid of the other labeller.
    label = _background_components_scipy if background.device.type == "cpu" else _background_components_nodes
    component = label(background)
    outside = component == component[:, :1, :1]
    return ~outside[:, 1:-1, 1:-1]


def _background_components_scipy(background: Tensor) -> Tensor:
    from scipy import ndimage

    labels, _ = ndimage.label(background.numpy(), structure=_PLANE_WISE_4_CONNECTED)  # one call for the batch
    return torch.from_numpy(labels)


def _background_components_nodes(background: Tensor) -> Tensor:
    """4-connected components from the 8-connected labeller (kornia's on CUDA).

    On a grid with a node per pixel and one per pair of 4-adjacent pixels, two nodes touch diagonally only where
    they share a pixel, so 8-connected nodes are 4-connected pixels.
    """
    num, height, width = background.shape
    nodes = torch.zeros(num, 2 * height - 1, 2 * width - 1, dtype=torch.bool, device=background.device)
    nodes[:, ::2, ::2] = background
    nodes[:, ::2, 1::2] = background[:, :, :-1] & background[:, :, 1:]
    nodes[:, 1::2, ::2] = background[:, :-1, :] & background[:, 1:, :]
    return connected_components(nodes)[:, ::2, ::2]


def _contour_area(region: Tensor) -> Tensor:
    """Area of the polygon through the centres of each region's (T x S x S) outer boundary pixels."""
    blocks = F.conv2d(region[:, None].float(), region.new_ones(1, 1, 2, 2, dtype=torch.float32))
    return (blocks == 4).sum(dim=(1, 2, 3)) + 0.5 * (blocks == 3).sum(dim=(1, 2, 3))


# ---------------------------------------------------------------------------------------------------------------
# Admission of hard images


def admission_scores(pred: Tensor, points: Tensor, valid_hw: Tensor, *, threshold: float = 0.5
                     ) -> tuple[Tensor, Tensor]:
    """How well a prediction finds an image's points: (missed_fraction, false_alarm_ratio), float64 per image.

    The predicted regions are the 8-connected components of `pred > threshold` in the valid region, holes filled
    (PAL compares filled external contours). A point (8-connected component of `points > 0.5`) is found when one
    of its pixels lies in a predicted region. missed_fraction = missed points / points; false_alarm_ratio =
    (predicted regions - found points) / points (YuChuang1205/PAL, utilts.py `nc_pred_mask`). Both are 0 for an
    image without points, which PAL admits unconditionally.
    """
    check_image_points(pred, points, valid_hw)
    valid = valid_region(pred.shape, valid_hw, pred.device)[:, 0]
    predicted = _fill_holes((pred[:, 0] > threshold) & valid)
    on_point = (points[:, 0] > 0.5) & valid
    point_targets = find_components(on_point)
    num_points = point_targets.counts.to(pred.device)
    # Both number components in raster order over (image, row, column): label - 1 indexes point_targets.
    found = torch.unique(connected_components(on_point)[predicted & on_point]) - 1
    num_found = torch.bincount(point_targets.image_index.to(pred.device)[found], minlength=pred.shape[0])
    num_regions = find_components(predicted).counts.to(pred.device)
    per_point = num_points.clamp(min=1).double()
    return ((num_points - num_found) / per_point,
            torch.where(num_points > 0, (num_regions - num_found) / per_point, 0.0))


def admitted_labels(pred: Tensor, points: Tensor, valid_hw: Tensor, *, threshold: float = 0.5) -> Tensor:
    """PAL's label for an image it admits: its points and the predicted regions (holes filled) that hold a point.

    Returns B x 1 x H x W labels in `pred`'s dtype, 1 there and 0 elsewhere, padding included
    (YuChuang1205/PAL, utilts.py `nc_correct_pred_mask`).
    """
    check_image_points(pred, points, valid_hw)
    valid = valid_region(pred.shape, valid_hw, pred.device)[:, 0]
    on_point = (points[:, 0] > 0.5) & valid
    predicted = _fill_holes((pred[:, 0] > threshold) & valid)
    labels = _components_touching(predicted, predicted & on_point) | on_point
    return labels[:, None].to(pred.dtype)


class AdmissionSchedule:
    """PAL's training-loop schedule over a training set of `num_images` images, and which images are admitted.

    Epochs are 0-based and name the epoch about to be trained: PAL acts before training epoch `e` of `E`
    (YuChuang1205/PAL, train_model.py):

    - before training, the easy images are admitted (`admit_easy`); until `e > int(E * start)` only they train
      and labels stay fixed;
    - on every epoch with `e > int(E * start)` and `e % every == 0`, the labels of the admitted images are
      updated (`pal_update`) (`updates_labels`);
    - on those epochs up to `e <= int(E * stop)`, after the update, every hard image whose prediction misses at
      most `tolerance(e)` of its points and has at most `max_false_alarm_ratio` spurious regions per point is
      admitted, with `admitted_labels` as its label (`admits`, `admit`). The tolerance grows linearly from
      `initial_tolerance` to just above 1 at `e = E * stop`, so by then every image without too many false
      alarms is in; after `stop` nobody else joins.

    With PAL's E = 400: updates at epochs 85, 90, ..., 395; admissions at 85, 90, ..., 320.
    Its state (each image's admission epoch, -1 while outside; 0 for the easy set) goes into checkpoints.
    """

    def __init__(self, num_images: int, *, start: float = 0.2, stop: float = 0.8, every: int = 5,
                 initial_tolerance: float = 0.2, max_false_alarm_ratio: float = 5.0):
        if num_images < 0:
            raise ValueError(f"num_images must be >= 0, got {num_images}")
        if not 0 <= start < stop <= 1:
            raise ValueError(f"need 0 <= start < stop <= 1 (fractions of training), got start={start}, stop={stop}")
        if every < 1:
            raise ValueError(f"every must be >= 1 epoch, got {every}")
        if not 0 <= initial_tolerance <= 1:
            raise ValueError(f"initial_tolerance must lie in [0, 1], got {initial_tolerance}")
        if max_false_alarm_ratio < 0:
            raise ValueError(f"max_false_alarm_ratio must be >= 0, got {max_false_alarm_ratio}")
        self.start, self.stop, self.every = start, stop, every
        self.initial_tolerance, self.max_false_alarm_ratio = initial_tolerance, max_false_alarm_ratio
        self.admitted_at = torch.full((num_images,), -1, dtype=torch.int64)

    @property
    def admitted(self) -> Tensor:
        return self.admitted_at >= 0

    def admit_easy(self, image_easy: Tensor) -> None:
        """Admit the easy set (a bool per training image) before training."""
        if image_easy.shape != self.admitted_at.shape:
            raise ValueError(f"image_easy must hold one flag per training image ({self.admitted_at.numel()}), "
                             f"got shape {tuple(image_easy.shape)}")
        self.admitted_at[image_easy.cpu() & ~self.admitted] = 0

    def updates_labels(self, epoch: int, max_epochs: int) -> bool:
        return epoch > int(max_epochs * self.start) and epoch % self.every == 0

    def admits(self, epoch: int, max_epochs: int) -> bool:
        return self.updates_labels(epoch, max_epochs) and epoch <= int(max_epochs * self.stop)

    def tolerance(self, epoch: int, max_epochs: int) -> float:
        """The largest fraction of missed points with which a hard image is admitted at `epoch`."""
        progress = (epoch - max_epochs * self.start + 1) / (max_epochs * (self.stop - self.start))
        return self.initial_tolerance + progress * (1 - self.initial_tolerance)

    def admit(self, image_index: Tensor, missed_fraction: Tensor, false_alarm_ratio: Tensor, *, epoch: int,
              max_epochs: int) -> Tensor:
        """Admit, at an admission epoch, the scored images (`admission_scores`) that pass; return their indices.

        `image_index` names each scored image's index in the training set (any subset, e.g. one rank's shard
        gathered); images already admitted are left as they are. Returns the newly admitted indices, ascending.
        """
        image_index = image_index.cpu().to(torch.int64)
        if not image_index.shape == missed_fraction.shape == false_alarm_ratio.shape or image_index.dim() != 1:
            raise ValueError("image_index, missed_fraction and false_alarm_ratio must be 1-D and of one length, got "
                             f"{tuple(image_index.shape)}, {tuple(missed_fraction.shape)}, "
                             f"{tuple(false_alarm_ratio.shape)}")
        if not self.admits(epoch, max_epochs):
            return image_index.new_empty(0)
        passes = ((missed_fraction.cpu() <= self.tolerance(epoch, max_epochs))
                  & (false_alarm_ratio.cpu() <= self.max_false_alarm_ratio))
        newly = torch.unique(image_index[passes & ~self.admitted[image_index]])
        self.admitted_at[newly] = epoch
        return newly

    def state_dict(self) -> dict[str, Any]:
        return {"admitted_at": self.admitted_at.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        admitted_at = torch.as_tensor(state["admitted_at"], dtype=torch.int64)
        if admitted_at.shape != self.admitted_at.shape:
            raise ValueError(f"the checkpoint's admission state covers {admitted_at.numel()} images, this training "
                             f"set has {self.admitted_at.numel()}: resume on the training split it was saved with")
        self.admitted_at = admitted_at.clone()


# ---------------------------------------------------------------------------------------------------------------
# Label update


def pal_update(
    pred: Tensor,
    label: Tensor,
    valid_hw: Tensor,
    *,
    Tb: float = 0.5,
    k: float = 0.5,
    r: float = 0.0015,
    window: int = 33,
    seed_box: int = 3,
    decay: float = 0.97,
) -> Tensor:
    """One round of PAL's label update for a padded batch; the contract of `irstd.lesps.evolve_labels`.

    Args:
        pred: B x 1 x H x W network probabilities in [0, 1].
        label: B x 1 x H x W current labels, same dtype and device as `pred`.
        valid_hw: B x 2 integers, each image's valid (height, width); the padding is neither read nor written.
        Tb, k, r, window, seed_box: LESPS's threshold (Eq. 2) and neighbourhoods, as in `evolve_labels`.
        decay: factor applied to the label on every valid pixel outside all targets' kept candidates.

    Returns:
        The updated labels, a new tensor with the dtype and device of `label`.

    Per image (YuChuang1205/PAL, utilts.py `update_gt_update_degen_corr`): targets are the 8-connected
    components of `label > 0.5`; each target's candidates are the pixels of the `window` square centred at the
    floor of its centroid (clipped to the image) whose prediction is strictly above LESPS's adaptive threshold
    max(P_win) (Tb + k (1 - Tb) n / (h w r)); every 8-connected candidate component missing the seed box is
    dropped, however many there are (LESPS's `strict_false_alarm`). With U the union of all targets' kept
    candidates: label <- (label + pred) / 2 on U, label <- decay * label off U; pixels whose label was
    exactly 1 stay 1.

    Unlike `evolve_labels`, a pixel kept by several targets is averaged once, and labels that no target
    confirms fade by `decay` per round until they drop below 0.5 and stop being targets. The released code
    stores each round as an 8-bit PNG (labels quantised to 1/255); this keeps full precision.
    """
    check_pred_label(pred, label, valid_hw, window, seed_box)
    if not 0 <= decay <= 1:
        raise ValueError(f"decay must lie in [0, 1], got {decay}")
    pred, label = pred.detach(), label.detach()
    batch, _, height, width = label.shape
    device = label.device
    valid_hw = valid_hw.to(device=device, dtype=torch.int64)
    valid = valid_region(label.shape, valid_hw, device)

    # Decay everywhere in the valid region first; the kept candidates, few pixels, are then overwritten.
    updated = label * torch.where(valid, label.new_tensor(decay), label.new_tensor(1.0))
    updated.masked_fill_(label == 1, 1)
    targets = find_components((label > 0.5) & valid)
    if targets.total:
        image = targets.image_index.to(device)
        centre = torch.floor(targets.centroid).to(device=device, dtype=torch.int64)
        size = targets.area.to(device)
        target_hw = valid_hw[image]
        offsets = torch.arange(window, device=device) - window // 2
        rows, cols = centre[:, :1] + offsets, centre[:, 1:] + offsets  # T x d
        in_window = (((rows >= 0) & (rows < target_hw[:, :1]))[:, :, None]
                     & ((cols >= 0) & (cols < target_hw[:, 1:]))[:, None, :])
        # Clamped indices keep the gather in bounds; what they fetch lies outside `in_window` and is masked.
        row_index, col_index = rows.clamp(0, height - 1), cols.clamp(0, width - 1)
        pred_window = pred[image[:, None, None], 0, row_index[:, :, None], col_index[:, None, :]]
        peak = pred_window.masked_fill(~in_window, float("-inf")).amax(dim=(1, 2))
        area = (target_hw[:, 0] * target_hw[:, 1]).to(torch.float64)
        threshold = peak * (Tb + k * (1 - Tb) * size.to(torch.float64) / (area * r)).to(pred.dtype)
        candidates = (pred_window > threshold[:, None, None]) & in_window

        near_centre = offsets.abs() <= seed_box // 2
        seeds = candidates & near_centre[:, None] & near_centre
        target, row_in, col_in = _components_touching(candidates, seeds).nonzero(as_tuple=True)
        # A pixel kept by several targets is averaged once: the union of their kept candidates.
        kept = torch.unique((image[target] * height + rows[target, row_in]) * width + cols[target, col_in])
        old = label.reshape(-1)[kept]
        updated.view(-1)[kept] = torch.where(old == 1, old, (old + pred.reshape(-1)[kept]) / 2)
    return updated


# ---------------------------------------------------------------------------------------------------------------
# Checks
