"""Valid regions of padded batches: each image occupies the top-left valid_hw of its B x 1 x H x W slot."""

from __future__ import annotations

import torch
from torch import Tensor


def valid_region(shape: torch.Size, valid_hw: Tensor | None, device: torch.device) -> Tensor:
    """Boolean B x 1 x H x W mask of the pixels inside each image's original size (top-left); all True when
    `valid_hw` is None."""
    batch, _, height, width = shape
    if valid_hw is None:
        return torch.ones(shape, dtype=torch.bool, device=device)
    valid_hw = valid_hw.to(device)
    rows = torch.arange(height, device=device).view(1, 1, height, 1) < valid_hw[:, 0].view(batch, 1, 1, 1)
    cols = torch.arange(width, device=device).view(1, 1, 1, width) < valid_hw[:, 1].view(batch, 1, 1, 1)
    return rows & cols


def check_valid_hw(valid_hw: Tensor, shape: torch.Size) -> None:
    """Raise a ValueError unless `valid_hw` is an integer B x 2 tensor of sizes within the batch's H x W."""
    if valid_hw.shape != (shape[0], 2) or valid_hw.is_floating_point():
        raise ValueError(f"valid_hw must be an integer B x 2 tensor, got {valid_hw.dtype} {tuple(valid_hw.shape)}")
    upper = torch.tensor(shape[2:], device=valid_hw.device)
    if not bool(((valid_hw >= 1) & (valid_hw <= upper)).all()):
        raise ValueError(f"valid_hw sizes must lie within 1..{tuple(shape[2:])}, got {valid_hw.tolist()}")


def check_image_points(image: Tensor, points: Tensor, valid_hw: Tensor) -> None:
    """Raise a ValueError naming the argument at fault: a floating B x 1 x H x W image, points of its shape and
    device, valid sizes within it."""
    if image.dim() != 4 or image.shape[1] != 1 or not image.is_floating_point():
        raise ValueError(f"image must be a floating B x 1 x H x W tensor, got {image.dtype} {tuple(image.shape)}")
    if points.shape != image.shape or points.device != image.device:
        raise ValueError(f"points must match image's shape {tuple(image.shape)} and device {image.device}, "
                         f"got {tuple(points.shape)} on {points.device}")
    check_valid_hw(valid_hw, image.shape)


def check_pred_label(pred: Tensor, label: Tensor, valid_hw: Tensor, window: int, seed_box: int) -> None:
    """The inputs of a label update (`evolve_labels`, `pal_update`): B x 1 x H x W probabilities and labels of one
    floating dtype and device, valid sizes within them, odd window and seed-box sides."""
    if label.dim() != 4 or label.shape[1] != 1 or pred.shape != label.shape:
        raise ValueError(f"pred and label must both be B x 1 x H x W, got {tuple(pred.shape)}, {tuple(label.shape)}")
    if pred.dtype != label.dtype or pred.device != label.device or not label.is_floating_point():
        raise ValueError(f"pred and label must share a floating dtype and device, got {pred.dtype}, {label.dtype}")
    check_valid_hw(valid_hw, label.shape)
    for name, side in (("window", window), ("seed_box", seed_box)):
        if side < 1 or side % 2 == 0:
            raise ValueError(f"{name} must be a positive odd size to have a centre pixel, got {side}")
