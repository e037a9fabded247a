import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from irstd.metrics import DetectionROC, TargetDetection
from irstd.metrics.reference import reference_pd_fa
from irstd.ops.components import _find_components_torch, find_components


def detect(pred: np.ndarray, truth: np.ndarray, valid_hw=None, **kwargs) -> dict:
    metric = TargetDetection(**kwargs)
    probs = torch.from_numpy(pred.astype(np.float32))[:, None] * 0.9
    target = torch.from_numpy(truth.astype(np.float32))[:, None]
    metric.update(probs, target, None if valid_hw is None else torch.tensor(valid_hw))
    return {k: float(v) for k, v in metric.compute().items()}


def image(points, shape=(16, 16)):
    out = np.zeros(shape, bool)
    for r, c in points:
        out[r, c] = True
    return out


def test_distance_exactly_three_is_a_miss():
    truth = image([(5, 5)])[None]
    assert detect(image([(5, 8)])[None], truth)["found"] == 0
    assert detect(image([(5, 7)])[None], truth)["found"] == 1
    diagonal = image([(7, 7)])[None]  # distance sqrt(8) < 3
    assert detect(diagonal, truth)["found"] == 1


def test_one_blob_near_two_targets_matches_one():
    truth = image([(5, 4), (5, 8)])[None]
    blob = image([(5, 5), (5, 6), (5, 7)])[None]  # centroid (5, 6): 2 px from both targets
    result = detect(blob, truth)
    assert result["targets"] == 2 and result["found"] == 1 and result["fa"] == 0


def test_unmatched_components_are_false_alarms():
    truth = image([(2, 2)])[None]
    pred = image([(2, 2), (10, 10), (10, 11), (14, 1)])[None]
    result = detect(pred, truth)
    assert result["found"] == 1 and result["false_targets"] == 2
    assert result["fa"] == pytest.approx(3 / 256)


def test_empty_prediction_and_empty_ground_truth():
    truth = image([(3, 3)])[None]
    result = detect(np.zeros((1, 16, 16), bool), truth)
    assert (result["pd"], result["fa"], result["targets"]) == (0.0, 0.0, 1)
    result = detect(image([(3, 3), (3, 4)])[None], np.zeros((1, 16, 16), bool))
    assert result["targets"] == 0 and result["fa"] == pytest.approx(2 / 256)


def test_images_of_different_sizes_and_padding():
    pred = np.zeros((2, 16, 16), bool)
    truth = np.zeros((2, 16, 16), bool)
    truth[0, 2, 2] = pred[0, 2, 2] = True
    truth[1, 9, 9] = pred[1, 9, 9] = True  # inside image 1's valid 10 x 12 area
    pred[0, 12:, 12:] = True  # in image 0's padding: must not count
    truth[1, 11, 11] = True  # in image 1's padding: not a target
    result = detect(pred, truth, valid_hw=[[12, 12], [10, 12]])
    assert result["targets"] == 2 and result["found"] == 2 and result["fa"] == 0
    assert TargetDetection().pixels.item() == 0  # fresh state
    metric = TargetDetection()
    metric.update(torch.from_numpy(pred[:, None] * 0.9), torch.from_numpy(truth[:, None]).float(),
                  torch.tensor([[12, 12], [10, 12]]))
    assert metric.pixels.item() == 12 * 12 + 10 * 12


def test_area_value_rule_reproduces_the_reference_quirk():
    truth = image([(2, 2)])[None]
    pred = image([(2, 2), (10, 10)])[None]  # a 1-px match and a 1-px false alarm of the same area
    assert detect(pred, truth)["fa"] == pytest.approx(1 / 256)
    assert detect(pred, truth, fa_rule="area_value")["fa"] == 0


