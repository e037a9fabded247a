"""Batched LESPS label evolution against the sequential reference, and hand-made cases pinning each rule."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage

from conftest import DEVICES, DTYPES
from irstd.lesps import connected_components, evolve_labels
from irstd.lesps.reference import EIGHT_CONNECTED, evolve_labels_reference


def hw(*sizes: tuple[int, int], like: torch.Tensor) -> torch.Tensor:
    return torch.tensor(sizes, dtype=torch.int64, device=like.device)


# ---------------------------------------------------------------------------------------------------------------
# Property test against the sequential reference


def _draw_labels(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Soft background below 0.5 (earlier rounds), with point and blob targets, some on borders and corners."""
    label = np.where(rng.random((h, w)) < 0.2, rng.choice([0.1, 0.3, 0.5], size=(h, w)), 0.0)
    for _ in range(rng.integers(0, 6)):
        row = rng.choice([0, h - 1, rng.integers(0, h)])
        col = rng.choice([0, w - 1, rng.integers(0, w)])
        if rng.random() < 0.5:
            label[row, col] = 1.0
        else:  # blobs up to 14 px across, larger than the small windows
            height, width = rng.integers(1, 15, size=2)
            blob = label[row : row + height, col : col + width]
            blob[...] = np.where(rng.random(blob.shape) < 0.8, rng.choice([0.6, 0.9, 1.0], size=blob.shape), blob)
    return label


def _draw_pred(rng: np.random.Generator, label: np.ndarray, kind: str) -> np.ndarray:
    h, w = label.shape
    if kind == "zero":
        return np.zeros((h, w))
    if kind == "constant":
        return np.full((h, w), rng.random())
    if kind == "quantized":  # many ties with the window maximum
        return rng.integers(0, 5, size=(h, w)) / 4
    if kind == "bumps":  # isolated peaks a few pixels off the targets: lone components missing the seed box
        rows, cols = np.nonzero(label > 0.5)
        rows = np.clip(np.append(rows, rng.integers(0, h, size=2)) + rng.integers(-5, 6, size=len(rows) + 2), 0, h - 1)
        cols = np.clip(np.append(cols, rng.integers(0, w, size=2)) + rng.integers(-5, 6, size=len(cols) + 2), 0, w - 1)
        bumps = np.zeros((h, w))
        bumps[rows, cols] = rng.random(len(rows)) + 0.5
        return np.clip(ndimage.gaussian_filter(bumps, sigma=1.0) * 6 + 0.05 * rng.random((h, w)), 0, 1)
    if kind == "smooth":  # blobs and several components per window
        smooth = ndimage.uniform_filter(rng.random((h, w)), size=3)
        return (smooth - smooth.min()) / max(smooth.max() - smooth.min(), 1e-12)
    return rng.random((h, w))


@st.composite
def evolution_cases(draw):
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    batch = draw(st.integers(1, 3))
    height, width = draw(st.integers(8, 48)), draw(st.integers(8, 48))
    valid_hw = np.array([(draw(st.integers(1, height)), draw(st.integers(1, width))) for _ in range(batch)])
    # Bumps twice: they are what makes the false-alarm settings disagree.
    pred_kind = draw(st.sampled_from(["uniform", "smooth", "bumps", "bumps", "zero", "constant", "quantized"]))
    # Garbage padding, some of it would be targets or window maxima if it were read.
    pred = rng.choice([np.nan, 1.0, 7.0, -3.0], size=(batch, 1, height, width))
    label = rng.choice([np.nan, 0.0, 0.7, 1.0, 4.0], size=(batch, 1, height, width))
    for b, (h, w) in enumerate(valid_hw):
        label[b, 0, :h, :w] = _draw_labels(rng, h, w)
        pred[b, 0, :h, :w] = _draw_pred(rng, label[b, 0, :h, :w], pred_kind)
    options = dict(
        Tb=draw(st.floats(0.0, 0.9)),
        k=draw(st.floats(0.0, 1.0)),
        r=draw(st.sampled_from([0.0015, 0.01, 0.05])),
        window=draw(st.sampled_from([1, 5, 7, 15, 33])),
        seed_box=draw(st.sampled_from([1, 3, 5])),
    )
    dtype = draw(st.sampled_from(DTYPES))
    return pred, label, valid_hw, options, dtype


@pytest.mark.parametrize("device", DEVICES)
@settings(max_examples=60, deadline=None)
@given(case=evolution_cases())
def test_matches_sequential_reference(device, case):
    pred, label, valid_hw, options, dtype = case
    numpy_dtype = np.float32 if dtype == torch.float32 else np.float64
    pred, label = pred.astype(numpy_dtype), label.astype(numpy_dtype)
    for strict in (False, True):
        expected = evolve_labels_reference(pred, label, valid_hw, **options, strict_false_alarm=strict)
        result = evolve_labels(
            torch.from_numpy(pred).to(device),
            torch.from_numpy(label).to(device),
            torch.from_numpy(valid_hw),
            **options,
            strict_false_alarm=strict,
        )
        assert result.dtype == dtype and result.device.type == device
        torch.testing.assert_close(result.cpu(), torch.from_numpy(expected), atol=1e-6, rtol=0, equal_nan=True)


