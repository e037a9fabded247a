import pytest
import torch

from conftest import SMALL_BACKBONES
from irstd.models import available_backbones, build_backbone, register_backbone


def test_registry_lists_unet_and_rejects_unknown_names():
    assert "unet" in available_backbones()
    with pytest.raises(ValueError, match="model.backbone.name='resnet'"):
        build_backbone("resnet")
    with pytest.raises(TypeError, match="model.backbone"):
        build_backbone("unet", widht=8)


@pytest.mark.parametrize("size", [(64, 64), (96, 160)])
def test_unet_maps_images_to_same_size_logits_and_backpropagates(size):
    net = build_backbone("unet", width=4, depth=3)
    image = torch.randn(2, 1, *size, requires_grad=True)
    logits = net(image)
    assert logits.shape == (2, 1, *size)
    logits.sum().backward()
    assert image.grad is not None and all(p.grad is not None for p in net.parameters())


def test_unet_starts_at_the_target_prior():
    net = build_backbone("unet", width=4, depth=2, target_prior=0.01).eval()
    with torch.no_grad():
        probs = torch.sigmoid(net(torch.zeros(1, 1, 32, 32)))
    # with zero input the features are constant, so the output sits near the prior
    assert probs.mean().item() == pytest.approx(0.01, rel=0.5)


def test_unet_width_scales_parameters():
    small = sum(p.numel() for p in build_backbone("unet", width=4).parameters())
    large = sum(p.numel() for p in build_backbone("unet", width=8).parameters())
    assert 3.5 < large / small < 4.5  # conv weights grow with width squared


def test_a_registered_backbone_is_built_by_name(monkeypatch):
    import irstd.models

    monkeypatch.setattr(irstd.models.BACKBONES, "_entries", dict(irstd.models.BACKBONES._entries))
    register_backbone("tiny_unet", "irstd.models.unet:UNet")
    assert "tiny_unet" in available_backbones()
    net = build_backbone("tiny_unet", width=2, depth=1)
    assert net(torch.zeros(1, 1, 32, 32)).shape == (1, 1, 32, 32)


def test_every_registered_backbone_has_small_test_settings():
    from irstd.models import available_backbones

    assert sorted(SMALL_BACKBONES) == sorted(available_backbones())


@pytest.mark.parametrize("name", sorted(SMALL_BACKBONES))
def test_output_prior_sets_every_logit_layer_and_the_logits_follow(name):
    from irstd.training.module import IRSTDModule

    torch.manual_seed(0)
    module = IRSTDModule({"name": name, **SMALL_BACKBONES[name]}, output_prior=0.001)
    layers = module.net.logit_layers()
    assert layers, name
    for layer in layers:
        torch.testing.assert_close(layer.bias, torch.full_like(layer.bias, torch.logit(torch.tensor(0.001)).item()))
    torch.manual_seed(0)
    default = IRSTDModule({"name": name, **SMALL_BACKBONES[name]})
    image = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        probs, default_probs = (m.eval().probabilities(image) for m in (module, default))
    # only the bias is set: the features still vary the logits (widely under PAL's fan-out Kaiming init of
    # GGL-Net's and ALCL-Net's heads), but the map starts well below 0.5 and far below the default init's
    assert probs.median() < 0.15, (name, probs.median())
    assert probs.median() < default_probs.median() / 4, (name, probs.median(), default_probs.median())


def test_output_prior_must_be_a_probability_and_needs_declared_logit_layers():
    from irstd.models import set_output_prior

    with pytest.raises(ValueError, match="output_prior"):
        set_output_prior(build_backbone("unet", width=4, depth=2), 1.0)
    with pytest.raises(ValueError, match="logit_layers"):
        set_output_prior(torch.nn.Conv2d(1, 1, 1), 0.01)
    with pytest.raises(ValueError, match="output_weight_std"):
        set_output_prior(build_backbone("unet", width=4, depth=2), 0.01, weight_std=-1.0)


def test_output_weight_std_draws_the_logit_weights_and_leaves_the_rest():
    from irstd.training.module import IRSTDModule

    torch.manual_seed(0)
    default = IRSTDModule({"name": "alcnet"}, output_prior=0.001)
    torch.manual_seed(0)
    filled = IRSTDModule({"name": "alcnet"}, output_prior=0.001, output_weight_std=0.01)
    (head,) = filled.net.logit_layers()
    (default_head,) = default.net.logit_layers()
    assert not torch.equal(head.weight, default_head.weight)
    assert head.weight.abs().max() < 0.05 < default_head.weight.abs().max()
    torch.testing.assert_close(head.bias, default_head.bias)
    others = [(n, p) for n, p in filled.net.named_parameters() if not n.startswith("head.block.4")]
    reference = dict(default.net.named_parameters())
    assert others and all(torch.equal(p, reference[n]) for n, p in others)
