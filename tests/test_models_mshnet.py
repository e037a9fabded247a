"""MSHNet (Liu et al., CVPR 2024) as released by Lliu666/MSHNet: architecture, heads, sides.

Equality of outputs with the authors' code is checked by scripts/check_reference.py (adapter
scripts/reference/mshnet.py); here the released configuration's size and key layout are pinned.
"""

import math

import pytest
import torch
import torch.nn.functional as F
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from conftest import compose_config
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


def _bn(prefix: str, channels: int) -> dict[str, tuple[int, ...]]:
    return {f"{prefix}.weight": (channels,), f"{prefix}.bias": (channels,), f"{prefix}.running_mean": (channels,),
            f"{prefix}.running_var": (channels,), f"{prefix}.num_batches_tracked": ()}


def _conv(prefix: str, cin: int, cout: int, k: int, bias: bool = True) -> dict[str, tuple[int, ...]]:
    return {f"{prefix}.weight": (cout, cin, k, k)} | ({f"{prefix}.bias": (cout,)} if bias else {})


def reference_shapes() -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}
    for stage, cin, cout, blocks in REFERENCE_STAGES:
        for b in range(blocks):
            p, width_in = f"{stage}.{b}", cin if b == 0 else cout
            shapes |= _conv(f"{p}.conv1", width_in, cout, 3) | _bn(f"{p}.bn1", cout)
            shapes |= _conv(f"{p}.conv2", cout, cout, 3) | _bn(f"{p}.bn2", cout)
            if width_in != cout:
                shapes |= _conv(f"{p}.shortcut.0", width_in, cout, 1) | _bn(f"{p}.shortcut.1", cout)
            shapes |= _conv(f"{p}.ca.fc1", cout, cout // 16, 1, bias=False)
            shapes |= _conv(f"{p}.ca.fc2", cout // 16, cout, 1, bias=False)
            shapes |= _conv(f"{p}.sa.conv1", 2, 1, 7, bias=False)
    for name, cin, cout, k in REFERENCE_CONVS:
        shapes |= _conv(name, cin, cout, k)
    return shapes


@pytest.fixture(scope="module")
def small() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_backbone("mshnet", **SMALL)


def test_parameters_and_state_dict_match_the_release():
    torch.manual_seed(0)
    released = build_backbone("mshnet")
    expected = reference_shapes()
    trainable = sum(math.prod(s) for k, s in expected.items()
                    if not k.endswith(("running_mean", "running_var", "num_batches_tracked")))
    assert trainable == REFERENCE_PARAMETERS == sum(p.numel() for p in released.parameters())
    assert {k: tuple(v.shape) for k, v in released.state_dict().items()} == expected
    three = build_backbone("mshnet", in_channels=3)
    assert sum(p.numel() for p in three.parameters()) == REFERENCE_PARAMETERS + 2 * 16


def test_shipped_config_composes_and_builds_the_release(tmp_path):
    config = OmegaConf.load(config_root() / "model" / "mshnet.yaml")
    assert config.backbone.name == "mshnet"
    assert sum(p.numel() for p in build_backbone(**OmegaConf.to_container(config.backbone)).parameters()) == \
        REFERENCE_PARAMETERS
    try:
        composed = compose_config("train", tmp_path, ["model=mshnet", "loss=sls"])
        assert OmegaConf.to_container(composed.model.backbone) == OmegaConf.to_container(config.backbone)
        assert composed.loss._target_ == "irstd.losses.SLSLoss"
    finally:
        GlobalHydra.instance().clear()


@pytest.mark.parametrize("shape", [(2, 1, 32, 32), (1, 1, 48, 80)])
def test_training_returns_five_logit_maps_and_backpropagates(small, shape):
    image = torch.randn(*shape, requires_grad=True)
    maps = small.train()(image)
    assert isinstance(maps, list) and len(maps) == 5
    for logits in maps:
        assert logits.shape == shape and torch.isfinite(logits).all()
    assert any((logits < 0).any() or (logits > 1).any() for logits in maps)  # logits, not probabilities
    sum(logits.square().mean() for logits in maps).backward()
    assert image.grad is not None and torch.isfinite(image.grad).all()
    assert all(p.grad is not None for p in small.parameters())
    small.zero_grad(set_to_none=True)


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
    for level in range(4):
        assert features[level].shape[-1] == 32 // 2**level
        expected = F.interpolate(features[level], size=(32, 32), mode="bilinear", align_corners=True)
        torch.testing.assert_close(maps[level], expected)
    torch.testing.assert_close(maps[4], small.final(torch.cat(maps[:4], dim=1)))


def test_eval_returns_the_fused_map_and_weights_round_trip(small):
    image = torch.randn(1, 1, 32, 48)
    with torch.no_grad():
        logits = small.eval()(image)
        copy = build_backbone("mshnet", **SMALL)
        copy.load_state_dict(small.state_dict(), strict=True)
        assert torch.equal(copy.eval()(image), logits)
    assert isinstance(logits, torch.Tensor) and logits.shape == (1, 1, 32, 48)
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