# ---------------------------------------------------------------------------------------------------------------
# Hand-made cases


def test_threshold_is_eq2_with_the_valid_size(to_tensor):
    # Target of n = 3 pixels near the bottom of a 40 x 40 valid region padded to 48 x 48:
    # T_adapt = 0.8 * (0.5 + 0.5 * 0.5 * 3 / (40 * 40 * 0.0015)) = 0.65. The padded size would give 0.574, and
    # the padding's pred of 1 inside the unclipped window would give 0.8125.
    label, pred = np.zeros((48, 48)), np.zeros((48, 48))
    pred[40:, :] = 1.0
    label[36, 19:22] = 0.9
    pred[36, 20] = 0.8
    pred[35, 20] = 0.65 + 1e-5
    pred[37, 20] = 0.65 - 1e-5
    expected = label.copy()
    expected[36, 20] = (0.9 + 0.8) / 2
    expected[35, 20] = (0.65 + 1e-5) / 2
    label_t = to_tensor(label)
    result = evolve_labels(to_tensor(pred), label_t, hw((40, 40), like=label_t))
    torch.testing.assert_close(result, to_tensor(expected), atol=1e-6, rtol=0)


def test_candidates_are_strictly_above_the_threshold(to_tensor):
    # k = 0 makes T_adapt = Tb * max = 0.375 exactly in binary floating point.
    label, pred = np.zeros((20, 20)), np.zeros((20, 20))
    label[10, 10] = 1.0
    pred[10, 10] = 0.75
    pred_t = to_tensor(pred)
    pred_t[0, 0, 10, 11] = 0.375
    pred_t[0, 0, 11, 10] = torch.nextafter(
        torch.tensor(0.375, dtype=pred_t.dtype), torch.tensor(1.0, dtype=pred_t.dtype)
    )
    label_t = to_tensor(label)
    result = evolve_labels(pred_t, label_t, hw((20, 20), like=label_t), k=0.0)
    assert result[0, 0, 10, 11] == 0
    assert result[0, 0, 11, 10] == pred_t[0, 0, 11, 10] / 2
    assert result[0, 0, 10, 10] == 1


@pytest.mark.parametrize("strict", [False, True])
def test_lone_component_missing_the_seed_box_is_kept_unless_strict(to_tensor, strict):
    label, pred = np.zeros((40, 40)), np.zeros((40, 40))
    label[20, 20] = 1.0
    pred[20, 27:29] = 0.9  # inside the 33 x 33 window, outside the 3 x 3 box
    label_t = to_tensor(label)
    result = evolve_labels(to_tensor(pred), label_t, hw((40, 40), like=label_t), strict_false_alarm=strict)
    expected = label.copy()
    if not strict:
        expected[20, 27:29] = 0.45
    torch.testing.assert_close(result, to_tensor(expected), atol=1e-6, rtol=0)


@pytest.mark.parametrize("strict", [False, True])
def test_component_missing_the_seed_box_is_dropped_beside_another(to_tensor, strict):
    label, pred = np.zeros((40, 40)), np.zeros((40, 40))
    label[20, 20] = 1.0
    # Touches the box at (19, 21) though not the positive pixel (20, 20): the reference, which tests overlap with
    # label > 0.5, would drop it.
    pred[19, 21] = pred[18, 22] = 0.9
    pred[20, 27:29] = 0.9
    label_t = to_tensor(label)
    result = evolve_labels(to_tensor(pred), label_t, hw((40, 40), like=label_t), strict_false_alarm=strict)
    expected = label.copy()
    expected[19, 21] = expected[18, 22] = 0.45
    torch.testing.assert_close(result, to_tensor(expected), atol=1e-6, rtol=0)


def test_pixel_kept_by_m_targets_gets_eq4_m_times(to_tensor):
    # Windows of 5 around (10, 10) and (10, 14) share column 12: there m = 2, elsewhere on the patch m = 1.
    label, pred = np.zeros((30, 30)), np.zeros((30, 30))
    label[10, 10] = label[10, 14] = 1.0
    label[9, 12] = label[9, 11] = 0.2
    pred[9:12, 9:16] = 0.8
    label_t = to_tensor(label)
    result = evolve_labels(to_tensor(pred), label_t, hw((30, 30), like=label_t), window=5)
    expected = label.copy()
    for row in range(9, 12):
        for col in range(9, 16):
            m = 2 if col == 12 else 1
            expected[row, col] = label[row, col] / 2**m + 0.8 * (1 - 1 / 2**m)
    expected[10, 10] = expected[10, 14] = 1.0
    assert expected[9, 12] == pytest.approx(0.65) and expected[9, 11] == pytest.approx(0.5)
    torch.testing.assert_close(result, to_tensor(expected), atol=1e-6, rtol=0)


