"""Training-free single-frame detectors (filtering, local contrast, low rank), picked by name.

Contract (`irstd.classic.base.ClassicDetector`): `saliency(image)` maps B x 1 x H x W float images in native
intensity units (0-255 for 8-bit frames) to B x 1 x H x W saliency maps; `segment(saliency)` applies the
method's documented threshold rule and returns a boolean mask of the same shape; `forward` = both.
"""

from __future__ import annotations

from irstd.classic.base import ClassicDetector
from irstd.registry import Registry

DETECTORS = Registry("classic detector", "detector.name", {
    "tophat": "irstd.classic.filters:TopHat",
    "maxmedian": "irstd.classic.filters:MaxMedian",
    "rlcm": "irstd.classic.local_contrast:RLCM",
    "tllcm": "irstd.classic.local_contrast:TLLCM",
    "mslcm": "irstd.classic.local_contrast:MSLCM",
    "mspcm": "irstd.classic.local_contrast:MSPCM",
    "wslcm": "irstd.classic.local_contrast:WSLCM",
    "ipi": "irstd.classic.low_rank:IPI",
    "pstnn": "irstd.classic.low_rank:PSTNN",
})


def available_detectors() -> list[str]:
    return DETECTORS.names()


def build_detector(name: str, **kwargs) -> ClassicDetector:
    """Instantiate the detector registered under `name` with its keyword arguments (its paper's defaults)."""
    return DETECTORS.build(name, **kwargs)
