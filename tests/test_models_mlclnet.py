"""MLCL-Net as in PAL (YuChuang1205/PAL `model/MLCL/MLCL_no_sigmoid.py`): layout, 3 -> 1 channel fold, behaviour."""

import pytest
import torch
from omegaconf import OmegaConf

from conftest import assert_rgb_weights_fold, count_parameters
from irstd.config import config_root
from irstd.models import build_backbone
from irstd.models.mlclnet import collapse_rgb_input

# PAL's MLCL_No_Sigmoid() and MLCL_small_No_Sigmoid() (3 input channels), as scripts/check_reference.py counts
# them; on one channel the first convolution (16 x c x 3 x 3) loses 2 of its 3 input channels
PAL_PARAMETERS = 657_249
PAL_SMALL_PARAMETERS = 559_809
ONE_CHANNEL_PARAMETERS = PAL_PARAMETERS - 2 * 16 * 9
SMALL = {"channels": [4, 4, 8], "blocks": 1}

pytestmark = pytest.mark.usefixtures("one_thread")


def test_parameter_counts_and_state_dict_layout():
    pal = build_backbone("mlclnet", in_channels=3)
    ours = build_backbone("mlclnet")
    assert count_parameters(pal) == PAL_PARAMETERS and count_parameters(ours) == ONE_CHANNEL_PARAMETERS == 656_961
    # PAL's light version drops the third residual block of each level (2 x 3 x 3 convs + 2 BN per block)
    light = count_parameters(build_backbone("mlclnet", in_channels=3, blocks=2))
    assert light == PAL_SMALL_PARAMETERS == PAL_PARAMETERS - sum(2 * (c * c * 9 + c) + 4 * c for c in (16, 32, 64))
    shapes = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    pal_shapes = {k: tuple(v.shape) for k, v in pal.state_dict().items()}
    assert shapes.keys() == pal_shapes.keys() and len(shapes) == 206
    assert {k for k in shapes if shapes[k] != pal_shapes[k]} == {"stage.layer1.0.weight"}
    # a sample of PAL's names and shapes
    assert shapes["stage.layer1.0.weight"] == (16, 1, 3, 3)
    assert shapes["stage.resnet1_3.layer.4.running_mean"] == (16,)
    assert shapes["stage.resnet3_1.layer1.4.weight"] == (64, 64, 3, 3)
    assert shapes["stage.resnet3_1.layer2.0.weight"] == (64, 32, 3, 3)
    assert shapes["mlcl3.layer1.0.weight"] == (64, 64, 1, 1)
    assert shapes["mlcl2.layer2.2.weight"] == (32, 32, 3, 3)
    assert shapes["mlcl1.layer3.0.weight"] == (16, 16, 5, 5)
    assert shapes["mlcl1.conv.weight"] == (16, 48, 1, 1)
    assert shapes["conv3.0.weight"] == (64, 64, 1, 1)
    assert shapes["conv2.0.weight"] == (64, 32, 1, 1)
    assert shapes["conv1.0.weight"] == (64, 16, 1, 1)
    assert shapes["layer.0.weight"] == (64, 64, 1, 1) and shapes["layer.2.weight"] == (1, 64, 1, 1)
    assert "stage.resnet4_1.layer1.0.weight" not in shapes
    assert ours.logit_layers() == [ours.layer[2]] and ours.side_multiple == 4


def test_dilations_of_the_local_contrast_branches():
    block = build_backbone("mlclnet").mlcl2
    branches = (block.layer1, block.layer2, block.layer3)
    for branch, (kernel, dilation) in zip(branches, ((1, 1), (3, 3), (5, 5)), strict=True):
        assert branch[0].kernel_size == (kernel, kernel) and branch[0].padding == (kernel // 2, kernel // 2)
        assert branch[2].dilation == (dilation, dilation) and branch[2].padding == (dilation, dilation)


def test_initialisation_follows_pal():
    torch.manual_seed(0)
    net = build_backbone("mlclnet", **SMALL)
    # PAL initialises the residual blocks and the mlcl blocks (Kaiming fan_out, zero bias), not the stem, the
    # lateral projections or the head, which keep PyTorch's default (non-zero) biases
    assert torch.all(net.stage.resnet1_1.layer[0].bias == 0) and torch.all(net.mlcl3.conv.bias == 0)
    assert torch.all(net.mlcl1.layer3[2].bias == 0)
    for conv in (net.stage.layer1[0], net.conv3[0], net.conv1[0], net.layer[2]):
        assert conv.bias.abs().sum() > 0


def test_shipped_config_builds_the_one_channel_network():
    cfg = OmegaConf.load(config_root() / "model" / "mlclnet.yaml")
    assert count_parameters(build_backbone(**OmegaConf.to_container(cfg.backbone))) == ONE_CHANNEL_PARAMETERS


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_pal_three_channel_weights_fold_into_the_one_channel_network(mode):
    assert_rgb_weights_fold("mlclnet", SMALL, collapse_rgb_input, train=mode == "train")


def test_bad_sizes_and_configurations_are_rejected():
    net = build_backbone("mlclnet", **SMALL)
    with pytest.raises(ValueError, match="multiples of 4, got 32 x 30"):
        net(torch.zeros(1, 1, 32, 30))
    with pytest.raises(ValueError, match="3 channel widths"):
        build_backbone("mlclnet", channels=[16, 32, 64, 128])
    with pytest.raises(ValueError, match="blocks"):
        build_backbone("mlclnet", blocks=0)
