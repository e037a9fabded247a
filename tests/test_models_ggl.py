"""GGL-Net as in PAL (YuChuang1205/PAL): layout, the gradient operator, the 3 -> 1 channel fold, behaviour."""

import pytest
import torch
from omegaconf import OmegaConf

from conftest import assert_rgb_weights_fold, count_parameters
from irstd.config import config_root
from irstd.models import build_backbone
from irstd.models.ggl import collapse_rgb_input, gradient_magnitude

# PAL's GGL_No_Sigmoid() (3 input channels) and the same network on one channel: the image convolution
# (16 x c x 3 x 3) and the five gradient encoders (w x c x 3 x 3, w = 16 .. 256) lose 2 of their 3 input channels
PAL_PARAMETERS = 8_988_093
ONE_CHANNEL_PARAMETERS = PAL_PARAMETERS - 2 * 9 * (16 + 16 + 32 + 64 + 128 + 256)
SMALL = {"channels": [8, 8, 8, 8, 8]}
# the convolutions that read the image or its gradient map
INPUT_READERS = ["stage.layer1.0.weight"] + [f"stage.Res{level}.layer1.0.weight" for level in range(1, 6)]


def test_parameter_counts_and_state_dict_layout():
    torch.manual_seed(0)
    pal = build_backbone("ggl", in_channels=3)
    ours = build_backbone("ggl")
    assert count_parameters(pal) == PAL_PARAMETERS and count_parameters(ours) == ONE_CHANNEL_PARAMETERS == 8_978_877
    shapes = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    pal_shapes = {k: tuple(v.shape) for k, v in pal.state_dict().items()}
    assert shapes.keys() == pal_shapes.keys() and len(shapes) == 500
    assert {k for k in shapes if shapes[k] != pal_shapes[k]} == set(INPUT_READERS)
    # a sample of PAL's names; the gradient operator has no state at all
    assert shapes["stage.layer1.0.weight"] == (16, 1, 3, 3)
    assert shapes["stage.Res5.layer1.0.weight"] == (256, 1, 3, 3)
    assert shapes["stage.Res5.layer2.0.weight"] == (256, 512, 3, 3)
    assert shapes["stage.Res3.layer1.3.fc.0.weight"] == (16, 64)
    assert shapes["stage.resnet1_1.layer.3.weight"] == (16, 16, 3, 3)
    assert shapes["stage.resnet2_1.layer1.4.weight"] == (32, 32, 3, 3)
    assert shapes["stage.resnet2_1.layer2.0.weight"] == (32, 16, 3, 3)
    assert shapes["stage.resnet4_3.SEAttention.fc.2.weight"] == (128, 32)
    assert shapes["lcl5.layer1.2.weight"] == (256, 256, 3, 3)
    assert shapes["sbam4.hl_layer.1.weight"] == (128, 256, 1, 1)
    assert shapes["sbam1.hl_layer_2.se.0.weight"] == (2, 16, 1, 1)
    assert shapes["sbam1.ll_layer.conv.bias"] == (1,)
    assert shapes["layer.2.weight"] == (1, 16, 1, 1)
    assert not any(name for name, _ in ours.named_buffers() if not name.split(".")[-1].startswith(
        ("running_", "num_batches")))
    assert ours.logit_layers() == [ours.layer[2]]


def test_initialisation_follows_pal():
    torch.manual_seed(0)
    net = build_backbone("ggl", **SMALL)
    # Kaiming-normal (fan_out) convolutions with zero bias, except the fusions' attention convolutions
    weight = net.stage.Res1.layer2[0].weight  # 8 x 16 x 3 x 3: fan_out 8 * 9
    assert torch.all(net.layer[2].bias == 0) and torch.all(net.stage.layer1[0].bias == 0)
    assert weight.std().item() == pytest.approx((2 / (8 * 9)) ** 0.5, rel=0.2)
    assert net.sbam1.ll_layer.conv.bias.abs().item() > 0


def test_gradient_magnitude_is_half_the_central_differences_with_zero_padding():
    x = torch.randn(2, 3, 6, 7)
    g = gradient_magnitude(x)
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1))
    for i, j in [(0, 0), (2, 3), (5, 6), (3, 0)]:
        dx = (padded[..., i + 1, j + 2] - padded[..., i + 1, j]) / 2
        dy = (padded[..., i, j + 1] - padded[..., i + 2, j + 1]) / 2
        torch.testing.assert_close(g[..., i, j], (dx**2 + dy**2).sqrt())
    assert g.shape == x.shape and (g >= 0).all()


def test_shipped_config_builds_the_one_channel_network():
    cfg = OmegaConf.load(config_root() / "model" / "ggl.yaml")
    assert count_parameters(build_backbone(**OmegaConf.to_container(cfg.backbone))) == ONE_CHANNEL_PARAMETERS


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_pal_three_channel_weights_fold_into_the_one_channel_network(mode):
    assert_rgb_weights_fold("ggl", SMALL, collapse_rgb_input, train=mode == "train")
    with pytest.raises(ValueError, match="not a GGL-Net state dict"):
        collapse_rgb_input({"layer.0.weight": torch.zeros(1)})


def test_bad_sizes_and_configurations_are_rejected():
    net = build_backbone("ggl", **SMALL)
    with pytest.raises(ValueError, match="multiples of 16"):
        net(torch.zeros(1, 1, 40, 32))
    with pytest.raises(ValueError, match="5 channel widths"):
        build_backbone("ggl", channels=[16, 32, 64, 128])
    with pytest.raises(ValueError, match=">= 8"):
        build_backbone("ggl", channels=[4, 8, 8, 8, 8])
