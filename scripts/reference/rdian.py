"""RDIAN against the authors' release (sun11999/RDIAN `model/segmentation.py`, which returns logits).

Also accepts a BasicIRSTD checkout (XinyiYing/BasicIRSTD `model/RDIAN/model_RDIAN.py`): the same network with a
final sigmoid, undone by `reference_logits`. Either folder is imported as a private package so that the repository's
own `model/__init__.py` (which pulls in every BasicIRSTD network) is never run.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

import torch
from torch import nn

from irstd.models import build_backbone

REPO = "sun11999/RDIAN"
INPUT = (2, 1, 64, 96)

# (folder holding cbam.py / direction.py, the module defining RDIAN, whether it ends in a sigmoid)
LAYOUTS = (("model", "segmentation", False), ("model/RDIAN", "model_RDIAN", True))
_ends_in_sigmoid = False


def _import_package(folder: Path, module: str):
    name = "rdian_reference_package"
    spec = importlib.util.spec_from_file_location(name, folder / "__init__.py",
                                                  submodule_search_locations=[str(folder)])
    package = importlib.util.module_from_spec(spec)
    sys.modules[name] = package  # an empty package: the folder need not have an __init__.py
    return importlib.import_module(f"{name}.{module}")


def build_reference(root: Path) -> nn.Module:
    global _ends_in_sigmoid
    for folder, module, sigmoid in LAYOUTS:
        if (root / folder / f"{module}.py").is_file():
            _ends_in_sigmoid = sigmoid
            return _import_package(root / folder, module).RDIAN()
    raise SystemExit(f"{root}: neither model/segmentation.py (sun11999/RDIAN) nor model/RDIAN/model_RDIAN.py "
                     "(BasicIRSTD)")


def build_ours() -> nn.Module:
    return build_backbone("rdian")


def reference_logits(output: torch.Tensor) -> torch.Tensor:
    return torch.logit(output.double()).float() if _ends_in_sigmoid else output
