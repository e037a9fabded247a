"""PAL's progressive rule: the easy-set test, the admission schedule and the label update with background decay,
on hand-made images, and the batched functions against their sequential references."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import DEVICES, DTYPES
from irstd.labels.update.pal import (
    AdmissionSchedule,
    admission_scores,
    admitted_labels,
    easy_set_labels,
    easy_targets,
    pal_update,
)
from irstd.labels.update.reference import easy_set_reference, pal_update_reference

FLAT = 50.0
BRIGHT = 200.0


def hw(*sizes: tuple[int, int]) -> torch.Tensor:
    return torch.tensor(sizes, dtype=torch.int64)


def point_map(shape: tuple[int, int], *points: tuple[int, int]) -> np.ndarray:
    points_map = np.zeros(shape)
    for point in points:
        points_map[point] = 1.0
    return points_map


def ring(shape: tuple[int, int], centre: tuple[int, int], radius: float) -> np.ndarray:
    rows, cols = np.indices(shape)
    return np.abs(np.hypot(rows - centre[0], cols - centre[1]) - radius) < 0.6


def is_easy(to_tensor, image: np.ndarray, point: tuple[int, int], **options) -> bool:
    target_easy, image_easy = easy_targets(to_tensor(image), to_tensor(point_map(image.shape, point)),
                                           hw(image.shape), **options)
    assert target_easy.shape == (1,) and image_easy.shape == (1,)
    return bool(target_easy[0])


# ---------------------------------------------------------------------------------------------------------------
# Easy set: a closed edge contour around the point


@pytest.mark.parametrize("side", [3, 5])
def test_bright_square_around_the_point_is_easy(to_tensor, side):
    image = np.full((40, 40), FLAT)
    image[18: 18 + side, 18: 18 + side] = BRIGHT
    assert is_easy(to_tensor, image, (18 + side // 2, 18 + side // 2))


def test_bright_ring_around_the_point_is_easy_and_its_inside_becomes_the_label(to_tensor):
    image = np.full((40, 40), FLAT)
    image[ring(image.shape, (20, 20), 2)] = BRIGHT
    points = point_map(image.shape, (20, 20))
    labels, image_easy = easy_set_labels(to_tensor(image), to_tensor(points), hw((40, 40)))
    assert bool(image_easy[0])
    label = labels[0, 0].cpu().numpy()
    assert label[ring(image.shape, (20, 20), 2)].all() and label[20, 20] == 1  # the ring and its inside
    rows, cols = np.nonzero(label)
    assert rows.min() >= 16 and rows.max() <= 24 and cols.min() >= 16 and cols.max() <= 24
    assert set(np.unique(label)) == {0.0, 1.0}


def test_closed_contour_larger_than_max_area_is_hard(to_tensor):
    image = np.full((40, 40), FLAT)
    image[ring(image.shape, (20, 20), 4)] = BRIGHT
    assert not is_easy(to_tensor, image, (20, 20))
    assert is_easy(to_tensor, image, (20, 20), max_area=200)


def test_open_ring_is_hard_however_large_max_area(to_tensor):
    image = np.full((40, 40), FLAT)
    open_ring = ring(image.shape, (20, 20), 4)
    open_ring[17:24, 20:] = False  # a gap 7 pixels wide: the 3 x 3 closing cannot bridge it
    image[open_ring] = BRIGHT
    assert not is_easy(to_tensor, image, (20, 20), max_area=1000)


def test_bar_crossing_the_window_is_hard(to_tensor):
    image = np.full((40, 40), FLAT)
    image[19:22, :] = BRIGHT
    assert not is_easy(to_tensor, image, (20, 20), max_area=1000)


def test_one_pixel_line_through_the_point_counts_as_enclosed_by_its_edge_band(to_tensor):
    # PAL's rule, pinned: the closing fuses the edges on both sides of a 1-pixel line into a 3-pixel band through
    # the point, whose outer contour (3 x 20 pixels, area 2 x 19 = 38) is within max_area.
    image = np.full((40, 40), FLAT)
    image[20, :] = BRIGHT
    assert is_easy(to_tensor, image, (20, 20))
    assert not is_easy(to_tensor, image, (20, 20), max_area=37)


@pytest.mark.parametrize("kind", ["ramp", "flat", "saturated"])
def test_no_edges_means_hard(to_tensor, kind):
    columns = np.round(np.linspace(0, 250, 40))
    image = {"ramp": np.tile(columns, (40, 1)), "flat": np.full((40, 40), FLAT),
             "saturated": np.full((40, 40), 255.0)}[kind]
    assert not is_easy(to_tensor, image, (20, 20))


def test_square_beside_the_point_is_hard(to_tensor):
    image = np.full((40, 40), FLAT)
    image[17:22, 17:22] = BRIGHT
    assert is_easy(to_tensor, image, (19, 19))
    assert not is_easy(to_tensor, image, (25, 25))


def test_window_is_clipped_at_the_image_corner(to_tensor):
    image = np.full((40, 40), FLAT)
    image[0:3, 0:3] = BRIGHT
    assert is_easy(to_tensor, image, (1, 1))


def test_image_is_easy_when_at_least_min_easy_fraction_of_its_targets_are(to_tensor):
    image = np.full((60, 60), FLAT)
    easy_points = [(10, 10), (10, 45), (45, 10), (45, 45)]
    for row, col in easy_points:
        image[row - 1: row + 2, col - 1: col + 2] = BRIGHT
    points = point_map(image.shape, *easy_points, (28, 28))  # the fifth lies on flat background
    target_easy, image_easy = easy_targets(to_tensor(image), to_tensor(points), hw((60, 60)))
    assert target_easy.tolist() == [True, True, False, True, True]  # raster order of the points
    assert image_easy.tolist() == [True]  # 4 of 5 is exactly 0.8
    points[45, 45] = 0
    points[52, 52] = 1  # one more point on flat background: 3 of 5
    _, image_easy = easy_targets(to_tensor(image), to_tensor(points), hw((60, 60)))
    assert image_easy.tolist() == [False]


def test_image_without_points_is_easy_and_padding_is_ignored(to_tensor):
    image = np.full((2, 40, 40), FLAT)
    image[1, 30:33, 30:33] = BRIGHT
    points = np.zeros((2, 40, 40))
    points[0, 35, 35] = 1.0  # in image 0's padding: ignored
    points[1, 31, 31] = 1.0
    target_easy, image_easy = easy_targets(to_tensor(image), to_tensor(points), hw((30, 30), (40, 40)))
    assert target_easy.tolist() == [True]
    assert image_easy.tolist() == [True, True]
    labels, _ = easy_set_labels(to_tensor(image), to_tensor(points), hw((30, 30), (40, 40)))
    assert labels[0].sum() == 0


def test_batched_images_give_the_same_as_one_at_a_time(to_tensor):
    rng = np.random.default_rng(5)
    images, points = _random_scenes(rng, 3, 36, 44)
    sizes = hw((36, 44), (30, 20), (12, 40))
    target_easy, image_easy = easy_targets(to_tensor(images), to_tensor(points), sizes)
    singles = [easy_targets(to_tensor(images[b][None, :h, :w]), to_tensor(points[b][None, :h, :w]), hw((h, w)))
               for b, (h, w) in enumerate(sizes.tolist())]
    assert target_easy.tolist() == [flag for single in singles for flag in single[0].tolist()]
    assert image_easy.tolist() == [bool(single[1][0]) for single in singles]


def _random_scenes(rng: np.random.Generator, batch: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Noisy 8-bit backgrounds with bright squares, rings and bars, and points on, beside and away from them."""
    images = np.round(rng.normal(rng.uniform(30, 120), rng.uniform(0, 6), (batch, height, width)))
    points = np.zeros((batch, height, width))
    for b in range(batch):
        for _ in range(rng.integers(0, 6)):
            row, col = int(rng.integers(0, height)), int(rng.integers(0, width))
            shape = rng.integers(0, 3)
            if shape == 0:
                images[b, max(row - 1, 0): row + rng.integers(1, 4), max(col - 1, 0): col + rng.integers(1, 4)] += 120
            elif shape == 1:
                images[b][ring((height, width), (row, col), rng.uniform(1, 4))] += 120
            else:
                images[b, row, :] += 120
            points[b, np.clip(row + rng.integers(-2, 3), 0, height - 1), np.clip(col + rng.integers(-2, 3), 0,
                                                                                   width - 1)] = 1.0
    return np.clip(images, 0, 255), points


