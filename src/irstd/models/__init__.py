"""Backbones: one file each, picked by name through a lazy registry.

Output contract: every backbone maps B x 1 x H x W normalised images (H, W
multiples of 32) to B x 1 x H x W *logits*; the sigmoid lives in one place,
`IRSTDModule.probabilities`. A backbone with deep supervision returns a list of
logit maps in training mode (the loss sums over them) and one map in eval mode.
"""

from __future__ import annotations

import importlib

from torch import nn

# name -> "module:Class"; modules are imported only when their backbone is built.
_REGISTRY: dict[str, str] = {
    "acm": "irstd.models.acm:ACM",
    "alcnet": "irstd.models.alcnet:ALCNet",
    "dnanet": "irstd.models.dnanet:DNANet",
    "unet": "irstd.models.unet:UNet",
}


def available_backbones() -> list[str]:
    return sorted(_REGISTRY)


def register_backbone(name: str, target: str) -> None:
    """Make `build_backbone(name)` import `target` ("package.module:Class") on first use."""
    _REGISTRY[name] = target


def build_backbone(name: str, **kwargs) -> nn.Module:
    """Instantiate the backbone registered under `name` with its keyword arguments."""
    if name not in _REGISTRY:
        raise ValueError(f"model.backbone.name={name!r} is not a known backbone; "
                         f"choose one of {available_backbones()}")
    module_name, class_name = _REGISTRY[name].split(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    try:
        return cls(**kwargs)
    except TypeError as err:
        raise TypeError(f"model.backbone ({name}): {err}") from err
