"""Round-0 pseudo-masks grown from points: diffusion (Diffuse-to-Detect) and Monte Carlo clustering (MCLC).

Hand-made images pin each rule; property tests hold the batched functions to their sequential references.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage

from irstd.labels.init import diffusion_pseudo_masks, monte_carlo_clustering_masks
from irstd.labels.init.reference import diffusion_pseudo_masks_reference, monte_carlo_clustering_masks_reference

INITIALISERS = [diffusion_pseudo_masks, monte_carlo_clustering_masks]


pytestmark = pytest.mark.usefixtures("one_thread")  # small windows make small tensors


def full_hw(tensor: torch.Tensor) -> torch.Tensor:
    return torch.tensor([tensor.shape[2:]] * tensor.shape[0], device=tensor.device)


def point_map(shape: tuple[int, int], *pixels: tuple[int, int]) -> np.ndarray:
    points = np.zeros(shape)
    for row, col in pixels:
        points[row, col] = 1
    return points


def grow(initialiser, image: torch.Tensor, points: np.ndarray, **kwargs) -> np.ndarray:
    """The initialiser's B x H x W (or H x W for one image) boolean masks, as numpy."""
    points = torch.as_tensor(points, dtype=image.dtype, device=image.device).view(image.shape)
    masks = initialiser(image, points, full_hw(image), **kwargs)
    return masks[:, 0].cpu().numpy().squeeze(0) > 0.5


def equivalent_radius(mask: np.ndarray) -> float:
    return float(np.sqrt(mask.sum() / np.pi))


# ---------------------------------------------------------------------------------------------------------------
# Diffusion: edges hold the heat back; flat ground lets it spread


@pytest.mark.parametrize("point", [(20, 20), (17, 22), (23, 16)], ids=["centre", "off-centre", "near-corner"])
@pytest.mark.parametrize("threshold", [None, 0.2], ids=["otsu", "fraction"])
def test_diffusion_stops_at_a_strong_edge(to_tensor, point, threshold):
    square = np.zeros((48, 48), dtype=bool)
    square[15:25, 15:25] = True
    image = np.where(square, 200.0, 50.0)
    mask = grow(diffusion_pseudo_masks, to_tensor(image), point_map(image.shape, point), threshold=threshold)
    assert not (mask & ~square).any(), "the mask leaks across the square's edge"
    assert mask[ndimage.binary_erosion(square)].all(), "the mask misses more than the square's outer ring"


def test_diffusion_grows_over_a_flat_blob(to_tensor):
    rows, cols = np.mgrid[:64, :64]
    blob = (rows - 30) ** 2 + (cols - 34) ** 2 <= 6**2
    image = np.where(blob, 120.0, 40.0)
    image[5:12, 45:60] = 250  # brighter clutter elsewhere in the window must not matter
    mask = grow(diffusion_pseudo_masks, to_tensor(image), point_map(image.shape, (28, 33)))
    assert mask.sum() > 0.9 * blob.sum()
    assert not (mask & ~ndimage.binary_dilation(blob)).any()
    assert mask[ndimage.binary_erosion(blob)].all()


def test_diffusion_with_no_time_keeps_the_point_alone(to_tensor):
    image = np.random.default_rng(0).random((24, 24))
    mask = grow(diffusion_pseudo_masks, to_tensor(image), point_map(image.shape, (9, 14)), steps=0)
    assert mask.sum() == 1 and mask[9, 14]


# ---------------------------------------------------------------------------------------------------------------
# Clustering: the point's segment, voted over trials


