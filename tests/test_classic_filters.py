"""Filtering and local-contrast detectors: synthetic targets found, edges and ramps ignored, batching exact."""

from __future__ import annotations

import pytest
import torch

from irstd.classic import build_detector

NAMES = ["tophat", "maxmedian", "rlcm", "tllcm", "mslcm", "mspcm", "wslcm"]
SIZE = 64


def _gaussian(centre: tuple[int, int], sigma: float = 1.5, amplitude: float = 60.0) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.arange(SIZE, dtype=torch.float32), torch.arange(SIZE, dtype=torch.float32),
                            indexing="ij")
    return amplitude * torch.exp(-((yy - centre[0]) ** 2 + (xx - centre[1]) ** 2) / (2 * sigma**2))


def _noise(seed: int) -> torch.Tensor:
    return torch.randn(SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


def _run(name: str, image: torch.Tensor) -> torch.Tensor:
    return build_detector(name)(image.view(1, 1, SIZE, SIZE))[0, 0]


def _check_target(mask: torch.Tensor, centre: tuple[int, int]) -> None:
    assert mask[centre[0] - 1:centre[0] + 2, centre[1] - 1:centre[1] + 2].any(), "target centre missed"
    far = mask.clone()
    # Large-cell measures (RLCM's 9 x 9 cells) spread a target's response over its cells; that is not clutter.
    far[centre[0] - 9:centre[0] + 10, centre[1] - 9:centre[1] + 10] = False
    assert far.sum() <= 10, f"{int(far.sum())} false pixels away from the target"


# MSLCM's contrast is a ratio (Chen et al.): on flat ground it equals the background level, so a global
# mean + k * std threshold misses a 60-level target once the background varies by a factor of 4 or has a
# bright half. That is the method, not a bug; the edge itself is still not detected (checked below).
_RATIO_LIMIT = pytest.mark.xfail(reason="ratio contrast scales with background level", strict=True)


@pytest.mark.parametrize("name", NAMES)
def test_target_on_flat_background(name):
    centre = (30, 37)
    _check_target(_run(name, 50 + _gaussian(centre) + 2 * _noise(0)), centre)


@pytest.mark.parametrize("name", [pytest.param(n, marks=_RATIO_LIMIT) if n == "mslcm" else n for n in NAMES])
def test_target_on_ramp(name):
    centre = (22, 41)
    ramp = torch.linspace(30, 130, SIZE).view(1, -1).expand(SIZE, SIZE)
    _check_target(_run(name, ramp + _gaussian(centre) + 2 * _noise(1)), centre)


@pytest.mark.parametrize("name", NAMES)
def test_edge_of_wide_region_is_not_a_target(name):
    # All these methods claim to suppress edges of regions wider than their support (TopHat and MaxMedian keep
    # thin lines, not wide edges), so the straight edge of a half-plane must stay (almost) undetected.
    # A target in the dark half keeps the per-image threshold realistic (an empty image thresholds its noise).
    centre = (32, 12)
    image = 50 + _gaussian(centre) + 2 * _noise(2)
    image[:, SIZE // 2:] += 80
    mask = _run(name, image)
    edge = mask[:, SIZE // 2 - 3:SIZE // 2 + 3]
    assert edge.float().mean() <= 0.05, f"{edge.float().mean():.2f} of the edge band detected"
    if name != "mslcm":  # see _RATIO_LIMIT: its bright half outscores the target
        _check_target(mask, centre)


@pytest.mark.parametrize("name", NAMES)
def test_batch_equals_single_images_and_shapes(name):
    detector = build_detector(name)
    first = 50 + _gaussian((20, 20)) + 2 * _noise(3)
    second = torch.linspace(20, 100, SIZE).view(-1, 1).expand(SIZE, SIZE) + _gaussian((40, 45)) + 2 * _noise(4)
    batch = torch.stack([first, second]).unsqueeze(1)
    saliency = detector.saliency(batch)
    assert saliency.shape == batch.shape and saliency.dtype == batch.dtype
    for i, image in enumerate((first, second)):
        alone = detector.saliency(image.view(1, 1, SIZE, SIZE))
        torch.testing.assert_close(saliency[i:i + 1], alone)
    mask = detector(batch)
    assert mask.shape == batch.shape and mask.dtype == torch.bool
    assert torch.equal(mask[1:], detector(second.view(1, 1, SIZE, SIZE)))
