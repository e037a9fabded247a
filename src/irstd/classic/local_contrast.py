"""Local contrast measures (LCM family): a centre cell compared with the eight cells around it, at several scales.

All maps are computed with pooling, unfolding and shifted copies of whole images, so they run batched on any
device. Neighbouring cells are indexed clockwise from the top-left, so cells `i` and `i + 4` face each other.
Image borders are edge-replicated, which makes the missing cells look like background rather than like a step.

Sources checked: the papers' text for LCM (Chen et al. 2014) and TLLCM (Han et al. 2020); for RLCM, MSPCM and
WSLCM only public MATLAB releases (J. Han and S. Moradi's, mirrored in github.com/Linaom1214/ISTD-Benchmark
under detector/; T. Zhang's MPCM), whose papers could not be read here. Each docstring says which is which.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from irstd.classic.base import ClassicDetector, max_fraction_threshold, mean_std_threshold

# (row, column) direction of the eight surrounding cells, clockwise from the top-left.
_DIRECTIONS = ((-1, -1), (-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1), (0, -1))
# Denominators are clamped to one grey level (inputs are in native units) so black borders do not explode ratios.
_MIN_LEVEL = 1.0


def _pad(x: torch.Tensor, pad: int) -> torch.Tensor:
    return F.pad(x, (pad, pad, pad, pad), mode="replicate")


def _box_mean(x: torch.Tensor, size: int) -> torch.Tensor:
    """Mean over the size x size cell centred at each pixel (size odd)."""
    return F.avg_pool2d(_pad(x, size // 2), size, stride=1)


def _box_max(x: torch.Tensor, size: int) -> torch.Tensor:
    return F.max_pool2d(_pad(x, size // 2), size, stride=1)


def _windows(x: torch.Tensor, size: int) -> torch.Tensor:
    """B x size*size x H x W: the size x size cell centred at each pixel."""
    b, _, h, w = x.shape
    return F.unfold(_pad(x, size // 2), size).view(b, size * size, h, w)


def _neighbours(cell_map: torch.Tensor, distance: int) -> torch.Tensor:
    """B x 8 x H x W: `cell_map` read at the centres of the eight cells `distance` pixels away."""
    _, _, h, w = cell_map.shape
    padded = _pad(cell_map, distance)
    return torch.cat([padded[:, :, distance + dy * distance:distance + dy * distance + h,
                             distance + dx * distance:distance + dx * distance + w] for dy, dx in _DIRECTIONS], 1)


def _top_k_means(x: torch.Tensor, size: int, ks: Sequence[int]) -> list[torch.Tensor]:
    """For each k in `ks`, the mean of the k largest values of the size x size cell centred at each pixel."""
    if max(ks) > size * size:
        raise ValueError(f"cannot average the {max(ks)} largest pixels of a {size} x {size} cell")
    cumulative = _windows(x, size).topk(max(ks), dim=1).values.cumsum(1)
    return [cumulative[:, k - 1:k] / k for k in ks]


def _gaussian_3x3(x: torch.Tensor) -> torch.Tensor:
    """The 3 x 3 binomial approximation of a Gaussian ([1 2 1]^T [1 2 1] / 16)."""
    row = x.new_tensor([1.0, 2.0, 1.0]) / 4
    kernel = (row.view(-1, 1) * row.view(1, -1)).view(1, 1, 3, 3)
    return F.conv2d(_pad(x, 1), kernel)


def _median_3x3(x: torch.Tensor) -> torch.Tensor:
    return _windows(x, 3).median(1, keepdim=True).values


def max_mean_threshold(saliency: torch.Tensor, ratio: float) -> torch.Tensor:
    """Han et al.'s rule: pixels above ratio * max + (1 - ratio) * mean of the saliency map, per image."""
    flat = saliency.flatten(1)
    threshold = ratio * flat.amax(1) + (1 - ratio) * flat.mean(1)
    return saliency > threshold.view(-1, 1, 1, 1)


class _MeanStdSegment(ClassicDetector):
    """Shared threshold rule: mean + k * std of the saliency map, per image."""

    k: float

    def segment(self, saliency: torch.Tensor) -> torch.Tensor:
        return mean_std_threshold(saliency, self.k)


class _MaxFractionSegment(ClassicDetector):
    """Shared threshold rule: min + ratio * (max - min) of the saliency map, per image (`max_fraction_threshold`)."""

    ratio: float

    def segment(self, saliency: torch.Tensor) -> torch.Tensor:
        return max_fraction_threshold(saliency, self.ratio)