@pytest.mark.parametrize("find", [find_components, _find_components_torch], ids=["cpu", "device-path"])
def test_components_are_numbered_in_raster_order(find):
    mask = torch.zeros(1, 6, 6, dtype=torch.bool)
    mask[0, 4, 0] = True  # first pixel in raster order comes last
    mask[0, 0, 5] = True
    mask[0, 1, 1] = mask[0, 2, 2] = True  # one diagonal component
    components = find(mask)
    assert components.counts.tolist() == [3]
    # raster order of first pixels: (0, 5), then (1, 1)-(2, 2), then (4, 0)
    assert components.area.tolist() == [1, 2, 1]
    assert components.centroid.tolist() == [[0.0, 5.0], [1.5, 1.5], [4.0, 0.0]]


masks = st.integers(min_value=1, max_value=4).flatmap(lambda batch: st.tuples(
    st.lists(st.lists(st.booleans(), min_size=14 * 14, max_size=14 * 14), min_size=batch, max_size=batch),
    st.lists(st.lists(st.booleans(), min_size=14 * 14, max_size=14 * 14), min_size=batch, max_size=batch)))


@settings(max_examples=60, deadline=None)
@given(masks, st.floats(0.6, 0.97), st.sampled_from(["component", "area_value"]))
def test_matches_the_per_component_reference(pair, sparsity, fa_rule):
    pred = np.array(pair[0]).reshape(-1, 14, 14)
    truth = np.array(pair[1]).reshape(-1, 14, 14)
    # thin the random masks so images hold a handful of components of varied sizes
    rng = np.random.default_rng(pred.size)
    pred &= rng.random(pred.shape) > sparsity
    truth &= rng.random(truth.shape) > sparsity
    targets, found, false_pixels, total = reference_pd_fa(list(pred), list(truth), fa_rule)
    result = detect(pred, truth, fa_rule=fa_rule)
    assert result["targets"] == targets and result["found"] == found
    assert result["fa"] == pytest.approx(false_pixels / total, abs=1e-12)


def test_roc_curves_are_monotone_and_agree_with_the_point_metric():
    torch.manual_seed(0)
    probs = torch.rand(3, 1, 24, 24) ** 4
    target = (torch.rand(3, 1, 24, 24) > 0.95).float()
    probs = torch.where(target > 0, (probs + 0.5).clamp(max=1), probs)
    roc = DetectionROC(detection_thresholds=[0.3, 0.5, 0.7])
    roc.update(probs, target)
    curves = roc.compute()
    assert torch.all(curves["tpr"][1:] <= curves["tpr"][:-1] + 1e-12)
    assert torch.all(curves["fpr"][1:] <= curves["fpr"][:-1] + 1e-12)
    assert curves["tpr"][0] == 1 and curves["fpr"][0] == 1 and curves["tpr"][-1] == 0
    assert 0.5 < curves["auc"] <= 1
    point = TargetDetection(threshold=0.5)
    point.update(probs, target)
    assert curves["pd"][1] == point.compute()["pd"] and curves["fa"][1] == point.compute()["fa"]


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**31 - 1))
def test_device_labeller_numbers_components_like_scipy(seed):
    from irstd.ops.components import _scipy_labels, _union_find_labels

    generator = torch.Generator().manual_seed(seed)
    mask = torch.rand(3, 20, 17, generator=generator) > 0.7
    # the kornia path of CUDA tensors, run here on the CPU, numbers exactly as SciPy does
    assert torch.equal(_scipy_labels(mask).flatten(), _union_find_labels(mask))


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**31 - 1))
def test_cpu_and_device_statistics_agree(seed):
    mask = torch.rand(4, 23, 31, generator=torch.Generator().manual_seed(seed)) > 0.75
    mask[1] = False  # an empty image among others
    cpu, device = find_components(mask), _find_components_torch(mask)
    assert torch.equal(cpu.counts, device.counts) and torch.equal(cpu.image_index, device.image_index)
    assert torch.equal(cpu.area, device.area) and torch.allclose(cpu.centroid, device.centroid)
