"""GGL-Net against PAL's copy (YuChuang1205/PAL `model/GGL/GGL_no_sigmoid.py`, `GGL_No_Sigmoid`, logits).

PAL hard-codes 3 input channels (grey images replicated to RGB), so both sides are built with in_channels=3 here;
irstd's default in_channels=1 is the same network with the input convolutions' weights summed over the three
channels (`irstd.models.ggl.collapse_rgb_input`, checked in tests/test_models_ggl.py).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from torch import nn

from irstd.models import build_backbone

REPO = "YuChuang1205/PAL"
INPUT = (2, 3, 64, 96)


def build_reference(root: Path) -> nn.Module:
    path = root / "model" / "GGL" / "GGL_no_sigmoid.py"
    spec = importlib.util.spec_from_file_location("ggl_reference", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.GGL_No_Sigmoid()


def build_ours() -> nn.Module:
    return build_backbone("ggl", in_channels=3)
