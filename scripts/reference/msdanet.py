"""MSDA-Net against PAL's copy (YuChuang1205/PAL `model/MSDA/MSDA_no_sigmoid.py`, `MSDA_No_Sigmoid`, logits).

Also accepts a YuChuang1205/MSDA-Net checkout (`model/MSDA_Net/MSDA.py`, `MSDANet`, the network of the released
MSDA-Net weights): the same network with a final sigmoid, replaced by the identity after building (undoing a
saturated sigmoid loses precision).

Both hard-code 3 input channels (grey images replicated to RGB), so both sides are built with in_channels=3 here;
irstd's default in_channels=1 with direction_channels=9 is the same network on the grey channel once the first
convolution's weights are summed over the three channels (`irstd.models.local_contrast.collapse_rgb_input`,
checked in tests/test_models_msdanet.py).

The reference builds its Haar filters with PyWavelets. Where `pywt` is not installed, a stub gives the 'haar'
wavelet's decomposition filters as PyWavelets does ((-1/sqrt 2, 1/sqrt 2) high, (1/sqrt 2, 1/sqrt 2) low); the
filters are buffers of the state dict, so the check copies ours into the reference anyway (with the real
PyWavelets the reference's filters equal irstd's `haar_filters()` bit for bit).
"""

from __future__ import annotations

import math
import sys
import types
from pathlib import Path

from check_reference import build_first_layout  # the harness; scripts/ is on the path
from torch import nn

from irstd.models import build_backbone

REPO = "YuChuang1205/PAL"
INPUT = (2, 3, 64, 96)

# (file, class): PAL's logits network first, then the release that ends in a sigmoid
LAYOUTS = (("model/MSDA/MSDA_no_sigmoid.py", "MSDA_No_Sigmoid"), ("model/MSDA_Net/MSDA.py", "MSDANet"))


def _stub_pywt() -> None:
    try:
        import pywt  # noqa: F401
    except ImportError:
        r = 1 / math.sqrt(2)
        haar = types.SimpleNamespace(dec_hi=[-r, r], dec_lo=[r, r])

        def wavelet(name: str):
            if name != "haar":
                raise NotImplementedError(f"the pywt stub knows only 'haar', not {name!r}")
            return haar

        stub = types.ModuleType("pywt")
        stub.Wavelet = wavelet
        sys.modules["pywt"] = stub


def build_reference(root: Path) -> nn.Module:
    _stub_pywt()
    return build_first_layout(root, LAYOUTS, "msdanet_reference")


def build_ours() -> nn.Module:
    return build_backbone("msdanet", in_channels=3)