@st.composite
def easy_cases(draw):
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    batch, height, width = draw(st.integers(1, 3)), draw(st.integers(4, 40)), draw(st.integers(4, 40))
    images, points = _random_scenes(rng, batch, height, width)
    valid_hw = np.array([(draw(st.integers(1, height)), draw(st.integers(1, width))) for _ in range(batch)])
    for b, (h, w) in enumerate(valid_hw):  # garbage padding: points and edges there must not count
        images[b, h:, :] = images[b, :, w:] = np.nan
        points[b, h:, :] = points[b, :, w:] = rng.choice([0.0, 1.0])
    options = dict(half_window=draw(st.sampled_from([3, 6, 10])), max_area=draw(st.sampled_from([10.0, 50.0])),
                   min_easy_fraction=draw(st.sampled_from([0.5, 0.8, 1.0])))
    return images[:, None], points[:, None], valid_hw, options, draw(st.sampled_from(DTYPES))


@pytest.mark.parametrize("device", DEVICES)
@settings(max_examples=40, deadline=None)
@given(case=easy_cases())
def test_easy_set_matches_sequential_reference(device, case):
    images, points, valid_hw, options, dtype = case
    expected_targets, expected_images, expected_labels = easy_set_reference(images, points, valid_hw, **options)
    image_t = torch.as_tensor(images, dtype=dtype, device=device)
    points_t = torch.as_tensor(points, dtype=dtype, device=device)
    target_easy, image_easy = easy_targets(image_t, points_t, torch.from_numpy(valid_hw), **options)
    labels, _ = easy_set_labels(image_t, points_t, torch.from_numpy(valid_hw), **options)
    assert target_easy.cpu().tolist() == expected_targets.tolist()
    assert image_easy.cpu().tolist() == expected_images.tolist()
    torch.testing.assert_close(labels.cpu(), torch.as_tensor(expected_labels, dtype=dtype))


