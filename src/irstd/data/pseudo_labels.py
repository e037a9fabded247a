"""Fixed pseudo labels grown from point labels without training (Ying et al., CVPR 2023, Sec. 5.3, Table 3).

The paper compares LESPS with masks made once, before training: "given a GT point label, we only preserve the
eight connected regions of detection results that have union pixels with the GT point label", then trains
DNA-Net on them from scratch. Its detection results are an input intensity threshold (0.3, 0.5, 0.7) or a
training-free local-contrast detector (RLCM, TLLCM, MSPCM; MSLCM here too). The definitions used here:

- ``threshold``: the paper does not say what the intensity is relative to, and a threshold on raw intensity
  means nothing across 8-bit and 16-bit data or dim and bright scenes. Around each point we take the
  ``window`` x ``window`` patch (33, the window LESPS evolves labels in; clipped at the image border), scale
  it to [0, 1] by its own minimum (the background) and maximum (the target's peak), and keep the pixels
  ``>= threshold``. A flat patch (maximum = minimum) keeps nothing.
- a detector (``rlcm``, ``tllcm``, ``mslcm``, ``mspcm``): its saliency map over the whole image, binarised by
  the method's own ``segment`` rule (see :mod:`irstd.classic`).

Of the detections, the 8-connected regions holding at least one point label are kept (for ``threshold``,
each point's regions inside its own window), everything else is dropped. A point whose own pixel is not
detected keeps that single pixel, so no target loses its supervision altogether and the label is never
emptier than the point label it came from.
"""

from __future__ import annotations

import numpy as np
import torch

from irstd.data import points as pts

PSEUDO_METHODS = ("threshold", "rlcm", "tllcm", "mslcm", "mspcm")
DEFAULT_WINDOW = 33


def keep_point_regions(detections: np.ndarray, point_map: np.ndarray) -> np.ndarray:
    """The 8-connected regions of ``detections`` that contain a non-zero pixel of ``point_map``, plus every
    point pixel itself (a point outside all detections keeps just its pixel). Boolean H x W."""
    points = point_map != 0
    labels, _ = pts.label_targets(detections)
    hit = np.unique(labels[points & (labels > 0)])
    return np.isin(labels, hit) | points


def _check_threshold(threshold: float, window: int) -> None:
    if not 0 < threshold <= 1:
        raise ValueError(f"label_init.threshold must be in (0, 1], got {threshold}")
    if window < 1 or window % 2 == 0:
        raise ValueError(f"label_init.window must be a positive odd number of pixels, got {window}")


def threshold_detections(image: np.ndarray, points: np.ndarray, threshold: float,
                         window: int = DEFAULT_WINDOW) -> np.ndarray:
    """Per point: the region of its ``window`` patch whose min-max scaled intensity is ``>= threshold`` and
    8-connected to the point. Boolean H x W, the union over the points."""
    _check_threshold(threshold, window)
    height, width = image.shape
    half = window // 2
    out = np.zeros(image.shape, dtype=bool)
    for row, col in np.asarray(points, dtype=np.int64).reshape(-1, 2):
        r0, r1 = max(row - half, 0), min(row + half + 1, height)
        c0, c1 = max(col - half, 0), min(col + half + 1, width)
        patch = image[r0:r1, c0:c1].astype(np.float64)
        low, high = patch.min(), patch.max()
        detected = (patch - low) / (high - low) >= threshold if high > low else np.zeros(patch.shape, bool)
        if detected[row - r0, col - c0]:
            regions, _ = pts.label_targets(detected)
            out[r0:r1, c0:c1] |= regions == regions[row - r0, col - c0]
    return out


class PseudoLabeler:
    """Turns (image, point map) into a fixed pseudo label with one method; the detector is built once.

    The `label_init=pseudo` round-0 initialiser: the points come from the `label` group (centroid, coarse, ...).
    """

    name = "pseudo"
    grows_from_points = True

    def __init__(self, method: str = "threshold", threshold: float = 0.5, window: int = DEFAULT_WINDOW):
        if method not in PSEUDO_METHODS:
            raise ValueError(f"label_init.method must be one of {PSEUDO_METHODS}, got {method!r}")
        self.method, self.threshold, self.window = method, float(threshold), int(window)
        if method == "threshold":
            _check_threshold(self.threshold, self.window)
            self.detector = None
        else:
            from irstd.classic import build_detector

            self.detector = build_detector(method)

    def detections(self, image: np.ndarray, point_map: np.ndarray) -> np.ndarray:
        """The method's binary detections over the image (before the point regions are picked)."""
        if self.detector is None:
            return threshold_detections(image, pts.map_to_points(point_map), self.threshold, self.window)
        batch = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None, None]
        with torch.no_grad():
            mask = self.detector.segment(self.detector.saliency(batch))
        return mask[0, 0].cpu().numpy().astype(bool)

    def __call__(self, image: np.ndarray, point_map: np.ndarray) -> np.ndarray:
        """Float32 H x W pseudo label, 1 on kept pixels; ``image`` in native units, ``point_map`` non-zero on
        the points."""
        if image.shape != point_map.shape:
            raise ValueError(f"image is {image.shape} but its point map is {point_map.shape}")
        return keep_point_regions(self.detections(image, point_map), point_map).astype(np.float32)

    def initialise(self, images: list[np.ndarray], points: list[np.ndarray]) -> list[np.ndarray]:
        """Round-0 labels of a list of images (the `label_init` interface), one image at a time."""
        return [self(image, point_map) for image, point_map in zip(images, points, strict=True)]
