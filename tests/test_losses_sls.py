"""MSHNet's scale and location sensitive loss (irstd.losses.SLSLoss).

Equality with the authors' `SLSIoULoss` on random logits and hard/soft labels, and with their whole per-batch
training objective, is checked by `scripts/reference/mshnet.py <reference checkout>` (the reference code is not
part of irstd); here the formula is pinned on cases small enough to work out by hand.
"""

import math

import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import OmegaConf

from irstd.config import config_root
from irstd.losses import SLSLoss, sls_loss
from irstd.losses.sls import location_loss


def two_by_two(row: int, col: int) -> torch.Tensor:
    target = torch.zeros(1, 1, 2, 2)
    target[0, 0, row, col] = 1.0
    return target


# logits 0: p = 1/2 on each of the 4 pixels, P = 2; one target pixel, T = 1, overlap 1/2
# IoU = 0.5 / (2 + 1 - 0.5) = 1/5; D = ((2 - 1) / 2)**2 = 1/4; alpha = (1 + 1/4) / (2 + 1/4) = 5/9
HALF = torch.zeros(1, 1, 2, 2)
SCALED_IOU = 5 / 9 * 1 / 5


def test_scale_term_by_hand():
    target = two_by_two(1, 1)
    assert sls_loss(HALF, target, scale=False, location=False).item() == pytest.approx(1 - 1 / 5, abs=1e-6)
    assert sls_loss(HALF, target, location=False).item() == pytest.approx(1 - SCALED_IOU, abs=1e-6)


def test_location_term_by_hand():
    # the "centres" are means over the 4 pixels of (x / W) p and (y / H) p, with x, y in {0, 1}:
    # p = 1/2 everywhere gives (1/8, 1/8); a target at (1, 1) gives (1/2 / 4, 1/2 / 4) = (1/8, 1/8) too
    same = location_loss(torch.sigmoid(HALF), two_by_two(1, 1)).item()
    assert same == pytest.approx(0.0, abs=1e-6)
    # a target at (0, 0) has centre (0, 0): its length is sqrt(1e-8) = 1e-4 and its angle atan(0) = 0, against
    # |(1/8, 1/8)| = sqrt(2) / 8 and pi / 4: 1 - 1e-4 / (sqrt(2) / 8) + (4 / pi**2) (pi / 4)**2
    corner = location_loss(torch.sigmoid(HALF), two_by_two(0, 0)).item()
    assert corner == pytest.approx(1 - 1e-4 / (math.sqrt(2) / 8) + 1 / 4, abs=1e-6)
    total = SLSLoss()(HALF, two_by_two(0, 0)).item()
    assert total == pytest.approx(1 - SCALED_IOU + corner, abs=1e-6)


def test_images_are_averaged_not_pooled():
    # second image: all four pixels targets, p = 1/2: IoU = 2 / (2 + 4 - 2) = 1/2, D = 1, alpha = 3/5
    logits = torch.zeros(2, 1, 2, 2)
    target = torch.cat([two_by_two(1, 1), torch.ones(1, 1, 2, 2)])
    expected = 1 - (SCALED_IOU + 3 / 5 * 1 / 2) / 2
    assert SLSLoss(location=False)(logits, target).item() == pytest.approx(expected, abs=1e-6)


def test_soft_labels_enter_linearly():
    # half a target on one pixel: T = 1/2, overlap 1/4; IoU = 1/4 / (2 + 1/2 - 1/4) = 1/9,
    # D = (3/4)**2 = 9/16, alpha = (1/2 + 9/16) / (2 + 9/16) = 17/41
    target = two_by_two(1, 1) / 2
    assert SLSLoss(location=False)(HALF, target).item() == pytest.approx(1 - 17 / 41 / 9, abs=1e-6)


def test_heads_are_summed_and_smaller_heads_meet_the_max_pooled_label():
    torch.manual_seed(0)
    label = (torch.rand(2, 1, 16, 16) > 0.8).float()
    full, half, eighth = torch.randn(2, 1, 16, 16), torch.randn(2, 1, 8, 8), torch.randn(2, 1, 2, 2)
    loss = SLSLoss()
    expected = loss(full, label) + loss(half, F.max_pool2d(label, 2)) + loss(eighth, F.max_pool2d(label, 8))
    torch.testing.assert_close(loss([full, half, eighth], label), expected)
    torch.testing.assert_close(loss((full, full), label), 2 * loss(full, label))
    with pytest.raises(ValueError, match="does not fit"):
        loss(torch.randn(2, 1, 8, 4), label)
    with pytest.raises(ValueError, match="does not fit"):
        loss(torch.randn(2, 1, 32, 32), label)


def test_gradients_are_finite_even_for_an_empty_map_and_label():
    for logits, target in [(torch.full((2, 1, 8, 8), -200.0), torch.zeros(2, 1, 8, 8)),
                           (torch.randn(2, 1, 8, 8), torch.zeros(2, 1, 8, 8))]:
        logits.requires_grad_(True)
        value = SLSLoss()(logits, target)
        value.backward()
        assert torch.isfinite(value) and torch.isfinite(logits.grad).all()


def test_a_better_map_has_a_lower_loss():
    target = torch.zeros(1, 1, 16, 16)
    target[..., 5:8, 9:12] = 1
    confident = 8 * (2 * target - 1)
    assert SLSLoss()(confident, target) < SLSLoss()(torch.zeros_like(target), target)
    shifted = torch.roll(confident, shifts=(4, -4), dims=(-2, -1))
    assert SLSLoss()(confident, target) < SLSLoss()(shifted, target)


def test_shipped_config_instantiates_the_loss():
    loss = instantiate(OmegaConf.load(config_root() / "loss" / "sls.yaml"))
    assert isinstance(loss, SLSLoss) and loss.scale and loss.location
