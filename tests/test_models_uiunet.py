"""UIU-Net as trained by BasicIRSTD: architecture (pinned to the release's layout and parameter count),
deep supervision, the logit heads (the contract every backbone keeps: tests/test_backbone_contract.py).
Behaviour runs at tiny widths; the default (~50 M parameters) is only built and counted."""

import pytest
import torch
from omegaconf import OmegaConf

from conftest import bn_shapes, conv_shapes, count_parameters, seeded_backbone, trainable_parameters
from irstd.config import config_root
from irstd.models import build_backbone

REFERENCE_PARAMETERS = 50_540_309  # BasicIRSTD's UIUNET(in_ch=1)
AUTHORS_PARAMETERS = 50_541_461  # danfenghong/IEEE_TIP_UIU-Net's UIUNET(in_ch=3)
SMALL = {"channels": [8, 8, 8, 8, 8, 8], "mid_channels": [4, 4, 4, 4, 4, 4], "decoder_mid_channels": [4, 4, 4, 4, 4]}

# The release's blocks as (name, RSU height, dilated, in, mid, out), written out from its constructor.
REFERENCE_BLOCKS = [
    ("stage1", 7, False, 1, 32, 64), ("stage2", 6, False, 64, 32, 128), ("stage3", 5, False, 128, 64, 256),
    ("stage4", 4, False, 256, 128, 512), ("stage5", 4, True, 512, 256, 512), ("stage6", 4, True, 512, 256, 512),
    ("stage5d", 4, True, 1024, 256, 512), ("stage4d", 4, False, 1024, 128, 256), ("stage3d", 5, False, 512, 64, 128),
    ("stage2d", 6, False, 256, 32, 64), ("stage1d", 7, False, 128, 16, 64),
]
REFERENCE_SIDES = [("side1", 64), ("side2", 64), ("side3", 128), ("side4", 256), ("side5", 512), ("side6", 512)]
REFERENCE_FUSIONS = [("fuse5", 512, 512), ("fuse4", 512, 512), ("fuse3", 256, 256), ("fuse2", 128, 128)]


def _rebnconv(prefix: str, cin: int, cout: int) -> dict[str, tuple[int, ...]]:
    return conv_shapes(f"{prefix}.conv_s1", cin, cout, 3) | bn_shapes(f"{prefix}.bn_s1", cout)


def reference_shapes(in_channels: int = 1) -> dict[str, tuple[int, ...]]:
    """state_dict key -> shape of the released UIUNET (RSU layers, fusions, side heads)."""
    shapes: dict[str, tuple[int, ...]] = {}
    for name, height, _, cin, mid, out in REFERENCE_BLOCKS:
        cin = in_channels if name == "stage1" else cin
        shapes |= _rebnconv(f"{name}.rebnconvin", cin, out) | _rebnconv(f"{name}.rebnconv1", out, mid)
        for level in range(2, height + 1):
            shapes |= _rebnconv(f"{name}.rebnconv{level}", mid, mid)
        for level in range(2, height):
            shapes |= _rebnconv(f"{name}.rebnconv{level}d", 2 * mid, mid)
        shapes |= _rebnconv(f"{name}.rebnconv1d", 2 * mid, out)
    for name, cin in REFERENCE_SIDES:
        shapes |= conv_shapes(name, cin, 1, 3)
    shapes |= conv_shapes("outconv", 6, 1, 1)
    for name, high, out in REFERENCE_FUSIONS:
        low = out // 4
        shapes |= conv_shapes(f"{name}.feature_high.0", high, out, 1) | bn_shapes(f"{name}.feature_high.1", out)
        shapes |= conv_shapes(f"{name}.topdown.1", out, low, 1) | bn_shapes(f"{name}.topdown.2", low)
        shapes |= conv_shapes(f"{name}.topdown.4", low, out, 1) | bn_shapes(f"{name}.topdown.5", out)
        shapes |= conv_shapes(f"{name}.bottomup.0", out, low, 1) | bn_shapes(f"{name}.bottomup.1", low)
        shapes |= conv_shapes(f"{name}.bottomup.3.conv1", 2, 1, 3, bias=False)
        shapes |= conv_shapes(f"{name}.post.0", out, out, 3) | bn_shapes(f"{name}.post.1", out)
    return shapes


@pytest.fixture(scope="module")
def small() -> torch.nn.Module:
    return seeded_backbone("uiunet", **SMALL)


def test_default_is_the_released_network_key_for_key():
    net = seeded_backbone("uiunet")  # built and counted, never run at full size
    expected = reference_shapes()
    assert trainable_parameters(expected) == REFERENCE_PARAMETERS == count_parameters(net)
    assert trainable_parameters(reference_shapes(in_channels=3)) == AUTHORS_PARAMETERS
    assert {key: tuple(value.shape) for key, value in net.state_dict().items()} == expected
    assert len(expected) == 942


def test_shipped_config_builds_the_released_network():
    config = OmegaConf.load(config_root() / "model" / "uiunet.yaml")
    assert count_parameters(build_backbone(**OmegaConf.to_container(config.backbone))) == REFERENCE_PARAMETERS


def test_training_returns_seven_logit_maps_the_fused_one_last(small):
    with torch.no_grad():
        maps = small.train()(torch.randn(2, 1, 32, 32))
        assert isinstance(maps, list) and len(maps) == 7
        # the last map is the fused head's: outconv over the six side maps
        torch.testing.assert_close(maps[-1], small.outconv(torch.cat(maps[:-1], dim=1)))


def test_without_deep_supervision_training_returns_the_fused_map_alone():
    net = build_backbone("uiunet", deep_supervision=False, **SMALL)
    assert set(net.state_dict()) == set(build_backbone("uiunet", **SMALL).state_dict())
    with torch.no_grad():
        logits = net.train()(torch.randn(2, 1, 32, 32))
    assert isinstance(logits, torch.Tensor) and logits.shape == (2, 1, 32, 32)


def test_logit_layers_are_the_side_heads_and_the_fused_head(small):
    layers = small.logit_layers()
    assert [layer.out_channels for layer in layers] == [1] * 7
    assert layers[-1] is small.outconv and layers[0] is small.side1


def test_output_prior_starts_the_fused_map_low():
    from irstd.training.module import IRSTDModule

    torch.manual_seed(0)
    module = IRSTDModule({"name": "uiunet", **SMALL}, output_prior=0.001)
    module.eval()
    with torch.no_grad():
        probs = module.probabilities(torch.randn(2, 1, 32, 32))
    assert probs.median() < 0.05


def test_bad_configurations_and_a_single_training_image_are_rejected(small):
    with pytest.raises(ValueError, match="UIUNet needs 6 channels"):
        build_backbone("uiunet", channels=[64, 128, 256, 512, 512])
    with pytest.raises(ValueError, match="decoder_mid_channels"):
        build_backbone("uiunet", decoder_mid_channels=[16, 32, 64, 128])
    with pytest.raises(ValueError, match="channels >= 4"):
        build_backbone("uiunet", **{**SMALL, "channels": [8, 8, 2, 8, 8, 8]})
    with pytest.raises(ValueError, match="batch of at least 2"):
        small.train()(torch.randn(1, 1, 32, 32))
