"""MSHNet (Liu et al., CVPR 2024) as released by Lliu666/MSHNet: architecture, heads, sides.

Equality of outputs with the authors' code is checked by scripts/check_reference.py (adapter
scripts/reference/mshnet.py); here the released configuration's size and key layout are pinned.
"""

import pytest
import torch
import torch.nn.functional as F
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from conftest import (
    compose_config,
    conv_shapes,
    count_parameters,
    res_cbam_stage_shapes,
    seeded_backbone,
    trainable_parameters,
)
from irstd.config import config_root
from irstd.models import build_backbone

# MSHNet(input_channels) of the release, counted at 1 input channel (its training script uses 3: +2 x 16)
REFERENCE_PARAMETERS = 4_065_481
SMALL = {"channels": [4, 8, 8, 8, 8], "num_blocks": [1, 1, 1, 1]}

# the release's stages as (name, in channels, out channels, residual CBAM blocks), from its
# param_channels=[16, 32, 64, 128, 256] / param_blocks=[2, 2, 2, 2] wiring, independently of our module
REFERENCE_STAGES = [
    ("encoder_0", 16, 16, 1), ("encoder_1", 16, 32, 2), ("encoder_2", 32, 64, 2), ("encoder_3", 64, 128, 2),
    ("middle_layer", 128, 256, 2),
    ("decoder_3", 384, 128, 2), ("decoder_2", 192, 64, 2), ("decoder_1", 96, 32, 2), ("decoder_0", 48, 16, 1),
]
REFERENCE_CONVS = [("conv_init", 1, 16, 1), ("output_0", 16, 1, 1), ("output_1", 32, 1, 1), ("output_2", 64, 1, 1),
                   ("output_3", 128, 1, 1), ("final", 4, 1, 3)]


def reference_shapes() -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}
    for stage in REFERENCE_STAGES:
        shapes |= res_cbam_stage_shapes(*stage)
    for name, cin, cout, k in REFERENCE_CONVS:
        shapes |= conv_shapes(name, cin, cout, k)
    return shapes


@pytest.fixture(scope="module")
def small() -> torch.nn.Module:
    return seeded_backbone("mshnet", **SMALL)


def test_parameters_and_state_dict_match_the_release():
    released = build_backbone("mshnet")
    expected = reference_shapes()
    assert trainable_parameters(expected) == REFERENCE_PARAMETERS == count_parameters(released)
    assert {k: tuple(v.shape) for k, v in released.state_dict().items()} == expected
    assert count_parameters(build_backbone("mshnet", in_channels=3)) == REFERENCE_PARAMETERS + 2 * 16


def test_shipped_config_builds_the_release_and_composes_with_the_sls_loss(tmp_path):
    config = OmegaConf.load(config_root() / "model" / "mshnet.yaml")
    assert count_parameters(build_backbone(**OmegaConf.to_container(config.backbone))) == REFERENCE_PARAMETERS
    try:
        assert compose_config("train", tmp_path, ["model=mshnet", "loss=sls"]).loss._target_ == "irstd.losses.SLSLoss"
    finally:
        GlobalHydra.instance().clear()


def test_side_heads_are_the_upsampled_level_logits_the_fusion_sees(small):
    image = torch.randn(1, 1, 32, 32)
    features = {}
    hooks = [getattr(small, f"output_{level}").register_forward_hook(
        lambda module, inputs, output, level=level: features.__setitem__(level, output)) for level in range(4)]
    try:
        with torch.no_grad():
            maps = small.train()(image)
    finally:
        for hook in hooks:
            hook.remove()
        small.eval()
    assert isinstance(maps, list) and len(maps) == 5
    for level in range(4):
        assert features[level].shape[-1] == 32 // 2**level
        expected = F.interpolate(features[level], size=(32, 32), mode="bilinear", align_corners=True)
        torch.testing.assert_close(maps[level], expected)
    torch.testing.assert_close(maps[4], small.final(torch.cat(maps[:4], dim=1)))


def test_logit_layers_are_the_side_heads_and_the_fused_head(small):
    assert small.logit_layers()[-1] is small.final and len(small.logit_layers()) == 5


def test_sides_must_be_multiples_of_16(small):
    assert small.side_multiple == 16
    with pytest.raises(ValueError, match="multiples of 16.*24 x 32"):
        small(torch.randn(1, 1, 24, 32))


@pytest.mark.parametrize("kwargs", [{"channels": [16, 32, 64, 128]}, {"num_blocks": [2, 2, 2]},
                                    {"num_blocks": [2, 0, 2, 2]}])
def test_rejects_a_configuration_of_the_wrong_depth(kwargs):
    with pytest.raises(ValueError, match="MSHNet needs"):
        build_backbone("mshnet", **kwargs)
