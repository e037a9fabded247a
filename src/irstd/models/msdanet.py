"""MSDA-Net: Jinmiao Zhao, Zelin Shi, Chuang Yu and Yunpeng Liu, "Multi-Scale Direction-Aware Network for Infrared
Small Target Detection", IEEE Transactions on Geoscience and Remote Sensing, 2025 (arXiv:2406.02037, 2024).

Checked against the version in PAL (YuChuang1205/PAL `model/MSDA/MSDA_no_sigmoid.py`, `MSDA_No_Sigmoid`), the one
behind PAL's point-supervised tables. The authors' MSDA-Net repository (YuChuang1205/MSDA-Net
`model/MSDA_Net/MSDA.py`, `MSDANet`) is the same network with a final sigmoid (and its own copy of the
squeeze-and-excitation block, same layout). Attribute and buffer names follow PAL, so that state dicts of PAL's and
the MSDA-Net repository's network load with an identity key mapping (after `collapse_rgb_input`, for their 3-channel
input; the MSDA-Net weight files, on Baidu Pan, were not available to try). PAL computes the Haar filters with
PyWavelets and runs them through hand-written autograd functions whose backward casts the filters to float16 (PAL
trains under CUDA autocast); here they are plain tensor operations: the same forward values, and autograd's
gradients, which those backward passes match up to their float16 rounding.

The network:

* a five-level residual encoder (full resolution to 1/16, widths 16, 32, 64, 64, 64). Level 1 has a plain
  residual block, levels 2-5 a downsampling one, each followed by two multi-scale direction-aware blocks
  (`RFB_modified` in PAL): four receptive-field branches (1x1; 1x1 then 3x3; 3x3 then 3x3 of dilation 3;
  5x5 then 3x3 of dilation 5) concatenated and fused, re-weighted by the multi-directional feature awareness
  module (Haar LH / HL / HH / LL filters of the features, each turned into a spatial attention map that gates
  the features; the four gated maps summed and added back through a conv-BN), then squeeze-and-excitation,
  then added to the input through a conv-BN-ReLU;
* high-frequency direction injection: at 1/2 resolution the Haar LH, HL and HH sub-bands of the input image
  are concatenated to the features of the downsampling block (9 of the 32 channels);
* every level is also max-pooled to 1/16, projected to 16 channels and concatenated to the deepest features,
  which a 1x1 conv pair brings back to 64 channels;
* a three-branch local-contrast block (`RFB_modified_LCL`) on each level and a top-down decoder of feature
  alignment fusions (`Sbam`): the deeper map is upsampled x2, concatenated with the shallower map, encoded
  (1x1 conv-BN-ReLU, 3x3 conv-BN-ReLU) and added to itself, projected by a 1x1 conv-BN-ReLU to the shallower
  width and added to the shallower map;
* two 1x1 convolutions give the logit map at full resolution (PAL's `_no_sigmoid` network ends there too).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from irstd.models.local_contrast import (
    DownResidual,
    PlainResidual,
    SpatialAttention,
    check_input_side,
    collapse_rgb_input,
    conv3x3,
    logit_head,
    pal_init,
    stem,
)

__all__ = ["MSDANet", "collapse_rgb_input", "haar_filters"]

LEVELS = 5
SIDE_MULTIPLE = 2 ** (LEVELS - 1)  # four halvings (and the side paths pool every level to 1/16)
DIRECTIONS = ("lh", "hl", "hh")  # the high-frequency sub-bands injected into the encoder, in PAL's order


def haar_filters() -> dict[str, torch.Tensor]:
    """The four 2x2 Haar analysis filters as PAL builds them from PyWavelets' 'haar' wavelet (float32 outer
    products of the reversed decomposition filters), keyed 'll', 'lh', 'hl', 'hh'. With r = 1/sqrt(2):
    low = (r, r), high = (r, -r) after reversal; 'lh' is high (rows) x low (columns), 'hl' low x high."""
    r = 1 / math.sqrt(2)
    low, high = torch.tensor([r, r], dtype=torch.float32), torch.tensor([r, -r], dtype=torch.float32)
    return {"ll": low[:, None] * low[None, :], "lh": high[:, None] * low[None, :],
            "hl": low[:, None] * high[None, :], "hh": high[:, None] * high[None, :]}


def _depthwise(x: torch.Tensor, kernel: torch.Tensor, stride: int) -> torch.Tensor:
    """The same 2x2 filter on every channel of `x`."""
    channels = x.shape[1]
    return F.conv2d(x, kernel.expand(channels, 1, 2, 2), stride=stride, groups=channels)


class SubbandFilter(nn.Module):
    """One Haar filter at full resolution: pad one row on top and one column on the left, filter with stride 1
    (PAL: `LH_DWT_2D_attation` etc.). The filter is a persistent buffer `w_<band>` of shape 1 x 1 x 2 x 2, so
    that PAL's state dict (which holds it) loads strictly."""

    def __init__(self, band: str):
        super().__init__()
        self.band = band
        self.register_buffer(f"w_{band}", haar_filters()[band][None, None])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _depthwise(F.pad(x, (1, 0, 1, 0)), getattr(self, f"w_{self.band}"), stride=1)


