"""ALCL-Net: Chuang Yu, Yunpeng Liu, Shuhang Wu, Xin Xia, Zhuhua Hu, Deyan Lan and Xin Liu, "Pay Attention to
Local Contrast Learning Networks for Infrared Small Target Detection", IEEE Geoscience and Remote Sensing Letters,
2022 (IEEE Xplore document 9785618).

Checked against the version in PAL (YuChuang1205/PAL `model/ALCL/ALCL_no_sigmoid.py`, `ALCL_No_Sigmoid`), the one
behind PAL's point-supervised tables. The PyTorch copies in YuChuang1205/ALCL-Net (`model_ALCL-Net.py`) and
YuChuang1205/MSDA-Net (`model/ALCL_Net/alcl.py`, `ALCLNet`) are the same network with a final sigmoid; the paper's
original Keras model (YuChuang1205/ALCL-Net `model.py`) has the same layers but Keras' half-pixel bilinear
upsampling instead of PyTorch's aligned corners. Attribute names follow PAL, so that state dicts of its network load
with an identity key mapping (after `collapse_rgb_input` for PAL's 3-channel input; PAL releases no weights, the
ALCL-Net repository only Keras ones).

The network:

* a five-level residual encoder (full resolution to 1/16, widths 16 .. 256, three residual blocks per level);
* a local contrast learning block (`lcl`: 1x1 conv, ReLU, 3x3 conv, ReLU) on each level's output;
* a top-down decoder of bottom-up attention modules (`sbam`): the deeper map is upsampled x2 and projected to
  the shallower width, gated pixel- and channel-wise by the sigmoid of a 1x1 conv-BN of the shallower map,
  and added to the shallower map;
* two 1x1 convolutions give the logit map at full resolution (PAL's `_no_sigmoid` network ends there too).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from irstd.models.local_contrast import (
    BilinearUp2x,
    ResidualEncoder,
    check_input_side,
    collapse_rgb_input,
    conv3x3,
    logit_head,
    pal_init,
)

__all__ = ["ALCLNet", "collapse_rgb_input"]

LEVELS = 5
SIDE_MULTIPLE = 2 ** (LEVELS - 1)  # four halvings, mirrored by four x2 upsamplings


class LocalContrastLearning(nn.Module):
    """1x1 conv, ReLU, 3x3 conv, ReLU on one encoder level (PAL: `LCL`)."""

    def __init__(self, channels: int):
        super().__init__()
        self.layer1 = nn.Sequential(
            nn.Conv2d(channels, channels, 1), nn.ReLU(inplace=True),
            conv3x3(channels, channels), nn.ReLU(inplace=True),
        )
        pal_init(self.layer1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer1(x)


class BottomUpAttention(nn.Module):
    """Merge a deep map into the next shallower one (PAL: `Sbam`).

    shallow + up(deep) * sigmoid(BN(conv1x1(shallow))), where up(.) is a x2 bilinear upsampling (aligned corners)
    followed by a 1x1 conv-BN-ReLU to the shallow width.
    """

    def __init__(self, deep_channels: int, shallow_channels: int):
        super().__init__()
        self.hl_layer = nn.Sequential(
            BilinearUp2x(),
            nn.Conv2d(deep_channels, shallow_channels, 1), nn.BatchNorm2d(shallow_channels), nn.ReLU(inplace=True),
        )
        self.ll_layer = nn.Sequential(
            nn.Conv2d(shallow_channels, shallow_channels, 1), nn.BatchNorm2d(shallow_channels), nn.Sigmoid(),
        )
        pal_init(self.hl_layer, self.ll_layer)

    def forward(self, deep: torch.Tensor, shallow: torch.Tensor) -> torch.Tensor:
        return shallow + self.hl_layer(deep) * self.ll_layer(shallow)


class ALCLNet(nn.Module):
    """Attention local contrast learning network; logits at the input resolution, no deep supervision.

    Args:
        in_channels: image channels. PAL feeds grey images replicated to 3 channels, so its network has
            `in_channels=3`; here the default is 1, and `collapse_rgb_input` turns a PAL state dict into the exactly
            equivalent 1-channel one.
        channels: widths of the five encoder levels (full resolution to 1/16).
        blocks: residual blocks per encoder level (the first of levels 2-5 halves the resolution).

    Defaults with in_channels=3 are PAL's network (5,668,145 parameters); the default in_channels=1 has
    5,667,857. Input sides must be multiples of 16; others raise ValueError.
    """

    side_multiple = SIDE_MULTIPLE

    def __init__(self, in_channels: int = 1, channels: Sequence[int] = (16, 32, 64, 128, 256), blocks: int = 3):
        super().__init__()
        channels = [int(c) for c in channels]
        if in_channels < 1:
            raise ValueError(f"ALCLNet needs in_channels >= 1, got {in_channels}")
        if len(channels) != LEVELS or min(channels) < 1:
            raise ValueError(f"ALCLNet needs {LEVELS} channel widths >= 1, got channels={channels}")
        if blocks < 1:
            raise ValueError(f"ALCLNet needs blocks >= 1, got {blocks}")
        self.stage = ResidualEncoder(in_channels, channels, blocks)
        for level in range(LEVELS, 0, -1):  # PAL builds lcl5 first; the order only shows in state_dict listings
            self.add_module(f"lcl{level}", LocalContrastLearning(channels[level - 1]))
        for level in range(LEVELS - 1, 0, -1):
            self.add_module(f"sbam{level}", BottomUpAttention(channels[level], channels[level - 1]))
        self.layer = logit_head(channels[0])
        pal_init(self.layer)

    def logit_layers(self) -> list[nn.Conv2d]:
        """The convolutions whose outputs are logits (IRSTDModule's `output_prior` sets their bias)."""
        return [self.layer[-1]]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input_side("ALCLNet", x, SIDE_MULTIPLE)
        levels = [getattr(self, f"lcl{level}")(features) for level, features in enumerate(self.stage(x), start=1)]
        out = levels[-1]
        for level in range(LEVELS - 1, 0, -1):  # sbam4 merges levels 5 and 4, ..., sbam1 the result and level 1
            out = getattr(self, f"sbam{level}")(out, levels[level - 1])
        # PAL's `_no_sigmoid` network returns these logits; the ALCL-Net and MSDA-Net copies add a sigmoid.
        return self.layer(out)
