"""SoftIoU, BCE + Dice and PAL's edge-weighted hard-pixel BCE on tiny hand-computed inputs."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from irstd.losses import (
    BCEDiceLoss,
    EdgeBCELoss,
    SoftIoULoss,
    bce_dice_loss,
    edge_bce_loss,
    label_edges,
    soft_iou_loss,
)

LN2 = math.log(2)


def one_positive(height: int = 2, width: int = 2) -> torch.Tensor:
    target = torch.zeros(1, 1, height, width, dtype=torch.float64)
    target[0, 0, 0, 0] = 1.0
    return target


# ---------------------------------------------------------------------------------------------------------------
# SoftIoU


def test_soft_iou_known_value():
    # p = 0.5 everywhere: intersection 0.5, sum p 2, sum t 1 -> 1 - 1.5 / 3.5
    loss = soft_iou_loss(torch.zeros(1, 1, 2, 2, dtype=torch.float64), one_positive())
    assert float(loss) == pytest.approx(1 - 1.5 / 3.5)


def test_soft_iou_is_one_ratio_over_the_batch_not_a_mean_of_images():
    logits = torch.tensor([[[[4.0, -4.0]]], [[[0.0, 0.0]]]], dtype=torch.float64)
    target = torch.tensor([[[[1.0, 0.0]]], [[[0.0, 0.0]]]], dtype=torch.float64)
    prob = torch.sigmoid(logits)
    intersection = (prob * target).sum()
    batch_ratio = (intersection + 1) / (prob.sum() + target.sum() - intersection + 1)
    assert torch.allclose(soft_iou_loss(logits, target), 1 - batch_ratio)
    per_image = [soft_iou_loss(logits[b: b + 1], target[b: b + 1]) for b in range(2)]
    assert not torch.allclose(soft_iou_loss(logits, target), sum(per_image) / 2)


def test_soft_iou_smooth_and_perfect_prediction():
    target = one_positive()
    confident = (target * 2 - 1) * 40
    assert float(soft_iou_loss(confident, target, smooth=0.0)) == pytest.approx(0.0, abs=1e-12)
    # no targets and a confident background: 1 - smooth / smooth = 0 with smooth, undefined without
    assert float(soft_iou_loss(torch.full((1, 1, 2, 2), -40.0), torch.zeros(1, 1, 2, 2))) == pytest.approx(0.0)


# ---------------------------------------------------------------------------------------------------------------
# BCE + Dice


@pytest.mark.parametrize("dice_weight", [0.0, 1.0, 2.5])
def test_bce_dice_known_value(dice_weight):
    # p = 0.5: BCE = ln 2 on every pixel; Dice = 1 - (2 * 0.5 + 1) / (2 + 1 + 1) = 0.5
    loss = bce_dice_loss(torch.zeros(1, 1, 2, 2, dtype=torch.float64), one_positive(), dice_weight=dice_weight)
    assert float(loss) == pytest.approx(LN2 + dice_weight * 0.5)


# ---------------------------------------------------------------------------------------------------------------
# PAL's edge-weighted BCE over the hardest pixels


def test_label_edges_are_both_sides_of_the_boundary_through_4_neighbours():
    target = torch.zeros(1, 1, 6, 6)
    target[0, 0, 2:4, 2:4] = 1.0
    expected = torch.zeros(6, 6, dtype=torch.bool)
    expected[2:4, 1:5] = True
    expected[1:5, 2:4] = True  # the square and its 4-neighbours, not the diagonal corners
    assert torch.equal(label_edges(target)[0, 0], expected)


def test_label_touching_the_border_has_no_edge_along_it():
    target = torch.zeros(1, 1, 4, 4)
    target[0, 0, 0, :] = 0.9  # a row along the top, above one half
    edges = label_edges(target)[0, 0]
    assert edges[:2].all() and not edges[2:].any()


def test_hardest_half_is_the_mean_over_the_top_half():
    logits = torch.arange(-3.0, 5.0, dtype=torch.float64).view(1, 1, 2, 4)  # 8 distinct losses
    target = torch.zeros_like(logits)  # no edges
    per_pixel = F.softplus(logits).flatten()
    assert float(edge_bce_loss(logits, target)) == pytest.approx(float(per_pixel.sort().values[4:].mean()))


def test_odd_count_cuts_at_the_median_and_keeps_ties():
    logits = torch.tensor([[[[0.0, 1.0, 2.0, 3.0, 4.0]]]], dtype=torch.float64)
    per_pixel = F.softplus(logits).flatten()
    # int(0.5 * 5) = 2: the cut is the third smallest, and pixels equal to it count
    assert float(edge_bce_loss(logits, torch.zeros_like(logits))) == pytest.approx(float(per_pixel[2:].mean()))
    flat = torch.zeros(1, 1, 3, 3, dtype=torch.float64)
    assert float(edge_bce_loss(flat, torch.zeros_like(flat))) == pytest.approx(LN2)  # all tied: all count


def test_edge_pixels_weigh_edge_weight_times_more():
    # p = 0.5: BCE = ln 2 everywhere; the positive pixel and its 4 neighbours are edges (4 ln 2). The cut, at
    # sorted position 12 of 25, is ln 2, so every pixel counts: (5 * 4 + 20) / 25 ln 2.
    target = torch.zeros(1, 1, 5, 5, dtype=torch.float64)
    target[0, 0, 2, 2] = 1.0
    logits = torch.zeros_like(target)
    assert float(edge_bce_loss(logits, target)) == pytest.approx(1.6 * LN2)
    assert float(edge_bce_loss(logits, target, edge_weight=1.0)) == pytest.approx(LN2)
    # with a quarter of the pixels only the 5 edges (and ties at 4 ln 2) count
    assert float(edge_bce_loss(logits, target, hard_fraction=0.2)) == pytest.approx(4 * LN2)


def test_only_the_hardest_pixels_get_gradient():
    logits = torch.tensor([[[[-4.0, -2.0, 2.0, 4.0]]]], requires_grad=True)
    edge_bce_loss(logits, torch.zeros_like(logits)).backward()
    assert (logits.grad[0, 0, 0, :2] == 0).all() and (logits.grad[0, 0, 0, 2:] > 0).all()


def test_soft_targets_are_binarised_unless_told_otherwise():
    logits = torch.zeros(1, 1, 2, 2, dtype=torch.float64)
    soft = torch.full_like(logits, 0.7)
    assert torch.allclose(edge_bce_loss(logits, soft), edge_bce_loss(logits, torch.ones_like(logits)))
    expected = F.binary_cross_entropy_with_logits(logits, soft)
    assert torch.allclose(edge_bce_loss(logits, soft, binarize_target=False), expected)


def test_hard_fraction_out_of_range_names_itself():
    with pytest.raises(ValueError, match="hard_fraction"):
        EdgeBCELoss(hard_fraction=0.0)
    with pytest.raises(ValueError, match="hard_fraction"):
        edge_bce_loss(torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 2), hard_fraction=1.5)


# ---------------------------------------------------------------------------------------------------------------
# All three


LOSSES = [(SoftIoULoss(), soft_iou_loss), (BCEDiceLoss(dice_weight=0.5), lambda x, t: bce_dice_loss(x, t, 0.5)),
          (EdgeBCELoss(), edge_bce_loss)]


@pytest.mark.parametrize("module, functional", LOSSES, ids=["softiou", "bce_dice", "edge_bce"])
def test_deep_supervision_sums_heads(module, functional):
    torch.manual_seed(0)
    heads = [torch.randn(2, 1, 8, 8) for _ in range(3)]
    target = (torch.rand(2, 1, 8, 8) > 0.8).float()
    assert torch.allclose(module(heads, target), sum(functional(head, target) for head in heads))
    assert torch.allclose(module(heads[0], target), functional(heads[0], target))


@pytest.mark.parametrize("module", [loss for loss, _ in LOSSES], ids=["softiou", "bce_dice", "edge_bce"])
def test_gradients_are_finite_for_saturated_logits(module):
    logits = torch.tensor([[[[60.0, -60.0], [0.0, 3.0]]]], requires_grad=True)
    target = torch.tensor([[[[0.0, 1.0], [1.0, 0.0]]]])
    loss = module(logits, target)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0
