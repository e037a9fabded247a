"""MLCL-Net against PAL's copy (YuChuang1205/PAL `model/MLCL/MLCL_no_sigmoid.py`, `MLCL_No_Sigmoid`, logits).

Also accepts the per-network copies, which are the same network with a final sigmoid: a YuChuang1205/MSDA-Net
checkout (`model/MLCL_Net/mlcl_base.py`, `MLCLNet_base`) or a YuChuang1205/MLCL-Net one (`model_MLCL-Net_base.py`,
`MLCLNet_base`; that repository's Keras `model.py` is a different variant and is not compared). Their last
`nn.Sigmoid` is replaced by the identity after building (undoing a saturated sigmoid loses precision).
Set IRSTD_MLCL_VARIANT=small to compare PAL's light version (`MLCL_small_no_sigmoid.py`) with blocks=2.

All of them hard-code 3 input channels (grey images replicated to RGB), so both sides are built with
in_channels=3 here; irstd's default in_channels=1 is the same network with the first convolution's weights summed
over the three channels (`irstd.models.local_contrast.collapse_rgb_input`, checked in tests/test_models_mlclnet.py).
"""

from __future__ import annotations

import os
from pathlib import Path

from check_reference import build_first_layout  # the harness; scripts/ is on the path
from torch import nn

from irstd.models import build_backbone

REPO = "YuChuang1205/PAL"
INPUT = (2, 3, 64, 96)

SMALL = os.environ.get("IRSTD_MLCL_VARIANT", "base") == "small"
# (file, class): PAL's logits network first, then the copies that end in a sigmoid
LAYOUTS = ((("model/MLCL/MLCL_small_no_sigmoid.py", "MLCL_small_No_Sigmoid"),) if SMALL else
           (("model/MLCL/MLCL_no_sigmoid.py", "MLCL_No_Sigmoid"), ("model/MLCL_Net/mlcl_base.py", "MLCLNet_base"),
            ("model_MLCL-Net_base.py", "MLCLNet_base")))


def build_reference(root: Path) -> nn.Module:
    return build_first_layout(root, LAYOUTS, "mlclnet_reference")


def build_ours() -> nn.Module:
    return build_backbone("mlclnet", in_channels=3, blocks=2 if SMALL else 3)
