"""Backbones: one file each, picked by name through a lazy registry.

Output contract: every backbone maps B x 1 x H x W normalised images (H, W
multiples of 32) to B x 1 x H x W *logits*; the sigmoid lives in one place,
`IRSTDModule.probabilities`. A backbone with deep supervision returns a list of
logit maps in training mode (the loss sums over them) and one map in eval mode.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from irstd.registry import Registry

BACKBONES = Registry("backbone", "model.backbone.name", {
    "acm": "irstd.models.acm:ACM",
    "alcnet": "irstd.models.alcnet:ALCNet",
    "alclnet": "irstd.models.alclnet:ALCLNet",
    "dnanet": "irstd.models.dnanet:DNANet",
    "ggl": "irstd.models.ggl:GGLNet",
    "istdunet": "irstd.models.istdunet:ISTDUNet",
    "mlclnet": "irstd.models.mlclnet:MLCLNet",
    "msdanet": "irstd.models.msdanet:MSDANet",
    "mshnet": "irstd.models.mshnet:MSHNet",
    "rdian": "irstd.models.rdian:RDIAN",
    "sctransnet": "irstd.models.sctransnet:SCTransNet",
    "uiunet": "irstd.models.uiunet:UIUNet",
    "unet": "irstd.models.unet:UNet",
})


def available_backbones() -> list[str]:
    return BACKBONES.names()


def register_backbone(name: str, target: str) -> None:
    """Make `build_backbone(name)` import `target` ("package.module:Class") on first use."""
    BACKBONES.register(name, target)


def build_backbone(name: str, **kwargs) -> nn.Module:
    """Instantiate the backbone registered under `name` with its keyword arguments."""
    return BACKBONES.build(name, **kwargs)


def final_output(output: Tensor | list[Tensor] | tuple[Tensor, ...]) -> Tensor:
    """A backbone's final map: the last deep-supervision head (what it returns in eval mode), or its only map."""
    return output[-1] if isinstance(output, (list, tuple)) else output


def input_side_multiple(net: nn.Module) -> int:
    """The multiple every input side must be, as the backbone declares it (`side_multiple`: 16 for most, 1 for
    those that take any size); 1 for a registered backbone that declares none (its own errors then speak)."""
    return int(getattr(net, "side_multiple", 1))


def set_output_prior(net: nn.Module, prior: float, weight_std: float | None = None) -> None:
    """Start every logit map at probability `prior` (RetinaNet's init, Lin et al. 2017): the biases of the
    backbone's `logit_layers()` become logit(prior). Targets cover about 0.1 % of an infrared frame; from the
    default init (probability ~0.5 everywhere) a network spends its first hundreds of steps unlearning an
    all-target map, and under a soft IoU loss it hardly leaves it (docs/labels/recipes.md).

    `weight_std` also draws the logit layers' weights from N(0, weight_std), RetinaNet's fill: a head whose
    default weights all happen to be negative on ReLU features can only lower its logits, and from the prior's
    low start the soft IoU loss keeps it there (ALCNet's two-channel head on 2 of 3 seeds)."""
    if not 0 < prior < 1:
        raise ValueError(f"model.output_prior must lie in (0, 1), got {prior}")
    layers = getattr(net, "logit_layers", None)
    if layers is None:
        raise ValueError(f"{type(net).__name__} declares no logit_layers(), so model.output_prior cannot be set")
    if weight_std is not None and not weight_std >= 0:
        raise ValueError(f"model.output_weight_std must be >= 0, got {weight_std}")
    with torch.no_grad():
        for layer in layers():
            layer.bias.fill_(math.log(prior / (1 - prior)))
            if weight_std is not None:
                layer.weight.normal_(0, weight_std)
