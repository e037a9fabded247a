import math

import torch

from irstd.losses import FocalLoss, focal_loss


def reference_focal(prob: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The LESPS reference formula on probabilities, written out per pixel."""
    per_pixel = (-torch.log(prob) * (1 - prob) ** 2 * target
                 - torch.log(1 - prob) * prob ** 2 * (1 - target) ** 4)
    return per_pixel.sum() / max(1, int((target == 1).sum()))


def test_matches_reference_formula_with_soft_labels():
    torch.manual_seed(0)
    logits = torch.randn(2, 1, 8, 8, dtype=torch.float64) * 3
    target = torch.rand(2, 1, 8, 8, dtype=torch.float64)
    target[0, 0, 2, 3] = 1.0
    target[1, 0, 5, 5] = 1.0
    expected = reference_focal(torch.sigmoid(logits), target)
    assert torch.allclose(focal_loss(logits, target), expected, rtol=1e-10)


def test_normalised_by_pixels_exactly_one():
    logits = torch.zeros(1, 1, 4, 4)
    target = torch.zeros(1, 1, 4, 4)
    target[0, 0, 0, :3] = 1.0
    target[0, 0, 1, 0] = 0.999  # not exactly 1: does not count
    total = reference_focal(torch.full_like(target, 0.5), target) * 3
    assert math.isclose(float(focal_loss(logits, target)), float(total) / 3, rel_tol=1e-6)
    assert math.isclose(float(focal_loss(logits, target)) * 3, float(total), rel_tol=1e-6)


def test_no_positive_pixels_divides_by_one():
    logits = torch.full((1, 1, 3, 3), -1.0)
    target = torch.zeros(1, 1, 3, 3)
    expected = reference_focal(torch.sigmoid(logits), target)
    assert torch.allclose(focal_loss(logits, target), expected)


def test_deep_supervision_sums_heads():
    torch.manual_seed(1)
    heads = [torch.randn(1, 1, 6, 6) for _ in range(3)]
    target = (torch.rand(1, 1, 6, 6) > 0.8).float()
    loss = FocalLoss()(heads, target)
    assert torch.allclose(loss, sum(focal_loss(h, target) for h in heads))
    assert not torch.allclose(loss, focal_loss(heads[-1], target))


def test_stable_for_saturated_logits():
    logits = torch.tensor([[[[60.0, -60.0]]]], requires_grad=True)
    target = torch.tensor([[[[0.0, 1.0]]]])
    loss = focal_loss(logits, target)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()
    assert loss > 50  # confidently wrong on both pixels