def test_label_one_stays_one_and_other_labels_may_decrease(to_tensor):
    label, pred = np.zeros((60, 60)), np.zeros((60, 60))
    label[10, 10], label[10, 11] = 1.0, 0.9
    pred[10, 10:12] = 0.3
    label_t = to_tensor(label)
    result = evolve_labels(to_tensor(pred), label_t, hw((60, 60), like=label_t))
    assert result[0, 0, 10, 10] == 1
    # Eq. 4 as specified; the reference's pixel-wise max with the old label would keep 0.9.
    assert result[0, 0, 10, 11].item() == pytest.approx(0.6)


def test_padding_is_neither_read_nor_written(to_tensor):
    rng = np.random.default_rng(0)
    sizes = [(30, 21), (17, 40)]
    pred = rng.choice([np.nan, 1.0, 5.0], size=(2, 40, 40))
    label = rng.choice([np.nan, 1.0, 0.8], size=(2, 40, 40))
    for b, (h, w) in enumerate(sizes):
        label[b, :h, :w] = _draw_labels(rng, h, w)
        pred[b, :h, :w] = _draw_pred(rng, label[b, :h, :w], "smooth")
    label_t = to_tensor(label)
    result = evolve_labels(to_tensor(pred), label_t, hw(*sizes, like=label_t), window=7)
    for b, (h, w) in enumerate(sizes):
        alone_label = to_tensor(label[b, :h, :w])
        alone = evolve_labels(to_tensor(pred[b, :h, :w]), alone_label, hw((h, w), like=alone_label), window=7)
        torch.testing.assert_close(result[b : b + 1, :, :h, :w], alone, atol=0, rtol=0)
    padding = torch.ones_like(label_t, dtype=torch.bool)
    for b, (h, w) in enumerate(sizes):
        padding[b, :, :h, :w] = False
    torch.testing.assert_close(result[padding], label_t[padding], atol=0, rtol=0, equal_nan=True)


def test_without_targets_labels_are_returned_unchanged(to_tensor):
    label = np.full((12, 12), 0.5)
    label_t = to_tensor(label)
    result = evolve_labels(to_tensor(np.ones((12, 12))), label_t, hw((12, 12), like=label_t))
    assert result is not label_t
    torch.testing.assert_close(result, label_t, atol=0, rtol=0)


@pytest.mark.parametrize("window, seed_box", [(32, 3), (33, 2), (0, 3)])
def test_sizes_must_be_odd(window, seed_box):
    label = torch.zeros(1, 1, 8, 8)
    with pytest.raises(ValueError, match="odd"):
        evolve_labels(label, label, torch.tensor([[8, 8]]), window=window, seed_box=seed_box)


# ---------------------------------------------------------------------------------------------------------------
# Connected components


def _same_partition(labels: torch.Tensor, mask: np.ndarray) -> bool:
    """Whether `labels` (B x 1 x H x W) splits `mask` as SciPy splits each image, with ids unique in the batch."""
    expected = np.stack([ndimage.label(plane, structure=EIGHT_CONNECTED)[0] for plane in mask[:, 0]])
    offset = np.arange(len(mask)).reshape(-1, 1, 1) * mask[0, 0].size
    expected = np.where(expected > 0, expected + offset, 0).ravel()  # distinct ids across images
    actual = labels.cpu().numpy().ravel()
    if not np.array_equal(actual > 0, expected > 0):
        return False
    pairs = np.unique(np.stack([actual, expected]), axis=1)
    return pairs.shape[1] == len(np.unique(actual)) == len(np.unique(expected))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("density", [0.3, 0.55, 0.7])
def test_connected_components_match_scipy(device, density):
    mask = np.random.default_rng(1).random((5, 1, 23, 31)) < density
    labels = connected_components(torch.from_numpy(mask).to(device))
    assert labels.dtype == torch.int64 and labels.shape == mask.shape
    assert _same_partition(labels, mask)


@pytest.mark.parametrize("device", DEVICES)
def test_connected_components_converge_on_a_long_snake(device):
    # A boustrophedon path of ~600 pixels: far more steps than a fixed pooling budget would take.
    mask = np.zeros((1, 1, 33, 33), dtype=bool)
    mask[0, 0, ::2, :] = True
    mask[0, 0, 1::4, -1] = True
    mask[0, 0, 3::4, 0] = True
    labels = connected_components(torch.from_numpy(mask).to(device))
    assert len(torch.unique(labels[labels > 0])) == 1
    assert _same_partition(labels, mask)
