"""Round-0 initialisers: what the label bank's round 0 holds, made from each training image and its point labels.

Picked with the `label_init` config group (`_target_` one of these classes); the DataModule calls `initialise`
once, when it creates a run's label bank, so the result is cached in the run directory (the bank's round 0) and
a resumed run reads it back instead of computing it again.

Each initialiser maps lists of H x W images (native units) and point maps (non-zero on the points) to H x W float32
labels (`grows_from_points = False` initialisers get no images). The batched ones pad `chunk` images to a common
size and call their tensor function on `device`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F


class PointLabels:
    """Round 0 = the labels read, as they are: the points (LESPS, PAL), or the masks for full supervision."""

    name = "points"
    grows_from_points = False

    def initialise(self, images: Sequence[np.ndarray] | None, points: Sequence[np.ndarray]) -> list[np.ndarray]:
        """The labels as they are; the images are not needed (the DataModule passes None)."""
        return [np.asarray(point, dtype=np.float32) for point in points]


class _BatchedMasks:
    """Pads chunks of images to one size and grows their points into masks with a batched tensor function."""

    name = "batched"
    # what it grows must be points: masks (label=full) would make it grow masks from masks
    grows_from_points = True

    def __init__(self, function: Callable[..., torch.Tensor], params: dict[str, Any], device: str = "auto",
                 chunk: int = 16):
        if chunk < 1:
            raise ValueError(f"label_init.chunk must be >= 1 image, got {chunk}")
        self.function, self.params, self.chunk = function, params, chunk
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError(f"label_init.device={device}: no CUDA device is available")
        self.device = torch.device(device)
        # settings are checked now, on an empty image, so a bad value fails at startup and names its config key
        empty = torch.zeros(1, 1, 4, 4)
        try:
            function(empty, empty, torch.tensor([[4, 4]]), **params)
        except (TypeError, ValueError) as err:
            raise ValueError(f"label_init ({self.name}): {err}; set it as label_init.KEY=VALUE") from err

    def initialise(self, images: Sequence[np.ndarray], points: Sequence[np.ndarray]) -> list[np.ndarray]:
        if len(images) != len(points):
            raise ValueError(f"{len(images)} images but {len(points)} point maps")
        labels: list[np.ndarray] = []
        for start in range(0, len(images), self.chunk):
            labels.extend(self._chunk(images[start:start + self.chunk], points[start:start + self.chunk]))
        return labels

    def _chunk(self, images: Sequence[np.ndarray], points: Sequence[np.ndarray]) -> list[np.ndarray]:
        for image, point in zip(images, points, strict=True):
            if image.shape != point.shape:
                raise ValueError(f"an image of {image.shape} has a point map of {point.shape}")
        height = max(image.shape[0] for image in images)
        width = max(image.shape[1] for image in images)

        def stack(arrays: Sequence[np.ndarray]) -> torch.Tensor:
            return torch.stack([F.pad(torch.as_tensor(np.asarray(a, dtype=np.float32)),
                                      (0, width - a.shape[1], 0, height - a.shape[0])) for a in arrays])[:, None]

        valid_hw = torch.tensor([image.shape for image in images], dtype=torch.int64, device=self.device)
        with torch.no_grad():
            masks = self.function(stack(images).to(self.device), stack(points).to(self.device), valid_hw,
                                  **self.params)
        return [masks[i, 0, :h, :w].float().cpu().numpy() for i, (h, w) in enumerate(valid_hw.tolist())]


class DiffusionMasks(_BatchedMasks):
    """Diffuse-to-Detect's pseudo-masks: heat from each point, slowed by image edges (`diffusion_pseudo_masks`);
    keyword arguments beside `device` and `chunk` are that function's."""

    name = "diffusion"

    def __init__(self, device: str = "auto", chunk: int = 16, **params: Any):
        from irstd.labels.init.diffusion import diffusion_pseudo_masks

        super().__init__(diffusion_pseudo_masks, params, device, chunk)


class ClusteringMasks(_BatchedMasks):
    """MCLC's pseudo-masks: each point's cluster in many random windows, averaged (`monte_carlo_clustering_masks`);
    keyword arguments beside `device` and `chunk` are that function's."""

    name = "clustering"

    def __init__(self, device: str = "auto", chunk: int = 16, **params: Any):
        from irstd.labels.init.clustering import monte_carlo_clustering_masks

        if "half_extent" in params:
            params["half_extent"] = tuple(params["half_extent"])
        super().__init__(monte_carlo_clustering_masks, params, device, chunk)
