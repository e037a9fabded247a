"""8-connected components of batched masks, numbered as scikit-image/SciPy number them.

The field's evaluation code labels with `skimage.measure.label(connectivity=2)`,
whose labels run 1..n per image in raster order of each component's first
pixel; target matching depends on that order, so both back ends return it.
On the CPU SciPy's C labeller is the fastest exact routine; on CUDA kornia's
union-find labeller keeps the work on the device.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

# 8-connectivity inside each image plane and none across planes, for one scipy.ndimage.label call per batch.
_PLANE_WISE_8_CONNECTED = [[[0] * 3] * 3, [[1] * 3] * 3, [[0] * 3] * 3]
# the field's connectivity for targets, candidates and predictions (scipy structure)
EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


@dataclass
class Components:
    """All components of a batch, image by image in raster order of their first pixel;
    component `i` lives in image `image_index[i]`, image b's are `offsets[b]` .. `offsets[b] + counts[b] - 1`.
    """

    counts: torch.Tensor  # B
    offsets: torch.Tensor  # B, index of each image's first component
    image_index: torch.Tensor  # N
    area: torch.Tensor  # N, int64
    centroid: torch.Tensor  # N x 2 (row, col), float64

    @property
    def total(self) -> int:
        return int(self.image_index.numel())


def connected_components(mask: torch.Tensor) -> torch.Tensor:
    """Label the 8-connected components of a B x 1 x H x W (or B x H x W) boolean mask.

    Returns int64 labels of the same shape: 0 is background; components are numbered 1..N
    across the batch in raster order of their first pixel over (image, row, column), so
    within an image they follow scikit-image's order.
    """
    mask = mask.bool()
    # On the CPU SciPy's C labeller is 7x (33 x 33 windows) to 80x (256 x 256 images) faster than kornia's.
    labels = _scipy_labels(mask) if mask.device.type == "cpu" else _union_find_labels(mask)
    return labels.view(mask.shape)


def _scipy_labels(mask: torch.Tensor) -> torch.Tensor:
    from scipy import ndimage

    # one call for the whole batch; it numbers in raster order already
    labels, _ = ndimage.label(mask.reshape(-1, *mask.shape[-2:]).numpy(), structure=_PLANE_WISE_8_CONNECTED)
    return torch.from_numpy(labels.astype("int64", copy=False))


def _union_find_labels(mask: torch.Tensor) -> torch.Tensor:
    """kornia's union-find on the mask's device, renumbered in raster order.

    Union-find runs to convergence; kornia's pooling labeller stops after a fixed number
    of steps and leaves long components split.
    """
    from kornia.contrib import connected_components_union_find

    raw = connected_components_union_find(mask.reshape(-1, 1, *mask.shape[-2:]).to(torch.uint8)).flatten()
    foreground = raw.nonzero().squeeze(1)
    ids, inverse = torch.unique(raw[foreground], return_inverse=True)
    first_pixel = torch.full((ids.numel(),), raw.numel(), dtype=torch.int64, device=mask.device)
    first_pixel.scatter_reduce_(0, inverse, foreground, reduce="amin")
    rank = torch.empty_like(first_pixel)
    rank[torch.argsort(first_pixel)] = torch.arange(ids.numel(), device=mask.device)
    labels = torch.zeros_like(raw)
    labels[foreground] = rank[inverse] + 1
    return labels


def find_components(mask: torch.Tensor) -> Components:
    """The 8-connected components of a B x H x W (or B x 1 x H x W) boolean mask, with areas and
    centroids (mean row and column of each component's pixels).

    Statistics are accumulated over foreground pixels only, and on the CPU each image is labelled
    within the bounding box of its foreground: masks are sparse, so the work follows the targets,
    not the frame size.
    """
    if mask.dim() == 4:
        mask = mask[:, 0]
    mask = mask.bool()
    return _find_components_cpu(mask) if mask.device.type == "cpu" else _find_components_torch(mask)


def _find_components_torch(mask: torch.Tensor) -> Components:
    """Device-side statistics from one batched labelling."""
    batch, height, width = mask.shape
    flat = connected_components(mask).view(-1)
    pixel = flat.nonzero().squeeze(1)
    ids = flat[pixel] - 1
    total = int(ids.max()) + 1 if ids.numel() else 0
    image_index = torch.zeros(total, dtype=torch.int64, device=mask.device).scatter_(0, ids, pixel // (height * width))
    counts = torch.bincount(image_index, minlength=batch)
    area = torch.bincount(ids, minlength=total)
    coords = torch.stack([pixel // width % height, pixel % width], dim=1).to(torch.float64)
    centroid = torch.zeros(total, 2, dtype=torch.float64, device=mask.device).index_add_(0, ids, coords)
    return Components(counts=counts, offsets=torch.cumsum(counts, 0) - counts, image_index=image_index,
                      area=area, centroid=centroid / area.clamp(min=1).unsqueeze(1))


def _find_components_cpu(mask: torch.Tensor) -> Components:
    from scipy import ndimage

    batch, _, width = mask.shape
    counts = np.zeros(batch, dtype=np.int64)
    areas, centroids = [], []
    for b, image in enumerate(mask.numpy()):
        foreground = np.flatnonzero(image)
        if foreground.size == 0:
            continue
        rows, cols = foreground // width, foreground % width
        top, left = rows.min(), cols.min()
        box = image[top: rows.max() + 1, left: cols.max() + 1]
        labels, count = ndimage.label(box, structure=EIGHT_CONNECTED)
        ids = labels[rows - top, cols - left] - 1
        area = np.bincount(ids, minlength=count)
        centroids.append(np.stack([np.bincount(ids, rows, count), np.bincount(ids, cols, count)], 1) / area[:, None])
        areas.append(area)
        counts[b] = count
    counts_t = torch.from_numpy(counts)
    return Components(
        counts=counts_t, offsets=torch.cumsum(counts_t, 0) - counts_t,
        image_index=torch.repeat_interleave(torch.arange(batch), counts_t),
        area=torch.from_numpy(np.concatenate(areas)) if areas else torch.zeros(0, dtype=torch.int64),
        centroid=torch.from_numpy(np.concatenate(centroids)) if centroids else torch.zeros(0, 2, dtype=torch.float64))