@pytest.mark.parametrize("density", [0.3, 0.5, 0.7])
def test_both_background_labellers_give_the_same_4_connected_components(density):
    from irstd.labels.update.pal import _background_components_nodes, _background_components_scipy

    rng = np.random.default_rng(int(density * 10))
    background = torch.from_numpy(rng.random((12, 15, 17)) < density)
    scipy_labels = _background_components_scipy(background).flatten()
    node_labels = _background_components_nodes(background).flatten()
    pairs = torch.unique(torch.stack([scipy_labels, node_labels]), dim=1)
    # the same partition: each label of one labeller matches exactly one label of the other
    assert pairs.shape[1] == torch.unique(scipy_labels).numel() == torch.unique(node_labels).numel()
    assert torch.equal(scipy_labels == 0, node_labels == 0)


def test_easy_set_rejects_bad_arguments():
    image, points = torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 8)
    with pytest.raises(ValueError, match="low_threshold"):
        easy_targets(image, points, hw((8, 8)), low_threshold=50.0, high_threshold=40.0)
    with pytest.raises(ValueError, match="min_easy_fraction"):
        easy_targets(image, points, hw((8, 8)), min_easy_fraction=1.5)
    with pytest.raises(ValueError, match="points"):
        easy_targets(image, torch.zeros(1, 1, 8, 9), hw((8, 8)))
    with pytest.raises(ValueError, match="valid_hw"):
        easy_targets(image, points, hw((9, 8)))


# ---------------------------------------------------------------------------------------------------------------
# Admission of hard images


def test_admission_scores_count_missed_points_and_spurious_regions(to_tensor):
    pred = np.zeros((3, 30, 30))
    points = np.zeros((3, 30, 30))
    # image 0: three points; regions on two of them and one elsewhere
    points[0, 5, 5] = points[0, 5, 20] = points[0, 20, 5] = 1
    pred[0, 4:7, 4:7] = pred[0, 5, 20] = pred[0, 25:28, 25:28] = 0.9
    # image 1: the point sits in the hole of a predicted ring, which PAL's filled contours count as found
    points[1, 15, 15] = 1
    pred[1][ring((30, 30), (15, 15), 3)] = 0.9
    # image 2: no points, but a region: admitted all the same
    pred[2, 10:12, 10:12] = 0.9
    missed, false_alarms = admission_scores(to_tensor(pred), to_tensor(points), hw((30, 30), (30, 30), (30, 30)))
    assert missed.dtype == torch.float64
    torch.testing.assert_close(missed.cpu(), torch.tensor([1 / 3, 0.0, 0.0], dtype=torch.float64))
    torch.testing.assert_close(false_alarms.cpu(), torch.tensor([1 / 3, 0.0, 0.0], dtype=torch.float64))


