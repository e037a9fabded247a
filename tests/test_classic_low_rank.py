"""IPI and PSTNN on small synthetic frames: target found, solver converges, smooth background stays quiet, batching."""

from __future__ import annotations

import pytest
import torch

from irstd.classic import build_detector
from irstd.classic.low_rank import IPI, PSTNN, _Patches

SIZE = 80
CENTRE = (40, 45)
# patch and step scaled to the 80 x 80 frames (paper defaults: IPI 50/10, PSTNN 40/40)
SMALL = {"ipi": dict(patch_size=20, step=10), "pstnn": dict(patch_size=20, step=20)}


# small SVDs: extra threads only add contention on a shared machine (seconds instead of milliseconds)
pytestmark = pytest.mark.usefixtures("one_thread")


def ramp() -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.arange(SIZE), torch.arange(SIZE), indexing="ij")
    return (60 + 0.5 * xx + 0.3 * yy).float()[None, None]


def frame(seed: int = 0, centre: tuple[int, int] = CENTRE) -> torch.Tensor:
    """Ramp background, mild noise and a bright Gaussian blob (sigma 1.5 px, peak 80 grey levels)."""
    generator = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(SIZE), torch.arange(SIZE), indexing="ij")
    target = 80 * torch.exp(-((yy - centre[0]) ** 2 + (xx - centre[1]) ** 2) / (2 * 1.5**2))
    return ramp() + target + torch.randn(1, 1, SIZE, SIZE, generator=generator)


@pytest.mark.parametrize("name", ["ipi", "pstnn"])
def test_bright_target_is_detected(name):
    detector = build_detector(name, **SMALL[name])
    mask = detector(frame())
    assert mask.shape == (1, 1, SIZE, SIZE) and mask.dtype == torch.bool
    assert mask[0, 0, CENTRE[0], CENTRE[1]]
    yy, xx = mask[0, 0].nonzero().T
    far = ((yy - CENTRE[0]).abs() > 4) | ((xx - CENTRE[1]).abs() > 4)
    assert int(far.sum()) <= 3, "false pixels away from the target"


@pytest.mark.parametrize("detector", [IPI(**SMALL["ipi"]), PSTNN(**SMALL["pstnn"], stop_on_stable_support=False)],
                         ids=["ipi", "pstnn"])
def test_solver_reaches_tolerance(detector):
    detector.saliency(frame())
    assert detector.last_iterations[0] < detector.max_iter
    assert detector.last_residual[0] < detector.tol


def test_pstnn_support_stop_ends_early():
    detector = PSTNN(**SMALL["pstnn"])
    detector.saliency(frame())
    assert 1 <= detector.last_iterations[0] < detector.max_iter


@pytest.mark.parametrize("name", ["ipi", "pstnn"])
def test_smooth_background_gives_no_detection(name):
    detector = build_detector(name, **SMALL[name])
    saliency = detector.saliency(ramp())
    assert saliency.max() < 1.0
    assert not detector.segment(saliency).any()


@pytest.mark.parametrize("name", ["ipi", "pstnn"])
def test_batch_equals_each_alone(name):
    detector = build_detector(name, **SMALL[name])
    images = [frame(seed=1), frame(seed=2, centre=(20, 60))]
    batched = detector.saliency(torch.cat(images))
    assert len(detector.last_iterations) == 2
    for i, image in enumerate(images):
        torch.testing.assert_close(batched[i : i + 1], detector.saliency(image))


@pytest.mark.parametrize("reduce", ["mean", "median"])
def test_patches_fold_back_any_image(reduce):
    # 37 is not on the step grid: the extra border patch must still cover every pixel exactly
    image = torch.rand(37, 29, dtype=torch.float64)
    patches = _Patches(37, 29, patch=10, step=4, device=image.device)
    torch.testing.assert_close(patches.fold(patches.cut(image), reduce), image)
