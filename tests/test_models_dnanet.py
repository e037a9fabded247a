import pytest
import torch
from omegaconf import OmegaConf

from conftest import conv_shapes, count_parameters, res_cbam_stage_shapes, seeded_backbone, trainable_parameters
from irstd.config import config_root
from irstd.models import build_backbone

REFERENCE_PARAMETERS = 4_696_568

# The released DNA-Net's stages as (name, in channels, out channels, Res-CBAM blocks), written out from
# its nb_filter=[16, 32, 64, 128, 256] / num_blocks=[2, 2, 2, 2] wiring, independently of our module.
REFERENCE_STAGES = [
    ("conv0_0", 1, 16, 1), ("conv1_0", 16, 32, 2), ("conv2_0", 32, 64, 2), ("conv3_0", 64, 128, 2),
    ("conv4_0", 128, 256, 2),
    ("conv0_1", 48, 16, 1), ("conv1_1", 112, 32, 2), ("conv2_1", 224, 64, 2), ("conv3_1", 448, 128, 2),
    ("conv0_2", 64, 16, 1), ("conv1_2", 144, 32, 2), ("conv2_2", 288, 64, 2),
    ("conv0_3", 80, 16, 1), ("conv1_3", 176, 32, 2),
    ("conv0_4", 96, 16, 1),
    ("conv0_4_final", 80, 16, 1),
]
REFERENCE_1X1 = [("conv0_4_1x1", 256, 16), ("conv0_3_1x1", 128, 16), ("conv0_2_1x1", 64, 16),
                 ("conv0_1_1x1", 32, 16), ("final1", 16, 1), ("final2", 16, 1), ("final3", 16, 1),
                 ("final4", 16, 1)]


def reference_shapes() -> dict[str, tuple[int, ...]]:
    """state_dict key -> shape of the released model, from its stage table and Res_CBAM_block layout."""
    shapes: dict[str, tuple[int, ...]] = {}
    for stage in REFERENCE_STAGES:
        shapes |= res_cbam_stage_shapes(*stage)
    for name, cin, cout in REFERENCE_1X1:
        shapes |= conv_shapes(name, cin, cout, 1)
    return shapes


@pytest.fixture(scope="module")
def released() -> torch.nn.Module:
    return seeded_backbone("dnanet")


def test_parameters_and_state_dict_match_the_released_model(released):
    expected = reference_shapes()
    assert trainable_parameters(expected) == REFERENCE_PARAMETERS == count_parameters(released)
    assert {k: tuple(v.shape) for k, v in released.state_dict().items()} == expected
    for key in ["conv0_0.0.conv1.weight", "conv1_0.0.shortcut.0.weight", "conv1_0.1.ca.fc1.weight",
                "conv0_4_final.0.sa.conv1.weight", "conv0_4_1x1.bias", "final4.weight"]:
        assert key in released.state_dict()


def test_shipped_config_builds_the_released_model():
    cfg = OmegaConf.load(config_root() / "model" / "dnanet.yaml")
    assert count_parameters(build_backbone(**OmegaConf.to_container(cfg.backbone))) == REFERENCE_PARAMETERS


def test_training_returns_four_deep_supervision_logit_maps(released):
    with torch.no_grad():
        maps = released.train()(torch.randn(2, 1, 32, 32))
    assert isinstance(maps, list) and len(maps) == 4
    assert all(logits.shape == (2, 1, 32, 32) for logits in maps)
    assert released.logit_layers() == [released.final1, released.final2, released.final3, released.final4]


def test_without_deep_supervision_a_single_final_head_serves_training():
    net = build_backbone("dnanet", deep_supervision=False)
    keys = net.state_dict().keys()
    assert "final.weight" in keys and "final1.weight" not in keys
    with torch.no_grad():
        logits = net.train()(torch.randn(2, 1, 32, 32))
    assert isinstance(logits, torch.Tensor) and logits.shape == (2, 1, 32, 32)


def test_rejects_a_configuration_of_the_wrong_depth():
    with pytest.raises(ValueError, match="DNANet needs 5 channels"):
        build_backbone("dnanet", channels=[16, 32, 64, 128])
