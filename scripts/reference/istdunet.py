"""ISTDU-Net against BasicIRSTD's `model/ISTDUNet` (the version its released weights were trained with).

The reference folder is imported as a package of its own (it has no `__init__.py`, and BasicIRSTD's
`model/__init__.py` would import every network). Two shims, both outside the fetched files: the module
built here returns `headSeg`'s logits (the release ends in a sigmoid), and each external attention's two
memories get their own storage. The release ties them on the CPU (`linear_1.weight.data` is set to a view
of `linear_0`'s), which `.cuda()` undoes; BasicIRSTD moves the network to the GPU before it trains or loads
weights, so untying here reproduces the network those weights belong to (tied, loading our independent
memories would silently overwrite one with the other).

A bare mirror of BasicIRSTD cannot be `git archive`d whole (one large blob is missing from it); extract
the model folder and pass that:  git --git-dir <mirror> archive HEAD model/ISTDUNet | tar -x -C <dir>
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

from torch import nn

from irstd.models.istdunet import ISTDUNet

REPO = "XinyiYing/BasicIRSTD"
INPUT = (2, 1, 72, 104)  # multiples of 8 but not of 16: exercises the ceil-mode shortcut pools


def _package(name: str, folder: Path) -> None:
    spec = importlib.util.spec_from_loader(name, loader=None, is_package=True)
    module = importlib.util.module_from_spec(spec)
    module.__path__ = [str(folder)]
    sys.modules[name] = module


def build_reference(root: Path) -> nn.Module:
    _package("reference_istdunet", root / "model" / "ISTDUNet")
    source = importlib.import_module("reference_istdunet.model_ISTDUNet")
    attention = importlib.import_module("reference_istdunet.eta").External_attention

    class Logits(source.ISTDU_Net):
        def funOutput(self, x):
            return self.headSeg(x)

    net = Logits()
    for module in net.modules():
        if isinstance(module, attention):
            module.linear_1.weight.data = module.linear_1.weight.data.clone()
    return net


def build_ours() -> nn.Module:
    return ISTDUNet()