def test_admission_scores_threshold_is_strict_and_padding_is_ignored(to_tensor):
    pred, points = np.zeros((20, 20)), np.zeros((20, 20))
    points[5, 5] = 1
    pred[5, 5] = 0.5  # not above 0.5: missed
    pred[15:, 15:] = 1.0  # padding
    missed, false_alarms = admission_scores(to_tensor(pred), to_tensor(points), hw((12, 12)))
    assert missed.tolist() == [1.0] and false_alarms.tolist() == [0.0]


def test_admitted_label_keeps_predicted_regions_on_points_with_holes_filled(to_tensor):
    pred, points = np.zeros((30, 30)), np.zeros((30, 30))
    points[15, 15] = points[3, 3] = 1
    blob = ring((30, 30), (15, 15), 3)
    pred[blob] = 0.9  # around the point at (15, 15)
    pred[25:28, 2:5] = 0.9  # on no point: dropped
    pred[28, 28] = 0.9  # in the padding
    labels = admitted_labels(to_tensor(pred), to_tensor(points), hw((27, 27)))
    expected = np.zeros((30, 30))
    rows, cols = np.indices((30, 30))
    expected[np.hypot(rows - 15, cols - 15) < 3.6] = 1  # the ring and its filled inside
    expected[3, 3] = 1  # a point without a region stays a point
    torch.testing.assert_close(labels, to_tensor(expected))


def test_schedule_epochs_and_tolerance_follow_pal_with_400_epochs():
    schedule = AdmissionSchedule(4)
    updates = [e for e in range(400) if schedule.updates_labels(e, 400)]
    admissions = [e for e in range(400) if schedule.admits(e, 400)]
    assert updates == list(range(85, 400, 5))
    assert admissions == list(range(85, 321, 5))
    assert schedule.tolerance(85, 400) == pytest.approx(0.2 + 6 / 240 * 0.8)
    assert schedule.tolerance(200, 400) == pytest.approx(0.2 + 121 / 240 * 0.8)
    assert schedule.tolerance(320, 400) == pytest.approx(0.2 + 241 / 240 * 0.8)
    assert schedule.tolerance(320, 400) >= 1  # by the last admission every miss rate passes


def test_schedule_admits_images_within_the_tolerance_once():
    schedule = AdmissionSchedule(6)
    schedule.admit_easy(torch.tensor([True, False, False, False, False, False]))
    index = torch.tensor([1, 2, 3, 4, 5])
    missed = torch.tensor([0.2, 0.5, 0.9, 0.0, 0.0], dtype=torch.float64)
    false_alarms = torch.tensor([0.0, 0.0, 0.0, 5.0, 5.5], dtype=torch.float64)
    assert schedule.admit(index, missed, false_alarms, epoch=86, max_epochs=400).tolist() == []  # not an epoch
    assert schedule.admit(index, missed, false_alarms, epoch=85, max_epochs=400).tolist() == [1, 4]
    assert schedule.admit(index, missed, false_alarms, epoch=200, max_epochs=400).tolist() == [2]
    assert schedule.admit(index, missed, false_alarms, epoch=320, max_epochs=400).tolist() == [3]
    assert schedule.admit(index, missed, false_alarms, epoch=325, max_epochs=400).tolist() == []  # after stop
    assert schedule.admitted_at.tolist() == [0, 85, 200, 320, 85, -1]  # too many false alarms: never


def test_schedule_state_round_trips_so_a_resumed_run_admits_the_same_images():
    index = torch.arange(5)
    missed = torch.tensor([0.0, 0.3, 0.6, 1.0, 0.1], dtype=torch.float64)
    false_alarms = torch.zeros(5, dtype=torch.float64)
    original = AdmissionSchedule(5)
    original.admit_easy(torch.tensor([False, False, False, False, True]))
    original.admit(index, missed, false_alarms, epoch=85, max_epochs=400)
    resumed = AdmissionSchedule(5)
    resumed.load_state_dict(original.state_dict())
    assert resumed.admitted_at.tolist() == original.admitted_at.tolist() == [85, -1, -1, -1, 0]
    for schedule in (original, resumed):
        schedule.admit(index, missed, false_alarms, epoch=150, max_epochs=400)
    assert resumed.admitted_at.tolist() == original.admitted_at.tolist() == [85, 150, -1, -1, 0]
    with pytest.raises(ValueError, match="covers 5 images"):
        AdmissionSchedule(6).load_state_dict(original.state_dict())


