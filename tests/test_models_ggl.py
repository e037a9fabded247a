"""GGL-Net as in PAL (YuChuang1205/PAL): layout, the gradient operator, the 3 -> 1 channel fold, behaviour."""

import pytest
import torch
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from conftest import compose_config
from irstd.config import config_root
from irstd.models import build_backbone
from irstd.models.ggl import collapse_rgb_input, gradient_magnitude

# PAL's GGL_No_Sigmoid() (3 input channels) and the same network on one channel: the image convolution
# (16 x c x 3 x 3) and the five gradient encoders (w x c x 3 x 3, w = 16 .. 256) lose 2 of their 3 input channels
PAL_PARAMETERS = 8_988_093
ONE_CHANNEL_PARAMETERS = PAL_PARAMETERS - 2 * 9 * (16 + 16 + 32 + 64 + 128 + 256)
SMALL = {"channels": [8, 8, 8, 8, 8]}
# the convolutions that read the image or its gradient map
INPUT_READERS = ["stage.layer1.0.weight"] + [f"stage.Res{level}.layer1.0.weight" for level in range(1, 6)]


def count(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def randomised(net: torch.nn.Module) -> torch.nn.Module:
    """Random batch-norm statistics and affine parameters, so that eval mode is not the identity normalisation."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.normal_(0, 0.2, generator=generator)
                module.running_var.uniform_(0.5, 2.0, generator=generator)
                module.weight.uniform_(0.5, 1.5, generator=generator)
                module.bias.normal_(0, 0.2, generator=generator)
    return net.eval()


def test_parameter_counts_and_state_dict_layout():
    torch.manual_seed(0)
    pal = build_backbone("ggl", in_channels=3)
    ours = build_backbone("ggl")
    assert count(pal) == PAL_PARAMETERS and count(ours) == ONE_CHANNEL_PARAMETERS == 8_978_877
    shapes = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    pal_shapes = {k: tuple(v.shape) for k, v in pal.state_dict().items()}
    assert shapes.keys() == pal_shapes.keys() and len(shapes) == 500
    assert {k for k in shapes if shapes[k] != pal_shapes[k]} == set(INPUT_READERS)
    # a sample of PAL's names; the gradient operator has no state at all
    assert shapes["stage.layer1.0.weight"] == (16, 1, 3, 3)
    assert shapes["stage.Res5.layer1.0.weight"] == (256, 1, 3, 3)
    assert shapes["stage.Res5.layer2.0.weight"] == (256, 512, 3, 3)
    assert shapes["stage.Res3.layer1.3.fc.0.weight"] == (16, 64)
    assert shapes["stage.resnet1_1.layer.3.weight"] == (16, 16, 3, 3)
    assert shapes["stage.resnet2_1.layer1.4.weight"] == (32, 32, 3, 3)
    assert shapes["stage.resnet2_1.layer2.0.weight"] == (32, 16, 3, 3)
    assert shapes["stage.resnet4_3.SEAttention.fc.2.weight"] == (128, 32)
    assert shapes["lcl5.layer1.2.weight"] == (256, 256, 3, 3)
    assert shapes["sbam4.hl_layer.1.weight"] == (128, 256, 1, 1)
    assert shapes["sbam1.hl_layer_2.se.0.weight"] == (2, 16, 1, 1)
    assert shapes["sbam1.ll_layer.conv.bias"] == (1,)
    assert shapes["layer.2.weight"] == (1, 16, 1, 1)
    assert not any(name for name, _ in ours.named_buffers() if not name.split(".")[-1].startswith(
        ("running_", "num_batches")))


def test_initialisation_follows_pal():
    torch.manual_seed(0)
    net = build_backbone("ggl", **SMALL)
    # Kaiming-normal (fan_out) convolutions with zero bias, except the fusions' attention convolutions
    weight = net.stage.Res1.layer2[0].weight  # 8 x 16 x 3 x 3: fan_out 8 * 9
    assert torch.all(net.layer[2].bias == 0) and torch.all(net.stage.layer1[0].bias == 0)
    assert weight.std().item() == pytest.approx((2 / (8 * 9)) ** 0.5, rel=0.2)
    assert net.sbam1.ll_layer.conv.bias.abs().item() > 0


def test_gradient_magnitude_is_half_the_central_differences_with_zero_padding():
    x = torch.randn(2, 3, 6, 7)
    g = gradient_magnitude(x)
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1))
    for i, j in [(0, 0), (2, 3), (5, 6), (3, 0)]:
        dx = (padded[..., i + 1, j + 2] - padded[..., i + 1, j]) / 2
        dy = (padded[..., i, j + 1] - padded[..., i + 2, j + 1]) / 2
        torch.testing.assert_close(g[..., i, j], (dx**2 + dy**2).sqrt())
    assert g.shape == x.shape and (g >= 0).all()


def test_shipped_config_builds_the_one_channel_network_and_composes(tmp_path):
    cfg = OmegaConf.load(config_root() / "model" / "ggl.yaml")
    assert cfg.backbone.name == "ggl"
    assert count(build_backbone(**OmegaConf.to_container(cfg.backbone))) == ONE_CHANNEL_PARAMETERS
    try:
        composed = compose_config("train", tmp_path, ["model=ggl"])
        assert OmegaConf.to_container(composed.model.backbone) == OmegaConf.to_container(cfg.backbone)
    finally:
        GlobalHydra.instance().clear()


@pytest.mark.parametrize("shape", [(1, 1, 64, 64), (2, 1, 32, 80)])
def test_training_returns_one_logit_map_and_backpropagates(shape):
    torch.manual_seed(0)
    net = build_backbone("ggl", **SMALL).train()
    logits = net(torch.randn(*shape))
    assert isinstance(logits, torch.Tensor) and logits.shape == shape and torch.isfinite(logits).all()
    logits.square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())


def test_eval_returns_one_map_and_weights_round_trip():
    torch.manual_seed(0)
    net = randomised(build_backbone("ggl", **SMALL))
    image = torch.randn(1, 1, 32, 48)
    with torch.no_grad():
        logits = net(image)
        copy = build_backbone("ggl", **SMALL)
        copy.load_state_dict(net.state_dict(), strict=True)
        assert torch.equal(copy.eval()(image), logits)
    assert logits.shape == (1, 1, 32, 48) and ((logits < 0).any() or (logits > 1).any())
    assert net.logit_layers() == [net.layer[2]]


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_pal_three_channel_weights_fold_into_the_one_channel_network(mode):
    torch.manual_seed(0)
    pal = randomised(build_backbone("ggl", in_channels=3, **SMALL))
    ours = build_backbone("ggl", **SMALL)
    ours.load_state_dict(collapse_rgb_input(pal.state_dict()), strict=True)
    grey = torch.randn(2, 1, 32, 32)
    pal.train(mode == "train")
    ours.train(mode == "train")
    with torch.no_grad():
        torch.testing.assert_close(ours(grey), pal(grey.expand(-1, 3, -1, -1)), atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="not a GGL-Net state dict"):
        collapse_rgb_input({"layer.0.weight": torch.zeros(1)})


def test_bad_sizes_and_configurations_are_rejected():
    net = build_backbone("ggl", **SMALL)
    with pytest.raises(ValueError, match="multiples of 16"):
        net(torch.zeros(1, 1, 40, 32))
    with pytest.raises(ValueError, match="5 channel widths"):
        build_backbone("ggl", channels=[16, 32, 64, 128])
    with pytest.raises(ValueError, match=">= 8"):
        build_backbone("ggl", channels=[4, 8, 8, 8, 8])
