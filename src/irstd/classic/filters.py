"""Morphological and order-statistic background-suppression filters: white top-hat and max-median.

Both estimate the background with a small non-linear filter and keep the positive residual, so both respond to
any bright structure narrower than the filter support (points and thin lines) and not to wide regions or to the
straight edges of wide regions.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from irstd.classic.base import ClassicDetector, max_fraction_threshold


def _windows(image: torch.Tensor, size: int) -> torch.Tensor:
    """B x size*size x H x W: each pixel's size x size neighbourhood (edge-replicated, so borders see no step)."""
    b, _, h, w = image.shape
    pad = size // 2
    padded = F.pad(image, (pad, pad, pad, pad), mode="replicate")
    return F.unfold(padded, size).view(b, size * size, h, w)


def _structuring_element(size: int, shape: str) -> torch.Tensor:
    """Flat structuring element as a boolean size x size footprint."""
    if shape == "square":
        return torch.ones(size, size, dtype=torch.bool)
    if shape == "disk":
        r = torch.arange(size) - size // 2
        return r.view(-1, 1) ** 2 + r.view(1, -1) ** 2 <= (size // 2) ** 2
    raise ValueError(f"structuring element shape must be 'square' or 'disk', got {shape!r}")


class TopHat(ClassicDetector):
    """White top-hat: the image minus its grey opening by a flat structuring element.

    Rivest & Fortin, "Detection of dim targets in digital infrared imagery by morphological image processing",
    Optical Engineering 35(7), 1996; Bai & Zhou, "Analysis of new top-hat transformation and the application for
    infrared dim small target detection", Pattern Recognition 43(6), 2010.

    Args:
        size: side of the structuring element (5: the common IRSTD baseline; targets up to ~size-1 px survive).
        shape: "square" or "disk" (the disk of diameter `size`).
        ratio: threshold rule, pixels above min + ratio * (max - min) of the top-hat map per image
            (`max_fraction_threshold`). The papers leave the threshold to the application; ratio = 0.5 is the
            rule of the public benchmarks that evaluate this same 5 x 5 square top-hat:
            github.com/Linaom1214/ISTD-Benchmark (method.py, Predict.__call__, on detector/TopHat/run_TopHat.m)
            and github.com/Tianfang-Zhang/ISTD-python (evaluation/pd_fa.py, on detectors/tophat.py).

    An opening removes every bright structure the element does not fit in, so thin lines (narrower than the
    element) are kept as targets while wide regions and their straight edges are removed.
    """

    def __init__(self, size: int = 5, shape: str = "square", ratio: float = 0.5):
        super().__init__()
        self.size, self.ratio = size, ratio
        self.register_buffer("footprint", _structuring_element(size, shape).flatten(), persistent=False)

    def _erode(self, image: torch.Tensor) -> torch.Tensor:
        return _windows(image, self.size)[:, self.footprint].amin(1, keepdim=True)

    def _dilate(self, image: torch.Tensor) -> torch.Tensor:
        # The element is symmetric, so its reflection needed by dilation is itself.
        return _windows(image, self.size)[:, self.footprint].amax(1, keepdim=True)

    def saliency(self, image: torch.Tensor) -> torch.Tensor:
        return image - self._dilate(self._erode(image))

    def segment(self, saliency: torch.Tensor) -> torch.Tensor:
        return max_fraction_threshold(saliency, self.ratio)


class MaxMedian(ClassicDetector):
    """Max-median filter background suppression.

    Deshpande, Er, Venkateswarlu & Chan, "Max-mean and max-median filters for detection of small targets",
    Proc. SPIE 3809, 1999. The background at a pixel is the largest of the medians of the four lines of `size`
    pixels through it (horizontal, vertical, both diagonals) inside a size x size window; since a line along an
    edge or a ridge of the background keeps its level, edges are preserved in the background and cancel out.

    Args:
        size: window side (odd; 9). A line median only reaches the background when more than half the line lies
            outside the target, so the window must be over twice the target width: with 5, a sigma = 1.5 px
            target keeps only a fifth of its amplitude; 9 covers targets up to ~4 px wide.
        ratio: threshold rule, pixels above min + ratio * (max - min) of the residual (image - background,
            negatives clipped) per image (`max_fraction_threshold`). The paper leaves the threshold open; ratio =
            0.5 is the rule of github.com/Tianfang-Zhang/ISTD-python, whose Pd/Fa evaluation of its max-median
            detector (detectors/maxmedian.py) keeps preds / max(preds) > 0.5 (evaluation/pd_fa.py).
    """

    def __init__(self, size: int = 9, ratio: float = 0.5):
        super().__init__()
        if size % 2 != 1:
            raise ValueError(f"MaxMedian window size must be odd, got {size}")
        self.size, self.ratio = size, ratio
        grid = torch.arange(size * size).view(size, size)
        centre = size // 2
        lines = torch.stack([grid[centre], grid[:, centre], grid.diagonal(), grid.flip(1).diagonal()])
        self.register_buffer("lines", lines, persistent=False)

    def saliency(self, image: torch.Tensor) -> torch.Tensor:
        windows = _windows(image, self.size)  # B x size^2 x H x W
        medians = torch.stack([windows[:, line].median(1).values for line in self.lines], 1)
        background = medians.amax(1, keepdim=True)
        return (image - background).clamp_min(0)

    def segment(self, saliency: torch.Tensor) -> torch.Tensor:
        return max_fraction_threshold(saliency, self.ratio)
