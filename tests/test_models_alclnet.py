"""ALCL-Net as in PAL (YuChuang1205/PAL `model/ALCL/ALCL_no_sigmoid.py`): layout, 3 -> 1 channel fold, behaviour."""

import pytest
import torch
from omegaconf import OmegaConf

from conftest import assert_rgb_weights_fold, count_parameters
from irstd.config import config_root
from irstd.models import build_backbone
from irstd.models.alclnet import collapse_rgb_input

# PAL's ALCL_No_Sigmoid() (3 input channels), as scripts/check_reference.py counts it; on one channel the first
# convolution (16 x c x 3 x 3) loses 2 of its 3 input channels
PAL_PARAMETERS = 5_668_145
ONE_CHANNEL_PARAMETERS = PAL_PARAMETERS - 2 * 16 * 9
SMALL = {"channels": [4, 4, 8, 8, 8], "blocks": 1}

pytestmark = pytest.mark.usefixtures("one_thread")


def test_parameter_counts_and_state_dict_layout():
    pal = build_backbone("alclnet", in_channels=3)
    ours = build_backbone("alclnet")
    assert count_parameters(pal) == PAL_PARAMETERS and count_parameters(ours) == ONE_CHANNEL_PARAMETERS == 5_667_857
    shapes = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    pal_shapes = {k: tuple(v.shape) for k, v in pal.state_dict().items()}
    assert shapes.keys() == pal_shapes.keys() and len(shapes) == 332
    assert {k for k in shapes if shapes[k] != pal_shapes[k]} == {"stage.layer1.0.weight"}
    # a sample of PAL's names and shapes
    assert shapes["stage.layer1.0.weight"] == (16, 1, 3, 3)
    assert shapes["stage.layer1.4.running_var"] == (16,)
    assert shapes["stage.resnet1_3.layer.3.weight"] == (16, 16, 3, 3)
    assert shapes["stage.resnet2_1.layer1.4.weight"] == (32, 32, 3, 3)
    assert shapes["stage.resnet2_1.layer2.0.weight"] == (32, 16, 3, 3)
    assert shapes["stage.resnet5_3.layer.4.bias"] == (256,)
    assert shapes["lcl5.layer1.0.weight"] == (256, 256, 1, 1)
    assert shapes["lcl1.layer1.2.weight"] == (16, 16, 3, 3)
    assert shapes["sbam4.hl_layer.1.weight"] == (128, 256, 1, 1)
    assert shapes["sbam4.hl_layer.2.running_mean"] == (128,)
    assert shapes["sbam1.ll_layer.0.weight"] == (16, 16, 1, 1)
    assert shapes["layer.0.weight"] == (16, 16, 1, 1) and shapes["layer.2.weight"] == (1, 16, 1, 1)
    assert "stage.resnet5_4.layer.0.weight" not in shapes and "sbam5.hl_layer.1.weight" not in shapes
    assert ours.logit_layers() == [ours.layer[2]] and ours.side_multiple == 16


def test_initialisation_follows_pal():
    torch.manual_seed(0)
    net = build_backbone("alclnet", **SMALL)
    # every convolution Kaiming-normal (fan_out) with zero bias, every batch norm 1 / 0
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert all(torch.all(m.bias == 0) for m in convs)
    weight = net.stage.resnet1_1.layer[0].weight  # 4 x 4 x 3 x 3: fan_out 4 * 9
    assert weight.std().item() == pytest.approx((2 / (4 * 9)) ** 0.5, rel=0.35)
    assert all(torch.all(m.weight == 1) for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d))


def test_shipped_config_builds_the_one_channel_network():
    cfg = OmegaConf.load(config_root() / "model" / "alclnet.yaml")
    assert count_parameters(build_backbone(**OmegaConf.to_container(cfg.backbone))) == ONE_CHANNEL_PARAMETERS


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_pal_three_channel_weights_fold_into_the_one_channel_network(mode):
    assert_rgb_weights_fold("alclnet", SMALL, collapse_rgb_input, train=mode == "train")
    with pytest.raises(ValueError, match="not a PAL"):
        collapse_rgb_input({"layer.0.weight": torch.zeros(1)})


def test_bad_sizes_and_configurations_are_rejected():
    net = build_backbone("alclnet", **SMALL)
    with pytest.raises(ValueError, match="multiples of 16, got 40 x 32"):
        net(torch.zeros(1, 1, 40, 32))
    with pytest.raises(ValueError, match="5 channel widths"):
        build_backbone("alclnet", channels=[16, 32, 64, 128])
    with pytest.raises(ValueError, match="blocks"):
        build_backbone("alclnet", blocks=0)
    with pytest.raises(ValueError, match="in_channels"):
        build_backbone("alclnet", in_channels=0)