@pytest.mark.parametrize("options, key", [(dict(start=0.8, stop=0.2), "start"), (dict(every=0), "every"),
                                          (dict(initial_tolerance=1.5), "initial_tolerance"),
                                          (dict(max_false_alarm_ratio=-1.0), "max_false_alarm_ratio")])
def test_schedule_rejects_out_of_range_settings_naming_them(options, key):
    with pytest.raises(ValueError, match=key):
        AdmissionSchedule(3, **options)


# ---------------------------------------------------------------------------------------------------------------
# Label update with background decay


def test_update_averages_candidates_and_decays_everything_else(to_tensor):
    label, pred = np.zeros((60, 60)), np.zeros((60, 60))
    label[20, 20] = 1.0  # the target
    label[20, 21] = 0.4  # a soft pixel that the prediction confirms: averaged
    label[24, 24] = 0.4  # in the window, prediction low: decayed
    label[50, 50] = 0.3  # outside every window: decayed
    pred[19:22, 19:23] = 0.9
    label_t = to_tensor(label)
    result = pal_update(to_tensor(pred), label_t, hw((60, 60)))
    expected = label * 0.97
    expected[19:22, 19:23] = (label[19:22, 19:23] + 0.9) / 2
    expected[20, 20] = 1.0  # exactly 1 stays 1
    torch.testing.assert_close(result, to_tensor(expected), atol=1e-6, rtol=0)
    assert result.data_ptr() != label_t.data_ptr() and float(label_t[0, 0, 24, 24]) == pytest.approx(0.4)


def test_unconfirmed_soft_target_fades_below_one_half(to_tensor):
    label, pred = np.zeros((30, 30)), np.zeros((30, 30))
    label[10, 10] = 0.6  # a target, but pred is 0 everywhere: no candidate
    label[20, 20] = 1.0
    label_t, pred_t = to_tensor(label), to_tensor(pred)
    rounds = 0
    while label_t[0, 0, 10, 10] > 0.5:
        label_t = pal_update(pred_t, label_t, hw((30, 30)))
        rounds += 1
    assert rounds == 6  # 0.6 * 0.97^6 = 0.499
    assert label_t[0, 0, 20, 20] == 1


def test_lone_component_missing_the_seed_box_is_dropped(to_tensor):
    # LESPS's default keeps a window's only component; PAL drops every component that misses the box.
    label, pred = np.zeros((40, 40)), np.zeros((40, 40))
    label[20, 20] = 1.0
    label[20, 27:29] = 0.2
    pred[20, 27:29] = 0.9
    result = pal_update(to_tensor(pred), to_tensor(label), hw((40, 40)))
    expected = label * 0.97
    expected[20, 20] = 1.0
    torch.testing.assert_close(result, to_tensor(expected), atol=1e-6, rtol=0)


def test_pixel_in_several_windows_is_averaged_once(to_tensor):
    label, pred = np.zeros((30, 30)), np.zeros((30, 30))
    label[10, 10] = label[10, 14] = 1.0
    label[10, 12] = 0.2
    pred[9:12, 9:16] = 0.8  # column 12 lies in both 5 x 5 windows
    result = pal_update(to_tensor(pred), to_tensor(label), hw((30, 30)), window=5)
    assert float(result[0, 0, 10, 12]) == pytest.approx((0.2 + 0.8) / 2)


def test_image_without_targets_decays_and_padding_is_untouched(to_tensor):
    label = np.full((2, 20, 20), 0.4)
    label[0, 5, 5] = 1.0
    label[:, 12:, :] = 0.7  # padding of both images; it would be a target if read
    pred = np.full((2, 20, 20), np.nan)
    pred[:, :12, :12] = 0.1
    label_t = to_tensor(label)
    result = pal_update(to_tensor(pred), label_t, hw((12, 12), (12, 12)))
    expected = label.copy()
    expected[:, :12, :12] *= 0.97
    expected[0, 5, 5] = 1.0
    torch.testing.assert_close(result, to_tensor(expected), atol=1e-6, rtol=0)


