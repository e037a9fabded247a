"""ISTDU-Net as trained by BasicIRSTD: architecture (pinned to the release's layout and parameter count),
logits at input size, side-size check, strict loading."""

import math

import pytest
import torch
from omegaconf import OmegaConf

from conftest import compose_config
from irstd.config import config_root
from irstd.models import build_backbone
from irstd.models.weights import load_official_weights

REFERENCE_PARAMETERS = 2_761_138  # BasicIRSTD's ISTDU_Net()
HEAD_DET_PARAMETERS = 9_265  # the release's detection head, never read by BasicIRSTD's forward
SMALL = {"layers": [1, 1, 1, 1], "channels": [8, 8, 8, 8], "attention_units": 8}
BN_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")

# The release's configuration, written out: blocks and planes per stage, stem width, ResNeSt settings.
LAYERS, PLANES, STEM, RADIX, GROUPS, MEMORY = (1, 2, 4, 8), (16, 32, 64, 128), 16, 2, 4, 64


def _bn(prefix: str, channels: int, affine: bool = True) -> dict[str, tuple[int, ...]]:
    names = ("weight", "bias", "running_mean", "running_var") if affine else ("running_mean", "running_var")
    return {f"{prefix}.{name}": (channels,) for name in names} | {f"{prefix}.num_batches_tracked": ()}