class RLCM(_MaxFractionSegment):
    """Multiscale relative local contrast measure.

    Han, Liang, Zhou, Zhu, Zhao & Zhao, "Infrared small target detection utilizing the multiscale relative local
    contrast measure", IEEE GRSL 15(4), 2018. For a 3 x 3 grid of `cell` x `cell` cells, I0 is the mean of the K1
    largest pixels of the centre cell and Ii that of the K2 largest of surrounding cell i; the contrast is
    min_i (I0 / Ii) * (I0 - Ii) = I0^2 / max_i Ii - I0 (ratio times difference). Each (K1, K2) pair is a scale;
    the map is the maximum over scales with negatives set to 0. Formula, fixed 9 x 9 cell and (K1, K2) pairs are
    those of the authors' MATLAB release (run_RLCM.m in github.com/Linaom1214/ISTD-Benchmark, detector/RLCM);
    the paper itself could not be checked here.

    Args:
        cell: cell side (9).
        k1, k2: per-scale counts of largest pixels for the centre and surrounding cells ((2, 5, 9), (4, 9, 16)).
        ratio: threshold rule, pixels above min + ratio * (max - min) of the RLCM map per image. The paper's own
            rule could not be read here; ratio = 0.5 is the rule of the benchmark that ships this release,
            github.com/Linaom1214/ISTD-Benchmark (method.py, Predict.__call__: the map of run_RLCM.m is min-max
            normalised and values below 0.5 * max are zeroed).
    """

    def __init__(self, cell: int = 9, k1: Sequence[int] = (2, 5, 9), k2: Sequence[int] = (4, 9, 16),
                 ratio: float = 0.5):
        super().__init__()
        if len(k1) != len(k2):
            raise ValueError(f"RLCM needs one K2 per K1, got k1={k1}, k2={k2}")
        self.cell, self.k1, self.k2, self.ratio = cell, tuple(k1), tuple(k2), ratio

    def saliency(self, image: torch.Tensor) -> torch.Tensor:
        means = _top_k_means(image, self.cell, self.k1 + self.k2)  # one sort serves both layers
        centre, around = means[:len(self.k1)], means[len(self.k1):]
        scales = []
        for i0, ii in zip(centre, around, strict=True):
            background = _neighbours(ii, self.cell).amax(1, keepdim=True).clamp_min(_MIN_LEVEL)
            scales.append(i0 * (i0 - background) / background)
        return torch.stack(scales).amax(0).clamp_min(0)


class TLLCM(ClassicDetector):
    """Multiscale tri-layer local contrast measure.

    Han, Moradi, Faramarzi, Liu, Zhang & Zhao, "A local contrast method for infrared small-target detection
    utilizing a tri-layer window", IEEE GRSL 17(10), 2020 (checked against the paper's text). The window has a
    3 x 3 core layer, enhanced by the Gaussian template [1 2 1; 2 4 2; 1 2 1] / 16 (Eq. 1); a reserve layer, the
    rest of the s x s centre cell, ignored so a target of unknown extent does not leak into the background; and
    eight s x s surrounding cells, each summarised by the mean of its K largest pixels (Eq. 2, K = 9, the core's
    pixel count). TLLCM = min_i (Icore / Isurr_i) * Icore - Icore (Eq. 3), the maximum over the scales s with
    negatives set to 0 (Eq. 4).

    Args:
        scales: reserve/surrounding cell sides s (5, 7, 9: the paper's experiments).
        top_k: K, pixels averaged per surrounding cell (9).
        ratio: threshold rule (Eq. 5), pixels above ratio * max + (1 - ratio) * mean of the map per image; the
            paper finds 0.7-0.9 proper for single targets, 0.8 here.
    """

    def __init__(self, scales: Sequence[int] = (5, 7, 9), top_k: int = 9, ratio: float = 0.8):
        super().__init__()
        self.scales, self.top_k, self.ratio = tuple(scales), top_k, ratio

    def saliency(self, image: torch.Tensor) -> torch.Tensor:
        core = _gaussian_3x3(image)
        out = []
        for s in self.scales:
            (surround,) = _top_k_means(image, s, (self.top_k,))
            background = _neighbours(surround, s).amax(1, keepdim=True).clamp_min(_MIN_LEVEL)
            out.append(core * (core - background) / background)
        return torch.stack(out).amax(0).clamp_min(0)

    def segment(self, saliency: torch.Tensor) -> torch.Tensor:
        return max_mean_threshold(saliency, self.ratio)


class MSLCM(_MeanStdSegment):
    """Multiscale local contrast measure (LCM).

    Chen, Li, Yu & Liu, "A local contrast method for small infrared target detection", IEEE TGRS 52(1), 2014
    (checked against the paper's text). Per scale: L = maximum of the centre cell, mi = mean of surrounding cell
    i, C = min_i L^2 / mi (Eq. 3, Algorithm 1); the map is the maximum over scales (Algorithm 2). The paper only
    bounds the cell at 9 x 9 (SPIE's 80-pixel small target); the scales 3, 5, 7, 9 are the common choice, not a
    list the paper gives. There is no preprocessing in the paper.

    Args:
        scales: cell sides (3, 5, 7, 9).
        k: threshold rule (Eq. 4), mean + k * std of the map per image; the paper says k usually ranges from 3
            to 5, k = 4 here.

    C is a ratio, so on flat ground it equals the background level: it ranks targets by brightness gain, and wide
    bright regions score as high as their level (the edge of such a region is not above its inside).
    """

    def __init__(self, scales: Sequence[int] = (3, 5, 7, 9), k: float = 4.0):
        super().__init__()
        self.scales, self.k = tuple(scales), k

    def saliency(self, image: torch.Tensor) -> torch.Tensor:
        out = []
        for s in self.scales:
            peak = _box_max(image, s)
            background = _neighbours(_box_mean(image, s), s).amax(1, keepdim=True).clamp_min(_MIN_LEVEL)
            out.append(peak.square() / background)
        return torch.stack(out).amax(0)


