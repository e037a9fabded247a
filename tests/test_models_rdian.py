"""RDIAN as released (sun11999/RDIAN): architecture and state-dict layout, the direction kernels, behaviour."""

import pytest
import torch
from omegaconf import OmegaConf

from conftest import bn_shapes, conv_shapes, count_parameters, seeded_backbone, trainable_parameters
from irstd.config import config_root
from irstd.models import build_backbone

# sum of the release's parameter tensors (params/best.pth), 200 of them the eight frozen 5x5 direction kernels
REFERENCE_PARAMETERS = 216_758
DIRECTION_PARAMETERS = 8 * 25
SMALL = {"channels": 8, "num_blocks": [1, 1, 1, 1]}


def _conv_bn(prefix: str, cin: int, cout: int, k: int) -> dict[str, tuple[int, ...]]:
    return conv_shapes(f"{prefix}.0", cin, cout, k, bias=False) | bn_shapes(f"{prefix}.1", cout)


def reference_shapes() -> dict[str, tuple[int, ...]]:
    """state_dict key -> shape of the released model, written out from its layer table."""
    shapes = _conv_bn("conv1", 1, 16, 3) | _conv_bn("conv2", 16, 32, 3)
    for branch, (kernel, blocks) in enumerate([(1, 1), (3, 2), (5, 2), (7, 2)]):
        for block in range(blocks):
            prefix = f"residual_block{branch}.{block}"
            shapes |= _conv_bn(f"{prefix}.layer1", 32, 16, kernel) | _conv_bn(f"{prefix}.layer2", 16, 32, kernel)
    shapes |= {"cbam.ChannelGate.mlp.1.weight": (1, 32), "cbam.ChannelGate.mlp.1.bias": (1,),
               "cbam.ChannelGate.mlp.3.weight": (32, 1), "cbam.ChannelGate.mlp.3.bias": (32,),
               "cbam.SpatialGate.spatial.conv.weight": (1, 2, 7, 7)} | bn_shapes("cbam.SpatialGate.spatial.bn", 1)
    shapes |= _conv_bn("conv_cat", 128, 32, 3) | _conv_bn("conv_res", 16, 32, 1)
    shapes |= {f"d1{i}.weight": (1, 1, 5, 5) for i in range(1, 9)}
    shapes |= {"head.block.0.weight": (8, 32, 3, 3)} | bn_shapes("head.block.1", 8)
    return shapes | {"head.block.4.weight": (1, 8, 1, 1), "head.block.4.bias": (1,)}


@pytest.fixture(scope="module")
def released() -> torch.nn.Module:
    return seeded_backbone("rdian")


def test_parameters_and_state_dict_match_the_release(released):
    expected = reference_shapes()
    assert trainable_parameters(expected) == REFERENCE_PARAMETERS == count_parameters(released)
    assert sum(p.numel() for p in released.parameters() if p.requires_grad) == REFERENCE_PARAMETERS - 200
    assert {k: tuple(v.shape) for k, v in released.state_dict().items()} == expected
    assert released.logit_layers() == [released.head.block[4]]


def test_direction_kernels_are_the_eight_fixed_differences(released):
    x = torch.randn(1, 1, 9, 9)
    # d11 .. d18: the centre minus the pixel two steps away, clockwise from the top-left
    offsets = [(-2, -2), (-2, 0), (-2, 2), (0, 2), (2, 2), (2, 0), (2, -2), (0, -2)]
    for index, (dy, dx) in enumerate(offsets, start=11):
        module = getattr(released, f"d{index}")
        assert not module.weight.requires_grad
        with torch.no_grad():
            out = module(x)
        assert out.shape == x.shape
        torch.testing.assert_close(out[0, 0, 4, 4], x[0, 0, 4, 4] - x[0, 0, 4 + dy, 4 + dx])
        # zero padding beyond the border
        torch.testing.assert_close(out[0, 0, 0, 0], x[0, 0, 0, 0] - (x[0, 0, dy, dx] if dy >= 0 and dx >= 0 else 0))


def test_shipped_config_builds_the_release():
    cfg = OmegaConf.load(config_root() / "model" / "rdian.yaml")
    assert count_parameters(build_backbone(**OmegaConf.to_container(cfg.backbone))) == REFERENCE_PARAMETERS


@pytest.mark.parametrize("turned_on", [False, True])
def test_only_the_direction_kernels_get_no_gradient_at_any_input_size(turned_on):
    net = seeded_backbone("rdian", **SMALL).train()
    if turned_on:
        for p in net.parameters():
            p.requires_grad_(True)  # as a functional / vmapped trainer does with every parameter
    logits = net(torch.randn(1, 1, 33, 47))
    assert logits.shape == (1, 1, 33, 47)
    logits.square().mean().backward()
    for name, p in net.named_parameters():
        assert (p.grad is None) == name.startswith("d1"), name


def test_bad_configurations_are_rejected():
    with pytest.raises(ValueError, match="multiple of 4"):
        build_backbone("rdian", channels=6)
    with pytest.raises(ValueError, match="num_blocks"):
        build_backbone("rdian", num_blocks=[1, 2, 2])
    with pytest.raises(ValueError, match="single-channel"):
        build_backbone("rdian", in_channels=3)
