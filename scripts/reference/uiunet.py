"""UIU-Net against BasicIRSTD's `model/UIUNet` (the version its released weights were trained with).

The reference package is imported on its own (BasicIRSTD's `model/__init__.py` would import every network).
Two shims, both outside the fetched files: the release chooses its outputs from a constructor `mode`, so
the module built here reads it from train()/eval() instead (as BasicIRSTD builds a 'train' network for
training and a 'test' one for testing); and its final sigmoids are replaced by the identity in the
module's namespace, so its logits are compared directly (undoing a saturated sigmoid loses precision).

The authors' repository (danfenghong/IEEE_TIP_UIU-Net, `model/uiunet.py`: same layers, three input
channels by default, always seven outputs) is accepted too: `--repo` at its checkout builds it with one
input channel and keeps its fused map alone in eval mode.

A bare mirror of BasicIRSTD cannot be `git archive`d whole (one large blob is missing from it); extract
the model folder and pass that:  git --git-dir <mirror> archive HEAD model/UIUNet | tar -x -C <dir>
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from pathlib import Path

import torch.nn.functional as F
from torch import nn

from irstd.models.uiunet import UIUNet

REPO = "XinyiYing/BasicIRSTD"
INPUT = (2, 1, 80, 112)  # not multiples of 32: also exercises the ceil-mode pools and resampling to size


def _package(name: str, folder: Path) -> None:
    spec = importlib.util.spec_from_loader(name, loader=None, is_package=True)
    module = importlib.util.module_from_spec(spec)
    module.__path__ = [str(folder)]
    sys.modules[name] = module


def _without_sigmoid(source: types.ModuleType) -> None:
    functional = types.SimpleNamespace(**vars(F))
    functional.sigmoid = lambda x: x
    source.F = functional


def build_reference(root: Path) -> nn.Module:
    if not (root / "model" / "UIUNet").is_dir():  # the authors' repository
        _package("reference_uiunet", root / "model")
        source = importlib.import_module("reference_uiunet.uiunet")
        _without_sigmoid(source)

        class FusedInEval(source.UIUNET):
            def forward(self, x):
                outputs = super().forward(x)
                return outputs if self.training else outputs[0]

        return FusedInEval(in_ch=1, out_ch=1)

    _package("reference_uiunet", root / "model" / "UIUNet")
    source = importlib.import_module("reference_uiunet.model_UIUNet")
    _without_sigmoid(source)

    class ModeFollowsTraining(source.UIUNET):
        mode = property(lambda self: "train" if self.training else "test", lambda self, value: None)

    return ModeFollowsTraining(in_ch=1, out_ch=1, mode="train")


def build_ours() -> nn.Module:
    return UIUNet()


def reference_logits(output):
    # the release returns (fused, side1, ..., side6); the fused map comes last here
    if isinstance(output, (list, tuple)):
        return [*output[1:], output[0]]
    return output
