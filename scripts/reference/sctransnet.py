"""Reference adapter for SCTransNet (xdFai/SCTransNet, `model/SCTransNet.py`, configuration `get_CTranS_config`).

Shims, all here and none in the fetched files: the release imports einops (`rearrange`, only for four plain
reshapes, written below), ml_collections (a ConfigDict, replaced by an attribute dict) and thop (`profile`, used
only in its `__main__`). Its output passes through `torch.sigmoid`; the wrapper lets only the sigmoids called
from the top-level `SCTransNet.forward` through unchanged, so the comparison is made on logits (the sigmoid of
its channel gate `CCA` stays). Its `mode` argument ('train': six maps, else the last one) follows the module's
training flag, as irstd's does.
"""

from __future__ import annotations

import importlib.util
import math
import re
import sys
import types
from pathlib import Path

import torch
from torch import nn

REPO = "xdFai/SCTransNet"
INPUT = (2, 1, 64, 64)


def _rearrange(tensor: torch.Tensor, pattern: str, **sizes: int) -> torch.Tensor:
    """einops.rearrange for patterns of names and parenthesised groups, without ellipsis or repeats."""
    def parse(side: str) -> list[list[str]]:
        return [group.split() if group else [name]
                for group, name in re.findall(r"\(([^)]*)\)|(\w+)", side)]

    left, right = (parse(side) for side in pattern.split("->"))
    known = dict(sizes)
    for group, extent in zip(left, tensor.shape, strict=True):
        missing = [name for name in group if name not in known]
        product = 1
        for name in group:
            product *= known.get(name, 1)
        if missing:
            known[missing[0]] = extent // product
    axes = [name for group in left for name in group]
    flat = tensor.reshape([known[name] for name in axes])
    order = [axes.index(name) for group in right for name in group]
    out = flat.permute(order)
    return out.reshape([math.prod(known[name] for name in group) for group in right])


class _ConfigDict(dict):
    __getattr__ = dict.__getitem__
    __setattr__ = dict.__setitem__


def _install_shims() -> None:
    einops = types.ModuleType("einops")
    einops.rearrange = _rearrange
    ml_collections = types.ModuleType("ml_collections")
    ml_collections.ConfigDict = _ConfigDict
    thop = types.ModuleType("thop")
    thop.profile = None
    for name, module in (("einops", einops), ("ml_collections", ml_collections), ("thop", thop)):
        sys.modules.setdefault(name, module)


def build_reference(root: Path) -> nn.Module:
    _install_shims()
    spec = importlib.util.spec_from_file_location("reference_sctransnet", Path(root) / "model" / "SCTransNet.py")
    released = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(released)
    top_forward = released.SCTransNet.forward.__code__

    class TorchWithoutFinalSigmoid(types.ModuleType):
        """`torch`, except that `sigmoid` called from SCTransNet.forward itself is the identity."""

        def __getattr__(self, name):
            return getattr(torch, name)

        @staticmethod
        def sigmoid(x):
            return x if sys._getframe(1).f_code is top_forward else torch.sigmoid(x)

    released.torch = TorchWithoutFinalSigmoid("torch")

    class Reference(released.SCTransNet):
        def forward(self, x):
            self.mode = "train" if self.training else "test"
            output = super().forward(x)
            return list(output) if isinstance(output, tuple) else output

    return Reference(released.get_CTranS_config(), n_channels=1, n_classes=1, img_size=256, mode="train",
                     deepsuper=True)


def build_ours() -> nn.Module:
    from irstd.models import build_backbone

    return build_backbone("sctransnet")