def test_update_rejects_bad_arguments():
    pred, label = torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 8)
    with pytest.raises(ValueError, match="decay"):
        pal_update(pred, label, hw((8, 8)), decay=1.5)
    with pytest.raises(ValueError, match="window"):
        pal_update(pred, label, hw((8, 8)), window=4)
    with pytest.raises(ValueError, match="dtype"):
        pal_update(pred.double(), label, hw((8, 8)))


@st.composite
def update_cases(draw):
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    batch, height, width = draw(st.integers(1, 3)), draw(st.integers(4, 48)), draw(st.integers(4, 48))
    valid_hw = np.array([(draw(st.integers(1, height)), draw(st.integers(1, width))) for _ in range(batch)])
    label = np.where(rng.random((batch, 1, height, width)) < 0.15,
                     rng.choice([0.2, 0.45, 0.6, 0.9, 1.0], size=(batch, 1, height, width)), 0.0)
    kind = draw(st.sampled_from(["uniform", "quantized", "zero"]))
    pred = {"uniform": rng.random(label.shape), "quantized": rng.integers(0, 5, size=label.shape) / 4,
            "zero": np.zeros(label.shape)}[kind]
    for b, (h, w) in enumerate(valid_hw):  # garbage padding
        pred[b, 0, h:, :] = pred[b, 0, :, w:] = np.nan
        label[b, 0, h:, :] = label[b, 0, :, w:] = rng.choice([np.nan, 0.7, 4.0])
    options = dict(window=draw(st.sampled_from([1, 5, 9, 33])), seed_box=draw(st.sampled_from([1, 3])),
                   r=draw(st.sampled_from([0.0015, 0.05])), decay=draw(st.sampled_from([0.97, 0.5])))
    return pred, label, valid_hw, options, draw(st.sampled_from(DTYPES))


@pytest.mark.parametrize("device", DEVICES)
@settings(max_examples=60, deadline=None)
@given(case=update_cases())
def test_update_matches_sequential_reference(device, case):
    pred, label, valid_hw, options, dtype = case
    numpy_dtype = np.float32 if dtype == torch.float32 else np.float64
    pred, label = pred.astype(numpy_dtype), label.astype(numpy_dtype)
    expected = pal_update_reference(pred, label, valid_hw, **options)
    result = pal_update(torch.from_numpy(pred).to(device), torch.from_numpy(label).to(device),
                        torch.from_numpy(valid_hw), **options)
    assert result.dtype == dtype and result.device.type == device
    torch.testing.assert_close(result.cpu(), torch.from_numpy(expected), atol=1e-6, rtol=0, equal_nan=True)


def test_device_code_paths_give_the_cpu_results(monkeypatch):
    """What runs on CUDA (kornia's labeller, torch component statistics, the node grid) run here on the CPU."""
    import irstd.labels.update.pal as pal_module
    from irstd.ops.components import _find_components_torch, _union_find_labels

    rng = np.random.default_rng(11)
    images, points = _random_scenes(rng, 3, 40, 36)
    image_t, points_t = torch.from_numpy(images[:, None]), torch.from_numpy(points[:, None])
    pred_t = torch.from_numpy(np.where(rng.random(images.shape) < 0.1, 0.4, 0.9) * (images > 100))[:, None]
    label_t = torch.clamp(points_t + pred_t * 0.6, max=1.0)
    sizes = hw((40, 36), (31, 20), (40, 9))

    def run_all():
        return (*easy_set_labels(image_t, points_t, sizes), *easy_targets(image_t, points_t, sizes),
                pal_update(pred_t, label_t, sizes), *admission_scores(pred_t, points_t, sizes),
                admitted_labels(pred_t, points_t, sizes))

    expected = run_all()
    monkeypatch.setattr(pal_module, "find_components", lambda mask: _find_components_torch(
        mask[:, 0] if mask.dim() == 4 else mask))
    monkeypatch.setattr(pal_module, "connected_components", lambda mask: _union_find_labels(mask).view(mask.shape))
    monkeypatch.setattr(pal_module, "_background_components_scipy", pal_module._background_components_nodes)
    for result, reference in zip(run_all(), expected, strict=True):
        torch.testing.assert_close(result, reference, rtol=0, atol=0)