class MSPCM(_MaxFractionSegment):
    """Multiscale patch-based contrast measure.

    Wei, You & Li, "Multiscale patch-based contrast measure for small infrared target detection", Pattern
    Recognition 58, 2016. Per scale: di = m0 - mi (centre cell mean minus surrounding cell i's mean), the
    contrast is the minimum over the four opposite pairs of di * d(i+4), and the map is the maximum over scales
    with negatives set to 0. An edge has differences of opposite sign across some pair, so it scores <= 0. The
    definition, scales and lack of preprocessing follow the two public MATLAB releases checked (S. Moradi's
    run_MSPCM.m in github.com/Linaom1214/ISTD-Benchmark, detector/MSPCM, and T. Zhang's MPCM class); the paper
    itself could not be read here. As in those releases, a dark spot (all di < 0) also scores positive.

    Args:
        scales: cell sides (3, 5, 7, 9).
        ratio: threshold rule, pixels above min + ratio * (max - min) of the map per image. The paper's own rule
            could not be read here; ratio = 0.5 is the rule both releases above are evaluated with:
            github.com/Linaom1214/ISTD-Benchmark (method.py, Predict.__call__: min-max normalised map, values
            below 0.5 * max zeroed) and github.com/Tianfang-Zhang/ISTD-python (evaluation/pd_fa.py:
            preds / max(preds) > 0.5).
    """

    def __init__(self, scales: Sequence[int] = (3, 5, 7, 9), ratio: float = 0.5):
        super().__init__()
        self.scales, self.ratio = tuple(scales), ratio

    def saliency(self, image: torch.Tensor) -> torch.Tensor:
        out = []
        for s in self.scales:
            means = _box_mean(image, s)
            diff = means - _neighbours(means, s)
            out.append((diff[:, :4] * diff[:, 4:]).amin(1, keepdim=True))
        return torch.stack(out).amax(0).clamp_min(0)


class WSLCM(_MaxFractionSegment):
    """Weighted strengthened local contrast measure.

    Han, Moradi, Faramarzi, Liu, Zhang, Zhao, Zhang & Li, "Infrared small target detection based on the weighted
    strengthened local contrast measure", IEEE GRSL 18(9), 2021. The paper could not be read here; the
    definition and defaults follow the authors' MATLAB release (run_WSLCM.m in
    github.com/Linaom1214/ISTD-Benchmark, detector/WSLCM). The image is 3 x 3 median filtered; G is that image
    smoothed by the 3 x 3 Gaussian template. Per scale s, with Mj the mean of the K largest pixels of cell j (0
    the s x s centre, 1-8 the surrounding cells) and IRILj = Mj - (mean of cell j), the strengthened contrast is
    SLCM = max(0, G^2 / max_i Mi - G) and the weight W = IRIL0 * max(0, IRIL0 - max_i IRILi) / max(xi, std_i
    IRILi) (sample std over the eight cells), so a centre whose bright pixels stand out more than any neighbour's
    is kept and heterogeneous surroundings are damped. WSLCM = W * SLCM, the maximum over scales.

    Args:
        scales: cell sides (5, 7, 9, 11).
        top_k: K, largest pixels averaged per cell (9).
        xi: floor of the surroundings' IRIL spread, in grey levels (5).
        ratio: threshold rule, pixels above min + ratio * (max - min) of the map per image. The paper's own rule
            could not be read here; ratio = 0.5 is the rule of the benchmark that ships this release,
            github.com/Linaom1214/ISTD-Benchmark (method.py, Predict.__call__: the map of run_WSLCM.m is min-max
            normalised and values below 0.5 * max are zeroed).
    """

    def __init__(self, scales: Sequence[int] = (5, 7, 9, 11), top_k: int = 9, xi: float = 5.0, ratio: float = 0.5):
        super().__init__()
        self.scales, self.top_k, self.xi, self.ratio = tuple(scales), top_k, xi, ratio

    def saliency(self, image: torch.Tensor) -> torch.Tensor:
        denoised = _median_3x3(image)
        smooth = _gaussian_3x3(denoised)
        out = []
        for s in self.scales:
            (bright,) = _top_k_means(denoised, s, (self.top_k,))
            iril = bright - _box_mean(denoised, s)
            background = _neighbours(bright, s).amax(1, keepdim=True).clamp_min(_MIN_LEVEL)
            slcm = (smooth * (smooth - background) / background).clamp_min(0)
            iril_around = _neighbours(iril, s)
            lead = (iril - iril_around.amax(1, keepdim=True)).clamp_min(0)
            spread = iril_around.std(1, keepdim=True).clamp_min(self.xi)
            out.append(iril * lead / spread * slcm)
        return torch.stack(out).amax(0)