@pytest.mark.parametrize("sigma", [1.5, 2.0, 3.0, 4.0])
def test_clustering_recovers_a_gaussian_blobs_extent(to_tensor, sigma):
    """The extent of a blob I = b + a exp(-r^2 / 2 sigma^2) is its half-maximum disc, the pixels where the blob
    rises at least half its height above the background: two-class clustering of intensity cuts at about the
    midpoint of the two classes, and the vote at 0.5 keeps what most trials put on the target's side."""
    rows, cols = np.mgrid[:64, :64]
    bump = np.exp(-((rows - 31.3) ** 2 + (cols - 32.6) ** 2) / (2 * sigma**2))
    noise = np.random.default_rng(7).normal(0, 2, bump.shape)
    image = 60 + 140 * bump + noise
    mask = grow(monte_carlo_clustering_masks, to_tensor(image), point_map(image.shape, (31, 32)))
    assert abs(equivalent_radius(mask) - equivalent_radius(bump >= 0.5)) <= 1


def test_clustering_keeps_a_bright_square(to_tensor):
    square = np.zeros((48, 48), dtype=bool)
    square[20:27, 18:25] = True
    image = np.where(square, 220.0, 30.0)
    mask = grow(monte_carlo_clustering_masks, to_tensor(image), point_map(image.shape, (22, 23)))
    assert np.array_equal(mask, square)


def test_clustering_is_seeded_and_independent_of_the_batch():
    rng = np.random.default_rng(3)
    images = torch.as_tensor(ndimage.gaussian_filter(rng.random((3, 1, 40, 40)), (0, 0, 1.5, 1.5)) * 255)
    points = torch.zeros_like(images)
    points[0, 0, 12, 20] = points[1, 0, 30, 8] = points[2, 0, 20, 20] = 1
    hw = full_hw(images)
    first = monte_carlo_clustering_masks(images, points, hw, seed=5)
    assert torch.equal(first, monte_carlo_clustering_masks(images, points, hw, seed=5))
    alone = monte_carlo_clustering_masks(images[1:2], points[1:2], hw[1:2], seed=5)
    assert torch.equal(alone, first[1:2]), "an image's masks changed with the images batched beside it"
    seeds = {monte_carlo_clustering_masks(images, points, hw, seed=seed).sum().item() for seed in range(6)}
    assert len(seeds) > 1, "the seed does not reach the random draws"


# ---------------------------------------------------------------------------------------------------------------
# Contract shared by both: dtype, device, padding, points, intensity units, bad input


@pytest.mark.parametrize("initialiser", INITIALISERS)
def test_output_dtype_device_padding_and_points(to_tensor, initialiser):
    rng = np.random.default_rng(11)
    image = to_tensor(ndimage.gaussian_filter(rng.random((2, 40, 44)), (0, 2, 2)) * 1000)
    valid_hw = torch.tensor([[40, 44], [25, 30]], device=image.device)
    # Padding full of NaN and extreme values must never be read.
    image[1, 0, 25:] = torch.nan
    image[1, 0, :, 30:] = 1e30
    points = torch.zeros_like(image)
    points[0, 0, 5, 6] = points[0, 0, 30, 40] = points[1, 0, 12, 15] = points[1, 0, 24, 29] = 1
    points[1, 0, 30, 10] = points[1, 0, 3, 35] = 1  # in the padding: ignored
    masks = initialiser(image, points, valid_hw)
    assert masks.dtype == image.dtype and masks.device == image.device and masks.shape == image.shape
    assert not torch.isnan(masks).any()
    assert set(masks.unique().tolist()) <= {0.0, 1.0}
    assert (masks[1, 0, 25:] == 0).all() and (masks[1, 0, :, 30:] == 0).all()
    inside = points.clone()
    inside[1, 0, 25:] = inside[1, 0, :, 30:] = 0
    assert (masks[inside > 0.5] == 1).all(), "a point pixel was lost"
    alone = initialiser(image[1:2, :, :25, :30].contiguous(), points[1:2, :, :25, :30].contiguous(),
                        valid_hw[1:2])
    assert torch.equal(masks[1:2, :, :25, :30], alone), "the padding changed the valid region's masks"


@pytest.mark.parametrize("initialiser", INITIALISERS)
def test_no_points_give_zeros(to_tensor, initialiser):
    image = to_tensor(np.random.default_rng(0).random((2, 16, 16)))
    masks = initialiser(image, torch.zeros_like(image), full_hw(image))
    assert masks.shape == image.shape and (masks == 0).all()


