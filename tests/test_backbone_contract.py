"""The contract every registered backbone keeps (irstd.models): logit maps at input size, deep supervision only in
training, gradients to every parameter its forward reads, strict weight round trips, a shipped model config.

Run at the small widths of conftest.SMALL_BACKBONES; what is particular to one network (its released layout and
parameter count, its heads, its errors) is in its own tests/test_models_<name>.py."""

import pytest
import torch
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from conftest import (
    SMALL_BACKBONES,
    UNUSED_PARAMETERS,
    compose_config,
    randomised_eval,
    seeded_backbone,
    unused_parameters,
)
from irstd.config import config_root
from irstd.models import available_backbones, input_side_multiple, set_output_prior
from irstd.models.weights import load_official_weights

pytestmark = pytest.mark.usefixtures("one_thread")

BACKBONES = sorted(available_backbones())
HEIGHT, WIDTH = 32, 64  # multiples of every backbone's side multiple; not square, so that no axis swap passes


def small(name: str, seed: int = 0) -> torch.nn.Module:
    net = seeded_backbone(name, seed, **SMALL_BACKBONES[name])
    multiple = input_side_multiple(net)
    assert HEIGHT % multiple == 0 and WIDTH % multiple == 0, (name, multiple)
    return net


@pytest.mark.parametrize("name", BACKBONES)
def test_training_returns_logit_maps_and_backpropagates_to_every_parameter_it_reads(name):
    net = small(name).train()
    # a batch of 2: ISTDU-Net and UIU-Net batch-normalise pooled features and refuse a single training image
    image = torch.randn(2, 1, HEIGHT, WIDTH, requires_grad=True)
    output = net(image)
    maps = output if isinstance(output, list) else [output]
    assert all(isinstance(logits, torch.Tensor) for logits in maps), name
    for logits in maps:
        assert logits.shape == (2, 1, HEIGHT, WIDTH) and torch.isfinite(logits).all(), name
    sum(logits.square().mean() for logits in maps).backward()
    assert image.grad is not None and torch.isfinite(image.grad).all()
    trainable = {key: p for key, p in net.named_parameters() if p.requires_grad}
    without_grad = {key for key, p in trainable.items() if p.grad is None}
    assert without_grad == unused_parameters(name, net) & set(trainable), name
    assert all(torch.isfinite(p.grad).all() for p in trainable.values() if p.grad is not None), name


@pytest.mark.parametrize("name", BACKBONES)
def test_unused_parameters_are_declared(name):
    """A backbone whose forward leaves parameters without a gradient says so (DDP must look for them)."""
    net = small(name)
    assert bool(unused_parameters(name, net)) == (name in UNUSED_PARAMETERS), name
    assert getattr(net, "has_unused_parameters", False) == (name in UNUSED_PARAMETERS), name


@pytest.mark.parametrize("name", BACKBONES)
def test_eval_returns_one_logit_map_and_the_weights_round_trip(name, tmp_path):
    net = randomised_eval(small(name))
    # logit layers biased to logit(0.01): a map of probabilities (a sigmoid after them) could not go below 0
    set_output_prior(net, 0.01)
    image = torch.randn(1, 1, HEIGHT, WIDTH)
    with torch.no_grad():
        logits = net(image)
    assert isinstance(logits, torch.Tensor) and logits.shape == (1, 1, HEIGHT, WIDTH), name
    assert torch.isfinite(logits).all() and (logits < 0).any(), name
    state = net.state_dict()
    # a fresh copy (other initial weights), loaded strictly: from the state dict, from a file of it, and from a file
    # in the release's layout (`{'state_dict': {'model.<key>': ...}}`)
    copy = small(name, seed=1)
    copy.load_state_dict(state, strict=True)
    plain, release = tmp_path / "plain.pth", tmp_path / "release.pth.tar"
    torch.save(state, plain)
    torch.save({"state_dict": {f"model.{key}": value for key, value in state.items()}}, release)
    from_files = [small(name, seed=1), small(name, seed=2)]
    for target, path in zip(from_files, (plain, release), strict=True):
        load_official_weights(target, path)
    with torch.no_grad():
        for target in (copy, *from_files):
            assert torch.equal(target.eval()(image), logits), name


@pytest.mark.parametrize("name", BACKBONES)
def test_shipped_config_names_the_backbone_and_composes(name, tmp_path):
    config = OmegaConf.load(config_root() / "model" / f"{name}.yaml")
    backbone = OmegaConf.to_container(config.backbone)
    assert backbone["name"] == name
    try:
        composed = compose_config("train", tmp_path, [f"model={name}"])
        assert OmegaConf.to_container(composed.model.backbone, resolve=True) == backbone
    finally:
        GlobalHydra.instance().clear()
