"""MLCL-Net: Chuang Yu, Yunpeng Liu, Shuhang Wu, Zhuhua Hu, Xin Xia, Deyan Lan and Xin Liu, "Infrared small target
detection based on multiscale local contrast learning networks", Infrared Physics & Technology, 2022
(doi:10.1016/j.infrared.2022.104107).

Checked against the version in PAL (YuChuang1205/PAL `model/MLCL/MLCL_no_sigmoid.py`, `MLCL_No_Sigmoid`, the "base"
network with three residual blocks per level), the one behind PAL's point-supervised tables. The PyTorch copies in
YuChuang1205/MLCL-Net (`model_MLCL-Net_base.py`) and YuChuang1205/MSDA-Net (`model/MLCL_Net/mlcl_base.py`,
`MLCLNet_base`) are the same network with a final sigmoid; `blocks=2` gives PAL's light version
(`MLCL_small_no_sigmoid.py`). The paper's original Keras model (YuChuang1205/MLCL-Net `model.py`) differs: it
averages the three local-contrast branches instead of fusing them with a 1x1 convolution, has no 1x1 convolution on
the deepest level before upsampling, and upsamples with half-pixel (not aligned-corner) bilinear interpolation.
Attribute names follow PAL, so that state dicts of its network load with an identity key mapping (after
`collapse_rgb_input` for PAL's 3-channel input; PAL releases no weights, the MLCL-Net repository only Keras ones).

The network:

* a three-level residual encoder (full resolution, 1/2, 1/4; widths 16, 32, 64; three residual blocks each);
* a multiscale local contrast learning block (`mlcl`) on each level: three branches (1x1 conv then 3x3 conv;
  3x3 conv then 3x3 conv of dilation 3; 5x5 conv then 3x3 conv of dilation 5; ReLU after every conv),
  concatenated and fused by a 1x1 convolution;
* an FPN-style top-down path: each level goes through a 1x1 conv-ReLU to the deepest width (`conv3`, `conv2`,
  `conv1`), deeper sums are upsampled x2 (bilinear, aligned corners) and added;
* two 1x1 convolutions give the logit map at full resolution (PAL's `_no_sigmoid` network ends there too).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from irstd.models.local_contrast import ResidualEncoder, check_input_side, collapse_rgb_input, logit_head, pal_init

__all__ = ["MLCLNet", "collapse_rgb_input"]

LEVELS = 3
SIDE_MULTIPLE = 2 ** (LEVELS - 1)  # two halvings, mirrored by two x2 upsamplings
# (kernel size, dilation of the following 3x3 conv) of the three local-contrast branches
BRANCHES = ((1, 1), (3, 3), (5, 5))


class MultiscaleLocalContrast(nn.Module):
    """Three local-contrast branches of growing receptive field, concatenated and fused by a 1x1 conv (PAL:
    `MLCL`). Branch k: conv (kernel 1, 3, 5), ReLU, 3x3 conv with dilation (1, 3, 5), ReLU; no activation after
    the fusion."""

    def __init__(self, channels: int):
        super().__init__()
        for index, (kernel, dilation) in enumerate(BRANCHES, start=1):
            self.add_module(f"layer{index}", nn.Sequential(
                nn.Conv2d(channels, channels, kernel, padding=kernel // 2), nn.ReLU(inplace=True),
                nn.Conv2d(channels, channels, 3, padding=dilation, dilation=dilation), nn.ReLU(inplace=True),
            ))
        self.conv = nn.Conv2d(len(BRANCHES) * channels, channels, 1)
        pal_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branches = [getattr(self, f"layer{index}")(x) for index in range(1, len(BRANCHES) + 1)]
        return self.conv(torch.cat(branches, dim=1))


def _project(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 1), nn.ReLU(inplace=True))


def _up2x(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)


class MLCLNet(nn.Module):
    """Multiscale local contrast learning network; logits at the input resolution, no deep supervision.

    Args:
        in_channels: image channels. PAL feeds grey images replicated to 3 channels, so its network has
            `in_channels=3`; here the default is 1, and `collapse_rgb_input` turns a PAL state dict into the exactly
            equivalent 1-channel one.
        channels: widths of the three encoder levels (full resolution, 1/2, 1/4); the top-down path and the head
            work at the last (deepest) width.
        blocks: residual blocks per encoder level (3: the paper's "base" network; 2: PAL's "small" one).

    Defaults with in_channels=3 are PAL's network (657,249 parameters; 559,809 with blocks=2); the default
    in_channels=1 has 656,961. Input sides must be multiples of 4; others raise ValueError.
    """

    side_multiple = SIDE_MULTIPLE

    def __init__(self, in_channels: int = 1, channels: Sequence[int] = (16, 32, 64), blocks: int = 3):
        super().__init__()
        channels = [int(c) for c in channels]
        if in_channels < 1:
            raise ValueError(f"MLCLNet needs in_channels >= 1, got {in_channels}")
        if len(channels) != LEVELS or min(channels) < 1:
            raise ValueError(f"MLCLNet needs {LEVELS} channel widths >= 1, got channels={channels}")
        if blocks < 1:
            raise ValueError(f"MLCLNet needs blocks >= 1, got {blocks}")
        width = channels[-1]
        # PAL initialises the encoder's residual blocks and the mlcl blocks, not the stem, projections or head
        self.stage = ResidualEncoder(in_channels, channels, blocks, init_stem=False)
        for level in range(LEVELS, 0, -1):
            self.add_module(f"mlcl{level}", MultiscaleLocalContrast(channels[level - 1]))
        for level in range(LEVELS, 0, -1):
            self.add_module(f"conv{level}", _project(channels[level - 1], width))
        self.layer = logit_head(width)

    def logit_layers(self) -> list[nn.Conv2d]:
        """The convolutions whose outputs are logits (IRSTDModule's `output_prior` sets their bias)."""
        return [self.layer[-1]]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input_side("MLCLNet", x, SIDE_MULTIPLE)
        features = self.stage(x)
        out = None
        for level in range(LEVELS, 0, -1):  # deepest first: up(conv3(.)) + conv2(.), then up(sum) + conv1(.)
            lateral = getattr(self, f"conv{level}")(getattr(self, f"mlcl{level}")(features[level - 1]))
            out = lateral if out is None else _up2x(out) + lateral
        # PAL's `_no_sigmoid` network returns these logits; the MLCL-Net and MSDA-Net copies add a sigmoid.
        return self.layer(out)
