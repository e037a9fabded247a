"""MSDA-Net as in PAL (YuChuang1205/PAL `model/MSDA/MSDA_no_sigmoid.py`): layout, Haar filters, 3 -> 1 channel
fold, behaviour."""

import pytest
import torch
from omegaconf import OmegaConf

from conftest import assert_rgb_weights_fold, count_parameters, unused_parameters
from irstd.config import config_root
from irstd.models import build_backbone
from irstd.models.msdanet import HaarDecomposition, collapse_rgb_input, haar_filters

# PAL's MSDA_No_Sigmoid() (3 input channels), as scripts/check_reference.py counts it; on one channel the first
# convolution (16 x c x 3 x 3) loses 2 of its 3 input channels (the wavelet injection has no parameters)
PAL_PARAMETERS = 4_805_089
ONE_CHANNEL_PARAMETERS = PAL_PARAMETERS - 2 * 16 * 9
# PAL's local-contrast blocks build a 1x1 conv-BN-ReLU `conv_res` that their forward never calls
UNUSED_PARAMETERS = sum(c * c + 2 * c for c in (64, 64, 64, 32, 16))
SMALL = {"channels": [8, 12, 8, 8, 8], "side_channels": 4}
# 1 / sqrt(2) squared in float32, as PAL computes the Haar filters
QUARTER = (torch.tensor(2 ** -0.5, dtype=torch.float32) ** 2).item()

pytestmark = pytest.mark.usefixtures("one_thread")


def test_parameter_counts_and_state_dict_layout():
    pal = build_backbone("msdanet", in_channels=3)
    ours = build_backbone("msdanet")
    assert count_parameters(pal) == PAL_PARAMETERS and count_parameters(ours) == ONE_CHANNEL_PARAMETERS == 4_804_801
    shapes = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    pal_shapes = {k: tuple(v.shape) for k, v in pal.state_dict().items()}
    assert shapes.keys() == pal_shapes.keys() and len(shapes) == 1176
    assert {k for k in shapes if shapes[k] != pal_shapes[k]} == {"stage.layer1.0.weight"}
    # a sample of PAL's names and shapes
    assert shapes["stage.layer1.0.weight"] == (16, 1, 3, 3)
    assert shapes["stage.resnet1_1.layer.3.weight"] == (16, 16, 3, 3)
    assert shapes["stage.resnet2_1.layer1.0.weight"] == (23, 16, 3, 3)  # 32 - 9 injected sub-band channels
    assert shapes["stage.resnet2_2.branch0.0.conv.weight"] == (32, 32, 1, 1)
    assert shapes["stage.resnet2_2.branch3.1.conv.weight"] == (32, 32, 3, 3)
    assert shapes["stage.resnet3_3.conv_cat.conv.weight"] == (64, 256, 3, 3)
    assert shapes["stage.resnet4_2.conv_res.bn.running_var"] == (64,)
    assert shapes["stage.resnet5_3.SEAttention.fc.0.weight"] == (16, 64)
    assert shapes["stage.resnet1_2.FrequencyAttention.HH_reduce.conv.weight"] == (1, 2, 7, 7)
    assert shapes["stage.resnet1_2.FrequencyAttention.LL_reduce.conv.bias"] == (1,)
    assert shapes["stage.resnet1_2.FrequencyAttention.conv_res.0.weight"] == (16, 16, 3, 3)
    assert shapes["stage.resnet1_2.FrequencyAttention.LH_DWT_2D_attation.w_lh"] == (1, 1, 2, 2)
    assert shapes["stage.hfrequency.Hfrequencyfeature.DWT_2D.w_ll"] == (1, 1, 2, 2)
    assert shapes["stage.layer1_4.4.weight"] == (16, 16, 1, 1)
    assert shapes["stage.layer4_4.1.weight"] == (16, 64, 1, 1)
    assert shapes["stage.layer5_4.0.weight"] == (128, 128, 1, 1)
    assert shapes["stage.layer5_4.2.weight"] == (64, 128, 1, 1)
    assert shapes["mlcl5.branch2.1.conv.weight"] == (64, 64, 3, 3)
    assert shapes["mlcl1.conv_cat.conv.weight"] == (16, 48, 3, 3)
    assert shapes["mlcl2.conv_res.conv.weight"] == (32, 32, 1, 1)
    assert shapes["sbam2.concat_layer.0.weight"] == (64, 96, 1, 1)
    assert shapes["sbam2.concat_layer.3.weight"] == (64, 64, 3, 3)
    assert shapes["sbam2.hl_layer.0.weight"] == (32, 64, 1, 1)
    assert shapes["layer.2.weight"] == (1, 16, 1, 1)
    # the Haar filters: 4 per directional attention (2 blocks x 5 levels) and 4 for the injection
    filters = [k for k in shapes if ".w_" in k]
    assert len(filters) == 44 and all(shapes[k] == (1, 1, 2, 2) for k in filters)
    assert ours.logit_layers() == [ours.layer[2]] and ours.side_multiple == 16


