"""8-connected components of batched masks, numbered as scikit-image/SciPy number them.

The field's evaluation code labels with `skimage.measure.label(connectivity=2)`,
whose labels run 1..n per image in raster order of each component's first
pixel; target matching depends on that order, so both back ends return it.
On the CPU SciPy's C labeller is the fastest exact routine; on CUDA kornia's
union-find labeller keeps the work on the device.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

# 8-connectivity inside each image plane and none across planes, for one scipy.ndimage.label call per batch.
_PLANE_WISE_8_CONNECTED = [[[0] * 3] * 3, [[1] * 3] * 3, [[0] * 3] * 3]


@dataclass
class Components:
    """All components of a batch; component `i` lives in image `image_index[i]`.

    `labels[b]` numbers image b's components 1..counts[b] (0 = background);
    the flat component index of label `l` in image `b` is `offsets[b] + l - 1`.
    """

    labels: torch.Tensor  # B x H x W, int64
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
    """Label the 8-connected components of a B x H x W (or B x 1 x H x W) boolean mask, with areas and
    centroids (mean row and column of each component's pixels)."""
    if mask.dim() == 4:
        mask = mask[:, 0]
    mask = mask.bool()
    batch, height, width = mask.shape
    global_labels = connected_components(mask)
    foreground = global_labels > 0
    flat_ids = global_labels[foreground] - 1
    total = int(global_labels.max()) if global_labels.numel() else 0
    image_of_pixel = torch.arange(batch, device=mask.device).view(batch, 1, 1).expand_as(mask)[foreground]
    image_index = torch.zeros(total, dtype=torch.int64, device=mask.device).scatter_(0, flat_ids, image_of_pixel)
    counts = torch.bincount(image_index, minlength=batch)
    offsets = torch.cumsum(counts, 0) - counts
    # raster numbering makes each image's labels one contiguous range: shift them to 1..count
    labels = torch.where(foreground, global_labels - offsets.view(batch, 1, 1), global_labels)
    area = torch.bincount(flat_ids, minlength=total)
    rows, cols = torch.meshgrid(torch.arange(height, device=mask.device, dtype=torch.float64),
                                torch.arange(width, device=mask.device, dtype=torch.float64), indexing="ij")
    row_sum = torch.zeros(total, dtype=torch.float64, device=mask.device).index_add_(
        0, flat_ids, rows.expand(batch, height, width)[foreground])
    col_sum = torch.zeros(total, dtype=torch.float64, device=mask.device).index_add_(
        0, flat_ids, cols.expand(batch, height, width)[foreground])
    centroid = torch.stack([row_sum, col_sum], dim=1) / area.clamp(min=1).unsqueeze(1)
    return Components(labels=labels, counts=counts, offsets=offsets, image_index=image_index, area=area,
                      centroid=centroid)