class DirectionalAttention(nn.Module):
    """Multi-directional feature awareness (PAL: `FrequencyAttention`).

    For each Haar band (LH, HL, HH, LL) a spatial attention map of the filtered features gates the features;
    the four gated maps are summed, passed through a 3x3 conv-BN, added to the input, ReLU.
    """

    BANDS = ("LH", "HL", "HH", "LL")  # PAL's summation order

    def __init__(self, channels: int):
        super().__init__()
        for band in ("HH", "LH", "HL", "LL"):
            self.add_module(f"{band}_reduce", SpatialAttention())
        self.conv_res = nn.Sequential(conv3x3(channels, channels), nn.BatchNorm2d(channels))
        for band in self.BANDS:
            self.add_module(f"{band}_DWT_2D_attation", SubbandFilter(band.lower()))
        pal_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gated = None
        for band in self.BANDS:
            attention = getattr(self, f"{band}_reduce")(getattr(self, f"{band}_DWT_2D_attation")(x))
            gated = x * attention if gated is None else gated + x * attention
        return torch.relu(x + self.conv_res(gated))


class SqueezeExcitation(nn.Module):
    """Channel reweighting from the global average through a bias-free bottleneck (PAL: `SEAttention`)."""

    def __init__(self, channels: int, reduction: int = 4):
        super().__init__()
        self.fc = nn.Sequential(
            nn.Linear(channels, channels // reduction, bias=False), nn.ReLU(inplace=True),
            nn.Linear(channels // reduction, channels, bias=False), nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.fc(x.mean(dim=(2, 3)))[:, :, None, None]


class ConvBNReLU(nn.Module):
    """Bias-free conv, BN, ReLU (PAL: `BasicConv2d`)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, padding: int = 0, dilation: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding, dilation=dilation,
                              bias=False)
        self.bn = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.bn(self.conv(x)))


def _branch(channels: int, kernel: int, dilation: int | None) -> nn.Sequential:
    """conv (kernel 1, 3 or 5) then, unless `dilation` is None, a 3x3 conv of that dilation; BN-ReLU after each."""
    layers = [ConvBNReLU(channels, channels, kernel, padding=kernel // 2)]
    if dilation is not None:
        layers.append(ConvBNReLU(channels, channels, 3, padding=dilation, dilation=dilation))
    return nn.Sequential(*layers)


class DirectionAwareBlock(nn.Module):
    """Multi-scale direction-aware block of the encoder (PAL: `RFB_modified`, always square there).

    Four branches (1x1; 1x1 + 3x3; 3x3 + 3x3 dilation 3; 5x5 + 3x3 dilation 5) concatenated and fused by a
    3x3 conv-BN-ReLU, then directional attention and squeeze-and-excitation; the result goes through a 3x3
    conv-BN-ReLU (`conv_res`) and is added to the block's input, ReLU.
    """

    def __init__(self, channels: int):
        super().__init__()
        for index, (kernel, dilation) in enumerate(((1, None), (1, 1), (3, 3), (5, 5))):
            self.add_module(f"branch{index}", _branch(channels, kernel, dilation))
        self.conv_cat = ConvBNReLU(4 * channels, channels, 3, padding=1)
        self.conv_res = ConvBNReLU(channels, channels, 3, padding=1)
        self.FrequencyAttention = DirectionalAttention(channels)
        self.SEAttention = SqueezeExcitation(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fused = self.conv_cat(torch.cat([getattr(self, f"branch{i}")(x) for i in range(4)], dim=1))
        return torch.relu(x + self.conv_res(self.SEAttention(self.FrequencyAttention(fused))))


class LocalContrast(nn.Module):
    """Three-branch local-contrast block on each encoder level (PAL: `RFB_modified_LCL`): 1x1; 3x3 + 3x3
    dilation 3; 5x5 + 3x3 dilation 5; concatenated and fused by a 3x3 conv-BN-ReLU.

    PAL also builds `conv_res` (a 1x1 conv-BN-ReLU) that its forward never uses; it stays so that PAL's weights
    load strictly, and gets no gradient.
    """

    def __init__(self, channels: int):
        super().__init__()
        for index, (kernel, dilation) in enumerate(((1, None), (3, 3), (5, 5))):
            self.add_module(f"branch{index}", _branch(channels, kernel, dilation))
        self.conv_cat = ConvBNReLU(3 * channels, channels, 3, padding=1)
        self.conv_res = ConvBNReLU(channels, channels, 1)  # unused (see above)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # PAL applies one more ReLU to this ReLU output, which changes nothing
        return self.conv_cat(torch.cat([getattr(self, f"branch{i}")(x) for i in range(3)], dim=1))


class HaarDecomposition(nn.Module):
    """Stride-2 Haar analysis of the image (PAL: `DWT_2D`): the LH, HL and HH sub-bands of every channel, grouped
    by sub-band. All four filters are persistent buffers, as in PAL (LL is not used)."""

    def __init__(self):
        super().__init__()
        for band, kernel in haar_filters().items():
            self.register_buffer(f"w_{band}", kernel[None, None])

    def forward(self, x: torch.Tensor, copies: int) -> torch.Tensor:
        # each sub-band block is tiled `copies` times: a grey image then gives exactly what PAL computes from the
        # same image replicated into 3 channels (the sub-bands of channels 0, 1, 2, all equal, for each band)
        bands = [_depthwise(x, getattr(self, f"w_{band}"), stride=2).repeat(1, copies, 1, 1) for band in DIRECTIONS]
        return torch.cat(bands, dim=1)


class HighFrequencyFeature(nn.Module):
    """PAL: `Hfrequencyfeature`, a holder of the decomposition (kept for the state dict's key names)."""

    def __init__(self):
        super().__init__()
        self.DWT_2D = HaarDecomposition()


class DirectionInjection(nn.Module):
    """High-frequency direction injection (PAL: `Hfrequency`): the image's LH, HL, HH sub-bands at 1/2
    resolution, placed in front of the features."""

    def __init__(self, copies: int):
        super().__init__()
        self.copies = copies
        self.Hfrequencyfeature = HighFrequencyFeature()

    def forward(self, image: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.Hfrequencyfeature.DWT_2D(image, self.copies), features], dim=1)


def _side_path(in_channels: int, out_channels: int, poolings: int) -> nn.Sequential:
    """`poolings` 2x2 max poolings (down to 1/16), then a 1x1 conv-ReLU (PAL: `layer<level>_4`)."""
    return nn.Sequential(*[nn.MaxPool2d(2, 2) for _ in range(poolings)],
                         nn.Conv2d(in_channels, out_channels, 1), nn.ReLU(inplace=True))


class DirectionAwareEncoder(nn.Module):
    """PAL: `Stage` of MSDA-Net. Returns the five levels' outputs, full resolution first; the last one is the
    deepest features merged with every level's pooled side path."""

    def __init__(self, in_channels: int, channels: list[int], direction_channels: int, side_channels: int):
        super().__init__()
        self.layer1 = stem(in_channels, channels[0])
        for level in range(1, LEVELS + 1):
            width = channels[level - 1]
            if level == 1:
                first = PlainResidual(width)
            else:  # level 2 leaves room for the injected sub-bands
                first = DownResidual(channels[level - 2], width - (direction_channels if level == 2 else 0))
            self.add_module(f"resnet{level}_1", first)
            if level == 2:
                self.hfrequency = DirectionInjection(direction_channels // (len(DIRECTIONS) * in_channels))
            self.add_module(f"resnet{level}_2", DirectionAwareBlock(width))
            self.add_module(f"resnet{level}_3", DirectionAwareBlock(width))
            if level < LEVELS:
                self.add_module(f"layer{level}_4", _side_path(width, side_channels, LEVELS - level))
        merged = channels[-1] + (LEVELS - 1) * side_channels
        self.layer5_4 = nn.Sequential(
            nn.Conv2d(merged, merged, 1), nn.ReLU(inplace=True),
            nn.Conv2d(merged, channels[-1], 1), nn.ReLU(inplace=True),
        )
        pal_init(self.layer1, *(getattr(self, f"layer{level}_4") for level in range(1, LEVELS + 1)))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = self.layer1(x)
        features, sides = [], []
        for level in range(1, LEVELS + 1):
            out = getattr(self, f"resnet{level}_1")(out)
            if level == 2:
                out = self.hfrequency(x, out)
            out = getattr(self, f"resnet{level}_3")(getattr(self, f"resnet{level}_2")(out))
            if level < LEVELS:
                sides.append(getattr(self, f"layer{level}_4")(out))
                features.append(out)
        # deepest features, then the side paths deepest first
        features.append(self.layer5_4(torch.cat([out, *reversed(sides)], dim=1)))
        return features


class FeatureAlignmentFusion(nn.Module):
    """Merge a deep map into the next shallower one (PAL: `Sbam`).

    up = x2 bilinear upsampling (aligned corners) of the deep map; up + encode([up, shallow]) is projected to the
    shallow width by a 1x1 conv-BN-ReLU and added to the shallow map.
    """

    def __init__(self, deep_channels: int, shallow_channels: int):
        super().__init__()
        self.hl_layer = nn.Sequential(
            nn.Conv2d(deep_channels, shallow_channels, 1), nn.BatchNorm2d(shallow_channels), nn.ReLU(inplace=True),
        )
        self.concat_layer = nn.Sequential(
            nn.Conv2d(deep_channels + shallow_channels, deep_channels, 1), nn.BatchNorm2d(deep_channels),
            nn.ReLU(inplace=True),
            conv3x3(deep_channels, deep_channels), nn.BatchNorm2d(deep_channels), nn.ReLU(inplace=True),
        )
        pal_init(self.hl_layer, self.concat_layer)

    def forward(self, deep: torch.Tensor, shallow: torch.Tensor) -> torch.Tensor:
        up = F.interpolate(deep, scale_factor=2, mode="bilinear", align_corners=True)
        aligned = up + self.concat_layer(torch.cat([up, shallow], dim=1))
        return shallow + self.hl_layer(aligned)


class MSDANet(nn.Module):
    """Multi-scale direction-aware network; logits at the input resolution, no deep supervision.

    Args:
        in_channels: image channels. PAL and the MSDA-Net release feed grey images replicated to 3 channels, so
            their network has `in_channels=3`; here the default is 1 (see `direction_channels`), and
            `collapse_rgb_input` turns their state dict into the exactly equivalent 1-channel one.
        channels: widths of the five encoder levels (full resolution to 1/16).
        direction_channels: channels of the injected Haar sub-bands at level 2 (LH, HL, HH of every image
            channel, each block tiled to fill this count): the downsampling block of level 2 gives the other
            channels[1] - direction_channels. PAL: 9 = 3 sub-bands x 3 replicated grey channels; with
            in_channels=1 the default 9 repeats each sub-band 3 times, which is what PAL computes from a grey
            image (3 gives the same design without the repetition, but not PAL's weights).
        side_channels: width of each level's pooled side path into the deepest level.

    Defaults with in_channels=3 are PAL's network (4,805,089 parameters); the default in_channels=1 has
    4,804,801. 14,048 of them (the local-contrast blocks' `conv_res`) are never used, as in PAL. Input sides must
    be multiples of 16; others raise ValueError.
    """

    side_multiple = SIDE_MULTIPLE
    # read by irstd's DDP strategy: the local-contrast blocks' conv_res never get a gradient (see LocalContrast)
    has_unused_parameters = True

    def __init__(self, in_channels: int = 1, channels: Sequence[int] = (16, 32, 64, 64, 64),
                 direction_channels: int = 9, side_channels: int = 16):
        super().__init__()
        channels = [int(c) for c in channels]
        if in_channels < 1:
            raise ValueError(f"MSDANet needs in_channels >= 1, got {in_channels}")
        if len(channels) != LEVELS or min(channels) < 4:
            raise ValueError(f"MSDANet needs {LEVELS} channel widths >= 4 (its squeeze-and-excitation divides them "
                             f"by 4), got channels={channels}")
        per_copy = len(DIRECTIONS) * in_channels
        if direction_channels < per_copy or direction_channels % per_copy or direction_channels >= channels[1]:
            raise ValueError(f"MSDANet needs direction_channels to be a positive multiple of 3 * in_channels = "
                             f"{per_copy} and below channels[1] = {channels[1]}, got {direction_channels}")
        if side_channels < 1:
            raise ValueError(f"MSDANet needs side_channels >= 1, got {side_channels}")
        self.stage = DirectionAwareEncoder(in_channels, channels, direction_channels, side_channels)
        for level in range(LEVELS, 0, -1):
            self.add_module(f"mlcl{level}", LocalContrast(channels[level - 1]))
        for level in range(LEVELS - 1, 0, -1):
            self.add_module(f"sbam{level}", FeatureAlignmentFusion(channels[level], channels[level - 1]))
        self.layer = logit_head(channels[0])
        pal_init(self.layer)

    def logit_layers(self) -> list[nn.Conv2d]:
        """The convolutions whose outputs are logits (IRSTDModule's `output_prior` sets their bias)."""
        return [self.layer[-1]]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input_side("MSDANet", x, SIDE_MULTIPLE)
        levels = [getattr(self, f"mlcl{level}")(features) for level, features in enumerate(self.stage(x), start=1)]
        out = levels[-1]
        for level in range(LEVELS - 1, 0, -1):  # sbam4 merges levels 5 and 4, ..., sbam1 the result and level 1
            out = getattr(self, f"sbam{level}")(out, levels[level - 1])
        # PAL's `_no_sigmoid` network returns these logits; the MSDA-Net release adds a sigmoid.
        return self.layer(out)
