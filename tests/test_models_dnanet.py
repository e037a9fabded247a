import math

import pytest
import torch
from omegaconf import OmegaConf

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


def _bn(prefix: str, channels: int) -> dict[str, tuple[int, ...]]:
    return {f"{prefix}.weight": (channels,), f"{prefix}.bias": (channels,), f"{prefix}.running_mean": (channels,),
            f"{prefix}.running_var": (channels,), f"{prefix}.num_batches_tracked": ()}


def _conv(prefix: str, cin: int, cout: int, k: int, bias: bool = True) -> dict[str, tuple[int, ...]]:
    shapes = {f"{prefix}.weight": (cout, cin, k, k)}
    if bias:
        shapes[f"{prefix}.bias"] = (cout,)
    return shapes


def reference_shapes() -> dict[str, tuple[int, ...]]:
    """state_dict key -> shape of the released model, from its stage table and Res_CBAM_block layout."""
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
    for name, cin, cout in REFERENCE_1X1:
        shapes |= _conv(name, cin, cout, 1)
    return shapes


@pytest.fixture(scope="module")
def released() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_backbone("dnanet")


def test_parameters_and_state_dict_match_the_released_model(released):
    expected = reference_shapes()
    trainable = sum(math.prod(s) for k, s in expected.items() if not k.endswith(("running_mean", "running_var",
                                                                                 "num_batches_tracked")))
    assert trainable == REFERENCE_PARAMETERS
    assert sum(p.numel() for p in released.parameters()) == REFERENCE_PARAMETERS
    assert {k: tuple(v.shape) for k, v in released.state_dict().items()} == expected
    for key in ["conv0_0.0.conv1.weight", "conv1_0.0.shortcut.0.weight", "conv1_0.1.ca.fc1.weight",
                "conv0_4_final.0.sa.conv1.weight", "conv0_4_1x1.bias", "final4.weight"]:
        assert key in released.state_dict()


def test_shipped_config_builds_the_released_model():
    cfg = OmegaConf.load(config_root() / "model" / "dnanet.yaml")
    net = build_backbone(**OmegaConf.to_container(cfg.backbone))
    assert sum(p.numel() for p in net.parameters()) == REFERENCE_PARAMETERS


@pytest.mark.parametrize("shape", [(2, 1, 64, 64), (1, 1, 64, 96)])
def test_training_returns_four_deep_supervision_logit_maps_and_backpropagates(released, shape):
    image = torch.randn(*shape, requires_grad=True)
    maps = released.train()(image)
    assert isinstance(maps, list) and len(maps) == 4
    for logits in maps:
        assert logits.shape == shape and torch.isfinite(logits).all()
    # logits, not probabilities: the sigmoid lives in IRSTDModule
    assert any((logits < 0).any() or (logits > 1).any() for logits in maps)
    sum(logits.sum() for logits in maps).backward()
    assert image.grad is not None and all(p.grad is not None for p in released.parameters())
    released.zero_grad(set_to_none=True)


def test_eval_returns_one_map_and_weights_round_trip(released):
    image = torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        logits = released.eval()(image)
        torch.manual_seed(1)
        copy = build_backbone("dnanet")
        copy.load_state_dict(released.state_dict(), strict=True)
        assert torch.equal(copy.eval()(image), logits)
    assert isinstance(logits, torch.Tensor) and logits.shape == (1, 1, 32, 32) and torch.isfinite(logits).all()


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
