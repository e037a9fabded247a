"""Pieces shared by Chuang Yu and colleagues' local-contrast networks: ALCL-Net, MLCL-Net, MSDA-Net and GGL-Net.

All three build their encoders from the same pieces (checked against YuChuang1205/PAL `model/ALCL/`,
`model/MLCL/`, `model/MSDA/`): a two-convolution stem at full resolution, then per level a residual block that
keeps the resolution (`Resnet1` there) or one that halves it (`Resnet2`), followed by more blocks (plain residual
ones in ALCL-Net and MLCL-Net, whose whole encoder is `ResidualEncoder`; MSDA-Net's own). They end in the same two
1x1 convolutions. Class names here are ours; attribute names are PAL's, so that the state dict
keys of the networks built from these pieces equal PAL's.

PAL feeds a grey image replicated into three channels, so its networks read 3 input channels. irstd feeds
one; `collapse_rgb_input` turns PAL's weights into the exactly equivalent single-channel ones.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

# the only parameter that reads the image in all three networks (MSDA-Net's wavelet injection has none)
IMAGE_READER = "stage.layer1.0.weight"


def conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1)


def pal_init(*modules: nn.Module) -> None:
    """PAL's `weights_init`, applied to every convolution and batch norm inside `modules`: Kaiming-normal
    (fan_out, ReLU gain) convolution weights with zero bias; batch norm weight 1, bias 0. PAL applies it only
    to some sub-modules of each network; the others keep PyTorch's default initialisation."""
    for module in modules:
        for layer in module.modules():
            if isinstance(layer, nn.Conv2d):
                nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu")
                if layer.bias is not None:
                    nn.init.zeros_(layer.bias)
            elif isinstance(layer, nn.BatchNorm2d):
                nn.init.ones_(layer.weight)
                nn.init.zeros_(layer.bias)


def stem(in_channels: int, width: int) -> nn.Sequential:
    """Two 3x3 conv-BN-ReLU layers at full resolution (PAL: `Stage.layer1`)."""
    return nn.Sequential(
        conv3x3(in_channels, width), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
        conv3x3(width, width), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
    )


def logit_head(width: int) -> nn.Sequential:
    """1x1 conv, ReLU, 1x1 conv to one channel: the logit map (PAL: `layer`, whose sigmoid is commented out)."""
    return nn.Sequential(nn.Conv2d(width, width, 1), nn.ReLU(inplace=True), nn.Conv2d(width, 1, 1))


class PlainResidual(nn.Module):
    """conv-BN-ReLU, conv-BN, plus the input, ReLU; keeps width and resolution (PAL: `Resnet1`)."""

    def __init__(self, channels: int):
        super().__init__()
        self.layer = nn.Sequential(
            conv3x3(channels, channels), nn.BatchNorm2d(channels), nn.ReLU(inplace=True),
            conv3x3(channels, channels), nn.BatchNorm2d(channels),
        )
        pal_init(self.layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.layer(x) + x)


class DownResidual(nn.Module):
    """Halves the resolution (PAL: `Resnet2`). Main path: conv-BN-ReLU, 2x2 max pool, conv-BN; shortcut: a
    stride-2 conv-BN-ReLU; the two are added, then ReLU. Odd sides would give the two paths different sizes."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.layer1 = nn.Sequential(
            conv3x3(in_channels, out_channels), nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True),
            nn.MaxPool2d(2, 2),
            conv3x3(out_channels, out_channels), nn.BatchNorm2d(out_channels),
        )
        self.layer2 = nn.Sequential(
            conv3x3(in_channels, out_channels, stride=2), nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True),
        )
        pal_init(self.layer1, self.layer2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.layer1(x) + self.layer2(x))


class SpatialAttention(nn.Module):
    """sigmoid(7x7 conv (with bias) over [channel max, channel mean]), one map per pixel (PAL's `SpatialAttention`,
    used by MSDA-Net and GGL-Net; PAL leaves it at PyTorch's default init)."""

    def __init__(self, kernel_size: int = 7):
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([x.amax(dim=1, keepdim=True), x.mean(dim=1, keepdim=True)], dim=1)
        return torch.sigmoid(self.conv(pooled))


class ResidualEncoder(nn.Module):
    """The stem, then `blocks` residual blocks per level, the first of every level after the first halving the
    resolution (PAL: `Stage`, attributes `layer1` and `resnet<level>_<block>`). Returns each level's output,
    full resolution first."""

    def __init__(self, in_channels: int, channels: list[int], blocks: int, init_stem: bool = True):
        super().__init__()
        self.levels = len(channels)
        self.blocks = blocks
        self.layer1 = stem(in_channels, channels[0])
        if init_stem:  # ALCL-Net initialises its stem, MLCL-Net leaves it at PyTorch's default
            pal_init(self.layer1)
        for level in range(1, self.levels + 1):
            width = channels[level - 1]
            first = PlainResidual(width) if level == 1 else DownResidual(channels[level - 2], width)
            self.add_module(f"resnet{level}_1", first)
            for block in range(2, blocks + 1):
                self.add_module(f"resnet{level}_{block}", PlainResidual(width))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = self.layer1(x)
        features = []
        for level in range(1, self.levels + 1):
            for block in range(1, self.blocks + 1):
                out = getattr(self, f"resnet{level}_{block}")(out)
            features.append(out)
        return features


class BilinearUp2x(nn.Module):
    """x2 bilinear upsampling with aligned corners (what PAL's `nn.UpsamplingBilinear2d(scale_factor=2)` does)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)


def check_input_side(name: str, x: torch.Tensor, multiple: int) -> None:
    """ValueError unless both sides of `x` are multiples of `multiple` (the network's downsampling factor)."""
    height, width = x.shape[-2:]
    if height % multiple or width % multiple:
        raise ValueError(f"{name} needs input sides that are multiples of {multiple}, got {height} x {width}")


def collapse_rgb_input(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A PAL state dict (3-channel input) as the equivalent state dict of the in_channels=1 network.

    PAL replicates the grey image into 3 channels with one mean and std, so its first convolution sees the same
    map three times: summing its weights over the input channels gives the same output from one grey channel.
    (For MSDA-Net the wavelet injection is parameter-free; irstd's `direction_channels` reproduces the
    replication there.)
    """
    if IMAGE_READER not in state:
        raise ValueError(f"not a PAL ALCL-Net / MLCL-Net / MSDA-Net state dict: no {IMAGE_READER}")
    collapsed = dict(state)
    collapsed[IMAGE_READER] = state[IMAGE_READER].sum(dim=1, keepdim=True)
    return collapsed
