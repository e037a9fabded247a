"""ALCL-Net against PAL's copy (YuChuang1205/PAL `model/ALCL/ALCL_no_sigmoid.py`, `ALCL_No_Sigmoid`, logits).

Also accepts the per-network copies, which are the same network with a final sigmoid: a YuChuang1205/MSDA-Net
checkout (`model/ALCL_Net/alcl.py`, `ALCLNet`) or a YuChuang1205/ALCL-Net one (`model_ALCL-Net.py`, `ALCLNet`).
Their last `nn.Sigmoid` is replaced by the identity after building (undoing a saturated sigmoid loses precision).

All of them hard-code 3 input channels (grey images replicated to RGB), so both sides are built with
in_channels=3 here; irstd's default in_channels=1 is the same network with the first convolution's weights summed
over the three channels (`irstd.models.local_contrast.collapse_rgb_input`, checked in tests/test_models_alclnet.py).
The reference files import torchvision for nothing; a stub always stands in (irstd does not depend on torchvision).
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

from check_reference import build_first_layout  # the harness; scripts/ is on the path
from torch import nn

from irstd.models import build_backbone

REPO = "YuChuang1205/PAL"
INPUT = (2, 3, 64, 96)

# (file, class): PAL's logits network first, then the copies that end in a sigmoid
LAYOUTS = (("model/ALCL/ALCL_no_sigmoid.py", "ALCL_No_Sigmoid"), ("model/ALCL_Net/alcl.py", "ALCLNet"),
           ("model_ALCL-Net.py", "ALCLNet"))


def _stub_torchvision() -> None:
    # the reference imports torchvision without using it in the network; irstd does not depend on torchvision
    for name in ("torchvision", "torchvision.transforms", "torchvision.transforms.functional"):
        sys.modules.setdefault(name, types.ModuleType(name))


def build_reference(root: Path) -> nn.Module:
    _stub_torchvision()
    return build_first_layout(root, LAYOUTS, "alclnet_reference")


def build_ours() -> nn.Module:
    return build_backbone("alclnet", in_channels=3)