@pytest.mark.parametrize("initialiser", INITIALISERS)
def test_two_points_on_one_pixel_are_one_target(to_tensor, initialiser):
    image = to_tensor(ndimage.gaussian_filter(np.random.default_rng(2).random((40, 40)), 2) * 255)
    once = torch.zeros_like(image)
    once[0, 0, 20, 18] = 1
    assert torch.equal(initialiser(image, once * 2, full_hw(image)), initialiser(image, once, full_hw(image)))


@pytest.mark.parametrize("initialiser", INITIALISERS)
@pytest.mark.parametrize("ground", ["flat", "saturated"])
def test_a_point_on_flat_or_saturated_ground(to_tensor, initialiser, ground):
    """No NaN, no crash: with one intensity in the window, the mask is a compact region around the point,
    bounded by the window (a disc of heat; the grid cell around the point)."""
    image = np.full((64, 64), 7.0)
    if ground == "saturated":
        image = np.random.default_rng(0).uniform(0, 200, (64, 64))
        image[10:54, 10:54] = 255
    mask = grow(initialiser, to_tensor(image), point_map(image.shape, (32, 31)))
    rows, cols = np.nonzero(mask)
    assert mask[32, 31] and mask.sum() > 1
    assert max(np.abs(rows - 32).max(), np.abs(cols - 31).max()) <= 15


@pytest.mark.parametrize("initialiser", INITIALISERS)
def test_invariant_to_an_affine_change_of_intensity(to_tensor, initialiser):
    rng = np.random.default_rng(4)
    image = np.round(ndimage.gaussian_filter(rng.random((48, 48)), 1.5) * 255)
    image[20:24, 30:33] += 80
    points = point_map(image.shape, (21, 31), (8, 9), (40, 12))
    assert np.array_equal(grow(initialiser, to_tensor(image), points),
                          grow(initialiser, to_tensor(3 * image + 7), points))


@pytest.mark.parametrize(("initialiser", "key", "value"), [
    (diffusion_pseudo_masks, "window", 30),
    (diffusion_pseudo_masks, "threshold", 1.5),
    (diffusion_pseudo_masks, "gradient_weight", -0.1),
    (diffusion_pseudo_masks, "dt", 0.0),
    (monte_carlo_clustering_masks, "half_extent", (8, 4)),
    (monte_carlo_clustering_masks, "trials", 0),
    (monte_carlo_clustering_masks, "salt", 1.0),
    (monte_carlo_clustering_masks, "compactness", 0.0),
])
def test_bad_settings_name_their_key(initialiser, key, value):
    image = torch.zeros(1, 1, 8, 8)
    with pytest.raises(ValueError, match=key):
        initialiser(image, image, full_hw(image), **{key: value})


@pytest.mark.parametrize("initialiser", INITIALISERS)
def test_bad_tensors_are_named(initialiser):
    image = torch.zeros(1, 1, 8, 8)
    with pytest.raises(ValueError, match="points"):
        initialiser(image, torch.zeros(1, 1, 8, 7), full_hw(image))
    with pytest.raises(ValueError, match="valid_hw"):
        initialiser(image, image, torch.tensor([[9, 8]]))


# ---------------------------------------------------------------------------------------------------------------
# Property tests against the sequential references (float64: both sides then agree to rounding, far from any
# level boundary or tie that would flip a pixel)


@st.composite
def point_cases(draw):
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    batch = draw(st.integers(1, 3))
    height, width = draw(st.integers(6, 40)), draw(st.integers(6, 40))
    valid_hw = np.array([(draw(st.integers(1, height)), draw(st.integers(1, width))) for _ in range(batch)])
    smooth = ndimage.gaussian_filter(rng.random((batch, 1, height, width)), (0, 0, *rng.uniform(0.5, 3, 2)))
    image = smooth * rng.uniform(1, 1000) + rng.normal(0, 0.01, smooth.shape)
    points = np.zeros_like(image)
    for _ in range(rng.integers(0, 7)):
        b, row, col = rng.integers(batch), rng.integers(height), rng.integers(width)
        image[b, 0] += rng.uniform(0, 3) * np.exp(-((np.arange(height)[:, None] - row) ** 2
                                                    + (np.arange(width)[None, :] - col) ** 2) / rng.uniform(1, 20))
        points[b, 0, row, col] = 1
        if rng.random() < 0.3:  # a second pixel, touching or not: one target or two
            points[b, 0, min(row + rng.integers(0, 3), height - 1), min(col + 1, width - 1)] = 1
    return image, points, valid_hw


