"""Study targets of irstd.data.synthetic: Gaussian and real-shaped targets, placement, point labels, backgrounds."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image

from irstd.data import synthetic as syn
from tests.conftest import SIRST, requires_sirst


@pytest.mark.parametrize(("radius", "peak"), [(3, 10.0), (7.5, 500.0)])
def test_gaussian_target_peaks_at_the_centre_and_its_mask_is_the_radius_disk(radius, peak):
    signal, mask = syn.gaussian_target(radius, peak)
    half = signal.shape[0] // 2
    assert signal.shape == mask.shape and signal.shape[0] % 2 == 1
    assert signal[half, half] == pytest.approx(peak)
    yy, xx = np.mgrid[-half:half + 1, -half:half + 1]
    np.testing.assert_array_equal(mask, np.hypot(yy, xx) <= radius)
    assert mask.sum() == pytest.approx(math.pi * radius**2, rel=0.15)
    np.testing.assert_array_equal(mask, signal >= syn.MASK_FRACTION * peak - 1e-9)
    border = np.concatenate([signal[0], signal[-1], signal[:, 0], signal[:, -1]])
    assert border.max() < 1e-3 * peak


def test_gaussian_target_refuses_a_non_positive_radius():
    with pytest.raises(ValueError, match="radius"):
        syn.gaussian_target(0, 100)


def test_shaped_target_keeps_the_shape_exactly():
    shape = np.zeros((9, 9), dtype=bool)
    shape[1:8, 1:4] = True  # an L: a bar and a foot
    shape[5:8, 1:8] = True
    signal, mask = syn.shaped_target(shape, 200.0)
    assert signal.max() == pytest.approx(200.0)
    rows, cols = np.nonzero(mask)
    np.testing.assert_array_equal(mask[rows.min():rows.max() + 1, cols.min():cols.max() + 1], shape[1:8, 1:8])
    np.testing.assert_array_equal(mask, signal >= syn.MASK_FRACTION * 200.0)
    assert signal.shape[0] % 2 == 1 and signal.shape[1] % 2 == 1
    assert signal[0].max() < 1e-3 * 200.0


def test_shaped_target_refuses_two_components():
    shape = np.zeros((5, 5), dtype=bool)
    shape[0, 0] = shape[4, 4] = True
    with pytest.raises(ValueError, match="one 8-connected component"):
        syn.shaped_target(shape, 100.0)


def test_place_target_adds_the_signal_centred_and_refuses_to_cut_the_mask():
    background = np.full((32, 32), 50.0, dtype=np.float32)
    signal, footprint = syn.gaussian_target(2, 100.0)
    image, mask = syn.place_target(background, signal, footprint, 10, 20)
    assert image[10, 20] == pytest.approx(150.0)
    half = signal.shape[0] // 2
    window = (slice(10 - half, 10 + half + 1), slice(20 - half, 20 + half + 1))
    np.testing.assert_allclose(image[window] - 50.0, signal, atol=1e-4)
    np.testing.assert_array_equal(mask[window], footprint)
    outside = np.ones_like(mask)
    outside[window] = False
    assert (image[outside] == 50.0).all() and not mask[outside].any()
    assert syn.centroid_pixel(mask) == (10, 20)
    assert mask.sum() == footprint.sum()
    assert background[10, 20] == 50.0  # the background is not modified
    # the signal's tail may leave the frame, the mask may not
    syn.place_target(background, signal, footprint, 2, 2)
    with pytest.raises(ValueError, match="leaves"):
        syn.place_target(background, signal, footprint, 1, 16)


def test_offset_point_moves_from_the_centroid_by_the_distance_and_angle():
    _, mask = syn.place_target(np.zeros((40, 40)), *syn.gaussian_target(5, 100.0), 20, 20)
    assert syn.offset_point(mask, 0) == (20, 20)
    assert syn.offset_point(mask, 3, 0) == (20, 23)
    assert syn.offset_point(mask, 3, 90) == (17, 20)
    assert syn.offset_point(mask, 8, 0) == (20, 28)  # beyond the target's edge, as a label may be
    with pytest.raises(ValueError, match="outside the 40x40 frame"):
        syn.offset_point(mask, 25, 180)


def test_spread_points_are_distinct_target_pixels_starting_at_the_centroid():
    _, mask = syn.place_target(np.zeros((40, 40)), *syn.gaussian_target(6, 100.0), 20, 21)
    points = syn.spread_points(mask, 12, np.random.default_rng(4))
    assert points[0] == syn.centroid_pixel(mask)
    assert len(set(points)) == 12 and all(mask[p] for p in points)
    assert points == syn.spread_points(mask, 12, np.random.default_rng(4))
    label = syn.points_label(points, mask.shape)
    assert label.sum() == 12 and label.dtype == np.float32
    with pytest.raises(ValueError, match="count"):
        syn.spread_points(mask, int(mask.sum()) + 1, np.random.default_rng(0))


def test_generated_backgrounds_are_seeded_per_index():
    first = syn.generated_backgrounds(2, 48, seed=1)
    again = syn.generated_backgrounds(3, 48, seed=1)
    np.testing.assert_array_equal(first[1], again[1])
    assert not np.array_equal(first[0], first[1])
    assert first[0].shape == (48, 48) and first[0].dtype == np.float32


def _write_dataset(root, size=(40, 64)) -> None:
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    image = np.full(size, 60, dtype=np.uint8)
    mask = np.zeros(size, dtype=np.uint8)
    mask[5:9, 40:44] = 255  # a target near the top right
    image[mask > 0] = 250
    Image.fromarray(image).save(root / "images" / "frame.png")
    Image.fromarray(mask).save(root / "masks" / "frame.png")


def test_real_background_crops_avoid_targets(tmp_path):
    _write_dataset(tmp_path)
    crops = syn.real_background_crops(tmp_path, 5, 24, np.random.default_rng(0))
    assert len(crops) == 5
    assert all(crop.shape == (24, 24) and crop.max() == 60 for crop in crops)  # never the 250 target
    with pytest.raises(ValueError, match=str(tmp_path)):
        syn.real_background_crops(tmp_path, 1, 48, np.random.default_rng(0))  # larger than the frame


def test_real_background_crops_keep_5_px_from_targets_also_diagonally(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    # Each pixel's gray level encodes its position, so a crop's corner tells where it was cut.
    image = np.arange(16 * 16, dtype=np.uint8).reshape(16, 16)
    mask = np.zeros((16, 16), dtype=np.uint8)
    mask[0, 0] = 255
    Image.fromarray(image).save(tmp_path / "images" / "frame.png")
    Image.fromarray(mask).save(tmp_path / "masks" / "frame.png")
    crops = syn.real_background_crops(tmp_path, 30, 8, np.random.default_rng(0))
    corners = [divmod(int(crop[0, 0]), 16) for crop in crops]
    # More than 5 px in rows or columns (Chebyshev), hence more than 5 px in Euclidean distance too.
    assert all(max(row, col) > 5 for row, col in corners), corners


def test_real_target_shapes_read_the_largest_component_and_name_missing_files(tmp_path):
    _write_dataset(tmp_path)
    shapes = syn.real_target_shapes(tmp_path, ["frame"])
    np.testing.assert_array_equal(shapes["frame"], np.ones((4, 4), dtype=bool))
    with pytest.raises(FileNotFoundError, match="nothere"):
        syn.real_target_shapes(tmp_path, ["nothere"])


@requires_sirst
def test_real_target_shapes_from_sirst_are_single_targets():
    shapes = syn.real_target_shapes(SIRST, ["Misc_103", "Misc_90"])
    for name, shape in shapes.items():
        assert shape.sum() > 10, name
        signal, mask = syn.shaped_target(shape, 100.0)
        assert mask.sum() == shape.sum()