def test_haar_filters_are_pals():
    filters = haar_filters()
    q = QUARTER
    expected = {"ll": [[q, q], [q, q]], "lh": [[q, q], [-q, -q]], "hl": [[q, -q], [q, -q]], "hh": [[q, -q], [-q, q]]}
    assert {band: kernel.tolist() for band, kernel in filters.items()} == expected
    net = build_backbone("msdanet", **SMALL)
    assert torch.equal(net.stage.hfrequency.Hfrequencyfeature.DWT_2D.w_hl[0, 0], filters["hl"])
    assert torch.equal(net.stage.resnet3_2.FrequencyAttention.HH_DWT_2D_attation.w_hh[0, 0], filters["hh"])


def test_injected_sub_bands_of_a_grey_image_repeat_as_for_its_rgb_copy():
    image = torch.randn(2, 1, 8, 10)
    grey = HaarDecomposition()(image, 3)
    rgb = HaarDecomposition()(image.expand(-1, 3, -1, -1), 1)
    assert grey.shape == (2, 9, 4, 5) and torch.equal(grey, rgb)
    # LH: top row minus bottom row of each 2x2 cell, HL: left minus right, HH: the diagonal difference
    cells = image.unfold(2, 2, 2).unfold(3, 2, 2)[:, 0]  # B x 4 x 5 x 2 x 2
    a, b, c, d = cells[..., 0, 0], cells[..., 0, 1], cells[..., 1, 0], cells[..., 1, 1]
    for index, band in enumerate([a + b - c - d, a - b + c - d, a - b - c + d]):
        for copy in range(3):
            torch.testing.assert_close(grey[:, 3 * index + copy], QUARTER * band)


def test_the_local_contrast_residual_convolutions_are_unused_as_in_pal():
    # that the forward leaves exactly these without a gradient: tests/test_backbone_contract.py
    net = build_backbone("msdanet")
    unused = unused_parameters("msdanet", net)
    assert sum(p.numel() for k, p in net.named_parameters() if k in unused) == UNUSED_PARAMETERS == 14_048
    assert len(unused) == 5 * 3  # conv weight, BN weight and bias in each of the five blocks
    assert net.has_unused_parameters


def test_initialisation_follows_pal():
    torch.manual_seed(0)
    net = build_backbone("msdanet", **SMALL)
    # PAL's weights_init (Kaiming fan_out, zero bias) on the encoder's residual blocks, stem, side paths, the
    # fusions and the head, and the directional attention's own init; the rest keeps PyTorch's default
    for conv in (net.stage.layer1[0], net.stage.resnet2_1.layer2[0], net.stage.layer3_4[2], net.stage.layer5_4[0],
                 net.stage.resnet1_2.FrequencyAttention.LH_reduce.conv, net.sbam1.concat_layer[3], net.layer[2]):
        assert torch.all(conv.bias == 0)
    assert net.stage.resnet1_2.FrequencyAttention.conv_res[0].bias.abs().sum() == 0
    weight = net.mlcl1.branch0[0].conv.weight  # default init: uniform within 1 / sqrt(fan_in) = 1 / sqrt(8)
    assert weight.abs().max().item() <= 8 ** -0.5


def test_shipped_config_builds_the_one_channel_network():
    cfg = OmegaConf.load(config_root() / "model" / "msdanet.yaml")
    assert count_parameters(build_backbone(**OmegaConf.to_container(cfg.backbone))) == ONE_CHANNEL_PARAMETERS


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_pal_three_channel_weights_fold_into_the_one_channel_network(mode):
    assert_rgb_weights_fold("msdanet", SMALL, collapse_rgb_input, train=mode == "train")


def test_the_sub_bands_can_be_injected_once():
    # the same design without PAL's repetition: the level-2 block then gives 32 - 3 channels
    net = build_backbone("msdanet", direction_channels=3)
    assert net.stage.resnet2_1.layer2[0].out_channels == 29
    assert count_parameters(net) > ONE_CHANNEL_PARAMETERS


def test_bad_sizes_and_configurations_are_rejected():
    net = build_backbone("msdanet", **SMALL)
    with pytest.raises(ValueError, match="multiples of 16, got 40 x 32"):
        net(torch.zeros(1, 1, 40, 32))
    with pytest.raises(ValueError, match="5 channel widths"):
        build_backbone("msdanet", channels=[16, 32, 64, 64])
    with pytest.raises(ValueError, match=">= 4"):
        build_backbone("msdanet", channels=[16, 32, 64, 64, 2])
    with pytest.raises(ValueError, match="multiple of 3 \\* in_channels = 9"):
        build_backbone("msdanet", in_channels=3, direction_channels=3)
    with pytest.raises(ValueError, match="direction_channels"):
        build_backbone("msdanet", direction_channels=4)
    with pytest.raises(ValueError, match="below channels\\[1\\] = 32"):
        build_backbone("msdanet", direction_channels=33)
    with pytest.raises(ValueError, match="side_channels"):
        build_backbone("msdanet", side_channels=0)