@settings(max_examples=60, deadline=None)
@given(case=point_cases(), window=st.sampled_from([3, 5, 9, 15]), steps=st.sampled_from([0, 2, 8]),
       threshold=st.sampled_from([None, 0.3]), drift=st.sampled_from([0.0, 1.0]),
       footprint=st.sampled_from([1, 3, 5]))
def test_diffusion_matches_the_reference(case, window, steps, threshold, drift, footprint):
    image, points, valid_hw = case
    settings_ = dict(window=window, steps=steps, threshold=threshold, drift=drift, entropy_footprint=footprint)
    batched = diffusion_pseudo_masks(torch.from_numpy(image), torch.from_numpy(points), torch.from_numpy(valid_hw),
                                     **settings_)
    np.testing.assert_array_equal(batched.numpy(), diffusion_pseudo_masks_reference(image, points, valid_hw,
                                                                                   **settings_))


@settings(max_examples=60, deadline=None)
@given(case=point_cases(), trials=st.sampled_from([1, 4]), half_extent=st.sampled_from([(0, 2), (3, 3), (2, 7)]),
       per_side=st.sampled_from([1, 2, 3]), iterations=st.sampled_from([1, 4]),
       threshold=st.sampled_from([0.0, 0.5]), seed=st.integers(0, 2**31))
def test_clustering_matches_the_reference(case, trials, half_extent, per_side, iterations, threshold, seed):
    image, points, valid_hw = case
    settings_ = dict(trials=trials, half_extent=half_extent, segments_per_side=per_side, iterations=iterations,
                     threshold=threshold, seed=seed)
    batched = monte_carlo_clustering_masks(torch.from_numpy(image), torch.from_numpy(points),
                                           torch.from_numpy(valid_hw), **settings_)
    np.testing.assert_array_equal(batched.numpy(), monte_carlo_clustering_masks_reference(image, points, valid_hw,
                                                                                         **settings_))


@pytest.mark.parametrize(("initialiser", "reference"), [
    (diffusion_pseudo_masks, diffusion_pseudo_masks_reference),
    (monte_carlo_clustering_masks, monte_carlo_clustering_masks_reference),
])
def test_defaults_match_the_reference(initialiser, reference):
    rng = np.random.default_rng(9)
    image = ndimage.gaussian_filter(rng.random((2, 1, 56, 60)), (0, 0, 2, 2)) * 255
    points = np.zeros_like(image)
    points[0, 0, 10, 12] = points[0, 0, 40, 41] = points[1, 0, 28, 30] = points[1, 0, 55, 0] = 1
    valid_hw = np.array([[56, 60], [56, 52]])
    batched = initialiser(torch.from_numpy(image), torch.from_numpy(points), torch.from_numpy(valid_hw))
    np.testing.assert_array_equal(batched.numpy(), reference(image, points, valid_hw))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("initialiser", INITIALISERS)
def test_cuda_matches_cpu(initialiser):
    rng = np.random.default_rng(12)
    image = torch.as_tensor(ndimage.gaussian_filter(rng.random((3, 1, 64, 64)), (0, 0, 2, 2)) * 255)
    points = torch.zeros_like(image)
    points[0, 0, 10, 12] = points[1, 0, 40, 41] = points[2, 0, 63, 63] = 1
    on_cpu = initialiser(image, points, full_hw(image))
    on_cuda = initialiser(image.cuda(), points.cuda(), full_hw(image).cuda())
    assert torch.equal(on_cpu, on_cuda.cpu())