def _conv(prefix: str, cin: int, cout: int, k: int, bias: bool = False, groups: int = 1) -> dict:
    return {f"{prefix}.weight": (cout, cin // groups, k, k)} | ({f"{prefix}.bias": (cout,)} if bias else {})


def reference_shapes() -> dict[str, tuple[int, ...]]:
    """state_dict key -> shape of the released ISTDU_Net (ResNeSt bottlenecks with split attention,
    ResNet-D shortcuts, external attention on the skips, two heads)."""
    shapes = _bn("down.stem.0", 1, affine=False) | _conv("down.stem.1", 1, STEM, 3) | _bn("down.stem.2", STEM)
    width_in = STEM
    for level, (blocks, planes) in enumerate(zip(LAYERS, PLANES, strict=True), start=1):
        width = planes * 16 // 64 * GROUPS  # bottleneck_width 16
        hidden = max(width * RADIX // 4, 32)
        for block in range(blocks):
            p = f"down.down.layer{level}.{block}"
            shapes |= _conv(f"{p}.conv1", width_in, width, 1) | _bn(f"{p}.bn1", width)
            shapes |= _conv(f"{p}.conv2.conv", width, width * RADIX, 3, groups=GROUPS * RADIX)
            shapes |= _bn(f"{p}.conv2.bn0", width * RADIX)
            shapes |= _conv(f"{p}.conv2.fc1", width, hidden, 1, bias=True, groups=GROUPS)
            shapes |= _bn(f"{p}.conv2.bn1", hidden)
            shapes |= _conv(f"{p}.conv2.fc2", hidden, width * RADIX, 1, bias=True, groups=GROUPS)
            shapes |= _conv(f"{p}.conv3", width, 4 * planes, 1) | _bn(f"{p}.bn3", 4 * planes)
            if block == 0:
                shapes |= _conv(f"{p}.downsample.1", width_in, 4 * planes, 1) | _bn(f"{p}.downsample.2", 4 * planes)
            width_in = 4 * planes
    outs = [4 * planes for planes in PLANES]  # 64, 128, 256, 512
    for step, (cin, cout) in enumerate([(outs[3], outs[2]), (outs[2], outs[1]), (outs[1], outs[0])], start=1):
        shapes |= _conv(f"up.up{step}.0", cin, cout, 1) | _bn(f"up.up{step}.1", cout)
    for head in ("headDet", "headSeg"):
        shapes |= _conv(f"{head}.head.0", outs[0], outs[0] // 4, 3) | _bn(f"{head}.head.1", outs[0] // 4)
        shapes |= _conv(f"{head}.head.3", outs[0] // 4, 1, 1, bias=True)
    for level, c in enumerate(outs, start=1):
        p = f"DN.X{level}"
        shapes |= _conv(f"{p}.conv1", c, c, 1, bias=True)
        shapes |= {f"{p}.linear_0.weight": (MEMORY, c, 1), f"{p}.linear_1.weight": (c, MEMORY, 1)}
        shapes |= _conv(f"{p}.conv2.0", c, c, 1) | _bn(f"{p}.conv2.1", c)
    return shapes


def count_parameters(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


@pytest.fixture(scope="module")
def released() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_backbone("istdunet")


@pytest.fixture(scope="module")
def small() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_backbone("istdunet", **SMALL)


def test_default_is_the_released_network_key_for_key(released):
    expected = reference_shapes()
    trainable = sum(math.prod(s) for key, s in expected.items() if not key.endswith(BN_BUFFERS))
    assert trainable == REFERENCE_PARAMETERS == count_parameters(released)
    assert {key: tuple(value.shape) for key, value in released.state_dict().items()} == expected
    assert len(expected) == 512
    assert sum(p.numel() for key, p in released.named_parameters() if key.startswith("headDet.")) == \
        HEAD_DET_PARAMETERS


def test_shipped_config_composes_and_builds_the_released_network(tmp_path):
    config = OmegaConf.load(config_root() / "model" / "istdunet.yaml")
    assert OmegaConf.to_container(config.backbone)["name"] == "istdunet"
    cfg = compose_config("train", tmp_path / "run", ["model=istdunet"])
    backbone = OmegaConf.to_container(cfg.model.backbone, resolve=True)
    assert backbone == OmegaConf.to_container(config.backbone)
    assert count_parameters(build_backbone(**backbone)) == REFERENCE_PARAMETERS


def test_external_attention_memories_start_transposed_but_train_independently(released):
    for level in range(1, 5):
        attention = getattr(released.DN, f"X{level}")
        assert torch.equal(attention.linear_0.weight, attention.linear_1.weight.permute(1, 0, 2))
        assert attention.linear_0.weight.data_ptr() != attention.linear_1.weight.data_ptr()


@pytest.mark.parametrize("shape", [(2, 1, 32, 32), (2, 1, 24, 40)])
def test_training_returns_one_logit_map_and_backpropagates(small, shape):
    image = torch.randn(*shape, requires_grad=True)
    logits = small.train()(image)
    assert isinstance(logits, torch.Tensor) and logits.shape == shape and torch.isfinite(logits).all()
    assert (logits < 0).any() or (logits > 1).any()  # logits, not probabilities
    logits.square().mean().backward()
    assert image.grad is not None and torch.isfinite(image.grad).all()
    without_grad = {key for key, p in small.named_parameters() if p.grad is None}
    assert without_grad == {key for key, _ in small.named_parameters() if key.startswith("headDet.")}
    small.zero_grad(set_to_none=True)


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


def test_weights_round_trip_through_a_release_style_file(small, tmp_path):
    with torch.no_grad():
        small.train()(torch.randn(2, 1, 32, 32))  # move the running statistics
    path = tmp_path / "istdunet.pth.tar"
    torch.save({"state_dict": {f"model.{k}": v for k, v in small.state_dict().items()}}, path)
    torch.manual_seed(1)
    copy = build_backbone("istdunet", **SMALL)
    load_official_weights(copy, path)
    image = torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(copy.eval()(image), small.eval()(image))


def test_bad_sizes_configurations_and_a_single_training_image_are_rejected(small):
    with pytest.raises(ValueError, match="multiples of 8, got 36 x 32"):
        small.eval()(torch.randn(1, 1, 36, 32))
    with pytest.raises(ValueError, match="batch of at least 2"):
        small.train()(torch.randn(1, 1, 32, 32))
    with pytest.raises(ValueError, match="ISTDUNet needs 4 layers"):
        build_backbone("istdunet", layers=[1, 2, 4])
    with pytest.raises(ValueError, match="multiple of 8"):
        build_backbone("istdunet", channels=[4, 32, 64, 128])
