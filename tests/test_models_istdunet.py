"""ISTDU-Net as trained by BasicIRSTD: architecture (pinned to the release's layout and parameter count), the logit
head, side-size and batch checks (the contract every backbone keeps: tests/test_backbone_contract.py)."""

from functools import partial

import pytest
import torch
from omegaconf import OmegaConf

from conftest import (
    bn_shapes,
    conv_shapes,
    count_parameters,
    seeded_backbone,
    trainable_parameters,
    unused_parameters,
)
from irstd.config import config_root
from irstd.models import build_backbone

REFERENCE_PARAMETERS = 2_761_138  # BasicIRSTD's ISTDU_Net()
HEAD_DET_PARAMETERS = 9_265  # the release's detection head, never read by BasicIRSTD's forward
SMALL = {"layers": [1, 1, 1, 1], "channels": [8, 8, 8, 8], "attention_units": 8}

# The release's configuration, written out: blocks and planes per stage, stem width, ResNeSt settings.
LAYERS, PLANES, STEM, RADIX, GROUPS, MEMORY = (1, 2, 4, 8), (16, 32, 64, 128), 16, 2, 4, 64
conv = partial(conv_shapes, bias=False)  # the release's convolutions have no bias unless marked


def reference_shapes() -> dict[str, tuple[int, ...]]:
    """state_dict key -> shape of the released ISTDU_Net (ResNeSt bottlenecks with split attention,
    ResNet-D shortcuts, external attention on the skips, two heads)."""
    shapes = bn_shapes("down.stem.0", 1, affine=False) | conv("down.stem.1", 1, STEM, 3)
    shapes |= bn_shapes("down.stem.2", STEM)
    width_in = STEM
    for level, (blocks, planes) in enumerate(zip(LAYERS, PLANES, strict=True), start=1):
        width = planes * 16 // 64 * GROUPS  # bottleneck_width 16
        hidden = max(width * RADIX // 4, 32)
        for block in range(blocks):
            p = f"down.down.layer{level}.{block}"
            shapes |= conv(f"{p}.conv1", width_in, width, 1) | bn_shapes(f"{p}.bn1", width)
            shapes |= conv(f"{p}.conv2.conv", width, width * RADIX, 3, groups=GROUPS * RADIX)
            shapes |= bn_shapes(f"{p}.conv2.bn0", width * RADIX)
            shapes |= conv(f"{p}.conv2.fc1", width, hidden, 1, bias=True, groups=GROUPS)
            shapes |= bn_shapes(f"{p}.conv2.bn1", hidden)
            shapes |= conv(f"{p}.conv2.fc2", hidden, width * RADIX, 1, bias=True, groups=GROUPS)
            shapes |= conv(f"{p}.conv3", width, 4 * planes, 1) | bn_shapes(f"{p}.bn3", 4 * planes)
            if block == 0:
                shapes |= conv(f"{p}.downsample.1", width_in, 4 * planes, 1)
                shapes |= bn_shapes(f"{p}.downsample.2", 4 * planes)
            width_in = 4 * planes
    outs = [4 * planes for planes in PLANES]  # 64, 128, 256, 512
    for step, (cin, cout) in enumerate([(outs[3], outs[2]), (outs[2], outs[1]), (outs[1], outs[0])], start=1):
        shapes |= conv(f"up.up{step}.0", cin, cout, 1) | bn_shapes(f"up.up{step}.1", cout)
    for head in ("headDet", "headSeg"):
        shapes |= conv(f"{head}.head.0", outs[0], outs[0] // 4, 3) | bn_shapes(f"{head}.head.1", outs[0] // 4)
        shapes |= conv(f"{head}.head.3", outs[0] // 4, 1, 1, bias=True)
    for level, c in enumerate(outs, start=1):
        p = f"DN.X{level}"
        shapes |= conv(f"{p}.conv1", c, c, 1, bias=True)
        shapes |= {f"{p}.linear_0.weight": (MEMORY, c, 1), f"{p}.linear_1.weight": (c, MEMORY, 1)}
        shapes |= conv(f"{p}.conv2.0", c, c, 1) | bn_shapes(f"{p}.conv2.1", c)
    return shapes


@pytest.fixture(scope="module")
def released() -> torch.nn.Module:
    return seeded_backbone("istdunet")


@pytest.fixture(scope="module")
def small() -> torch.nn.Module:
    return seeded_backbone("istdunet", **SMALL)


def test_default_is_the_released_network_key_for_key(released):
    expected = reference_shapes()
    assert trainable_parameters(expected) == REFERENCE_PARAMETERS == count_parameters(released)
    assert {key: tuple(value.shape) for key, value in released.state_dict().items()} == expected
    assert len(expected) == 512
    unused = unused_parameters("istdunet", released)
    assert sum(p.numel() for key, p in released.named_parameters() if key in unused) == HEAD_DET_PARAMETERS


def test_shipped_config_builds_the_released_network():
    config = OmegaConf.load(config_root() / "model" / "istdunet.yaml")
    assert count_parameters(build_backbone(**OmegaConf.to_container(config.backbone))) == REFERENCE_PARAMETERS


def test_external_attention_memories_start_transposed_but_train_independently(released):
    for level in range(1, 5):
        attention = getattr(released.DN, f"X{level}")
        assert torch.equal(attention.linear_0.weight, attention.linear_1.weight.permute(1, 0, 2))
        assert attention.linear_0.weight.data_ptr() != attention.linear_1.weight.data_ptr()


def test_the_released_network_runs_in_eval_at_a_small_size(released):
    with torch.no_grad():
        logits = released.eval()(torch.randn(1, 1, 32, 48))
    assert isinstance(logits, torch.Tensor) and logits.shape == (1, 1, 32, 48) and torch.isfinite(logits).all()


def test_logit_layer_and_output_prior():
    from irstd.training.module import IRSTDModule

    torch.manual_seed(0)
    module = IRSTDModule({"name": "istdunet", **SMALL}, output_prior=0.001)
    assert module.net.logit_layers() == [module.net.headSeg.head[3]]
    module.eval()
    with torch.no_grad():
        probs = module.probabilities(torch.randn(2, 1, 32, 32))
    assert probs.median() < 0.05


def test_bad_sizes_configurations_and_a_single_training_image_are_rejected(small):
    with pytest.raises(ValueError, match="multiples of 8, got 36 x 32"):
        small.eval()(torch.randn(1, 1, 36, 32))
    with pytest.raises(ValueError, match="batch of at least 2"):
        small.train()(torch.randn(1, 1, 32, 32))
    with pytest.raises(ValueError, match="ISTDUNet needs 4 layers"):
        build_backbone("istdunet", layers=[1, 2, 4])
    with pytest.raises(ValueError, match="multiple of 8"):
        build_backbone("istdunet", channels=[4, 32, 64, 128])
