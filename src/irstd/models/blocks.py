"""Building blocks shared by ACM and ALCNet (Dai et al., WACV 2021 and TGRS 2021).

Module and attribute names follow the LESPS release (XinyiYing/LESPS, `model/ACM/`) so that its
state_dict keys load one to one: a residual stage is a `Sequential` of `ResidualBlock`s with
`conv1/bn1/conv2/bn2/downsample`, the fusion has `topdown/bottomup/post`, the head has `block`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

# The release ported MXNet's BatchNorm momentum (weight of the *old* running statistic) verbatim;
# in PyTorch 0.9 weights the *new* batch, so running statistics follow the last few batches.
# Kept where the release has it so that training reproduces its eval-mode statistics.
RELEASE_BN_MOMENTUM = 0.9


def check_widths(name: str, layers: Sequence[int], channels: Sequence[int]) -> tuple[list[int], list[int]]:
    """Validate the release's `layers` (blocks per stage, 3 stages) and `channels` (stem, stage 1..3)."""
    layers, channels = [int(n) for n in layers], [int(c) for c in channels]
    if len(layers) != 3 or len(channels) != 4 or min(layers) < 1:
        raise ValueError(f"{name} needs 3 stage depths >= 1 and 4 channel widths, got layers={layers}, "
                         f"channels={channels}")
    if channels[1] != 2 * channels[0]:
        # the stem ends at twice its width and feeds stage 1 without a projection
        raise ValueError(f"{name} needs channels[1] == 2 * channels[0], got channels={channels}")
    if min(channels) < 4:
        raise ValueError(f"{name} needs channels >= 4 (fusions and head divide them by 4), got {channels}")
    return layers, channels


class ResidualBlock(nn.Module):
    """ResNet basic block: two 3x3 convolutions, identity (or 1x1 projection) shortcut, ReLU after the sum."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels, momentum=RELEASE_BN_MOMENTUM),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(out + shortcut)


def residual_stage(in_channels: int, out_channels: int, num_blocks: int, stride: int = 1) -> nn.Sequential:
    """`num_blocks` residual blocks; the first one changes resolution (`stride`) and width."""
    blocks = [ResidualBlock(in_channels, out_channels, stride)]
    blocks += [ResidualBlock(out_channels, out_channels) for _ in range(num_blocks - 1)]
    return nn.Sequential(*blocks)


def resnet_stem(in_channels: int, stem_width: int) -> nn.Sequential:
    """Input BatchNorm, three 3x3 convolutions (the first strided) and a max pool: 1/4 resolution,
    `2 * stem_width` channels. The index layout matches the release's `stem.N` keys."""
    return nn.Sequential(
        # normalises the raw input channel itself
        nn.BatchNorm2d(in_channels, momentum=RELEASE_BN_MOMENTUM),
        nn.Conv2d(in_channels, stem_width, 3, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(stem_width, momentum=RELEASE_BN_MOMENTUM),
        nn.ReLU(inplace=True),
        nn.Conv2d(stem_width, stem_width, 3, padding=1, bias=False),
        nn.BatchNorm2d(stem_width, momentum=RELEASE_BN_MOMENTUM),
        nn.ReLU(inplace=True),
        nn.Conv2d(stem_width, 2 * stem_width, 3, padding=1, bias=False),
        nn.BatchNorm2d(2 * stem_width, momentum=RELEASE_BN_MOMENTUM),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(3, stride=2, padding=1),
    )


def _channel_gate(channels: int, bottleneck: int) -> list[nn.Module]:
    """1x1 conv bottleneck -> sigmoid weights, the layer order (and state-dict indices) of the release."""
    return [
        nn.Conv2d(channels, bottleneck, 1),
        nn.BatchNorm2d(bottleneck, momentum=RELEASE_BN_MOMENTUM),
        nn.ReLU(inplace=True),
        nn.Conv2d(bottleneck, channels, 1),
        nn.BatchNorm2d(channels, momentum=RELEASE_BN_MOMENTUM),
        nn.Sigmoid(),
    ]


class AsymBiFusion(nn.Module):
    """Asymmetric bi-directional modulation (ACM, Dai et al., WACV 2021).

    The deep feature `high` gates the shallow one channel-wise through a global-context branch
    (`topdown`); the shallow feature `low` gates the deep one pixel-wise through a point-wise branch
    (`bottomup`). Both maps have `channels` channels and the same size.
    """

    def __init__(self, channels: int, reduction: int = 4):
        super().__init__()
        bottleneck = channels // reduction
        self.topdown = nn.Sequential(nn.AdaptiveAvgPool2d(1), *_channel_gate(channels, bottleneck))
        self.bottomup = nn.Sequential(*_channel_gate(channels, bottleneck))
        self.post = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.BatchNorm2d(channels, momentum=RELEASE_BN_MOMENTUM),
            nn.ReLU(inplace=True),
        )

    def forward(self, high: torch.Tensor, low: torch.Tensor) -> torch.Tensor:
        # the factor 2 (as in the release) makes both gates at 0.5 reduce to plain addition, low + high
        fused = 2 * low * self.topdown(high) + 2 * high * self.bottomup(low)
        return self.post(fused)


class FCNHead(nn.Module):
    """3x3 convolution to a quarter of the channels, BN, ReLU, dropout, 1x1 convolution to one logit map."""

    def __init__(self, in_channels: int):
        super().__init__()
        inter_channels = in_channels // 4
        self.block = nn.Sequential(
            nn.Conv2d(in_channels, inter_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(inter_channels, momentum=RELEASE_BN_MOMENTUM),
            nn.ReLU(inplace=True),
            nn.Dropout(0.1),
            nn.Conv2d(inter_channels, 1, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)
