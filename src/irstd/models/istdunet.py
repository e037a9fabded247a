"""ISTDU-Net: Hou, Zhang, Tan, Xi, Zheng and Li, "ISTDU-Net: Infrared Small-Target Detection U-Net",
IEEE Geoscience and Remote Sensing Letters 19, 2022.

Checked against the BasicIRSTD toolbox (XinyiYing/BasicIRSTD, `model/ISTDUNet/model_ISTDUNet.py` with its
`resnet2020.py`, `splat.py` and `eta.py`, commit 95650c3), whose trained ISTDU-Net weights are the ones users
load. The authors' code bundled there (`model/ISTDU-Net-main/model/ctNet/`) has the same layers and names
but returns the sigmoids of both heads (`headDet`, `headSeg`); BasicIRSTD, and this module, use `headSeg`
alone, so `headDet` is kept only for strict loading (it receives no gradient).

Parameter names follow the release, so a BasicIRSTD state_dict loads by key identity once its `model.`
prefix is stripped. Unlike the release the network returns logits: the sigmoid is applied by `IRSTDModule`.

One quirk of the release is reproduced at initialisation only: each external attention's two memories
start as transposes of each other. The release ties them by storage on the CPU, but BasicIRSTD moves the
network to the GPU (which gives every parameter its own storage) before training or loading weights, so
its trained memories are independent; here they always are.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

# ResNeSt split attention as configured by the release: two splits in each of four groups, the attention
# MLP at least 32 wide (a quarter of the split channels otherwise)
RADIX = 2
GROUPS = 4
ATTENTION_REDUCTION = 4
MIN_ATTENTION_WIDTH = 32
EXPANSION = 4  # bottleneck output = 4 x its planes
LEVELS = 4  # residual stages; the last three halve the resolution
# each x2 upsampling of the decoder must land exactly on its skip: sides divisible by 2**3
SIDE_DIVISOR = 2 ** (LEVELS - 1)


def _he_normal_(conv: nn.Conv2d | nn.Conv1d) -> None:
    """N(0, 2 / fan_out) weights, fan_out = kernel area x output channels (the release's init)."""
    fan_out = math.prod(conv.kernel_size) * conv.out_channels
    with torch.no_grad():
        conv.weight.normal_(0, math.sqrt(2.0 / fan_out))


class SplitAttentionConv(nn.Module):
    """Split-attention 3x3 convolution (ResNeSt, Zhang et al. 2022; SplAtConv2d in the release).

    A grouped convolution produces RADIX splits of `channels`; their sum, globally pooled, goes through a
    two-layer grouped MLP whose output, softmax-normalised across the splits within each group, weights the
    splits' sum.
    """

    def __init__(self, in_channels: int, channels: int):
        super().__init__()
        hidden = max(in_channels * RADIX // ATTENTION_REDUCTION, MIN_ATTENTION_WIDTH)
        self.conv = nn.Conv2d(in_channels, channels * RADIX, 3, padding=1, groups=GROUPS * RADIX, bias=False)
        self.bn0 = nn.BatchNorm2d(channels * RADIX)
        self.fc1 = nn.Conv2d(channels, hidden, 1, groups=GROUPS)
        self.bn1 = nn.BatchNorm2d(hidden)
        self.fc2 = nn.Conv2d(hidden, channels * RADIX, 1, groups=GROUPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        splits = torch.relu(self.bn0(self.conv(x)))
        batch, width = splits.shape[0], splits.shape[1] // RADIX
        splits = splits.view(batch, RADIX, width, *splits.shape[2:])
        context = F.adaptive_avg_pool2d(splits.sum(dim=1), 1)
        logits = self.fc2(torch.relu(self.bn1(self.fc1(context))))
        # the MLP's output is laid out as (group, split, channel in group); normalise over the splits
        weights = logits.view(batch, GROUPS, RADIX, width // GROUPS).softmax(dim=2)
        weights = weights.transpose(1, 2).reshape(batch, RADIX, width, 1, 1)
        return (weights * splits).sum(dim=1)


class SplitBottleneck(nn.Module):
    """ResNeSt bottleneck: 1x1 reduction, split-attention 3x3, 1x1 expansion (x4), residual sum, ReLU.

    A strided block keeps its 3x3 at full resolution and averages 3x3 windows with stride 2 afterwards
    (`avd_layer`); its shortcut averages 2x2 windows before a 1x1 projection (ResNet-D).
    """

    def __init__(self, in_channels: int, planes: int, bottleneck_width: int, stride: int = 1):
        super().__init__()
        width = int(planes * bottleneck_width / 64) * GROUPS
        out_channels = planes * EXPANSION
        self.stride = stride
        self.conv1 = nn.Conv2d(in_channels, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = SplitAttentionConv(width, width)
        if stride > 1:
            self.avd_layer = nn.AvgPool2d(3, stride, padding=1)
        self.conv3 = nn.Conv2d(width, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.downsample = None
        if stride > 1 or in_channels != out_channels:
            pool = (nn.AvgPool2d(stride, stride, ceil_mode=True, count_include_pad=False) if stride > 1
                    else nn.Identity())
            self.downsample = nn.Sequential(pool, nn.Conv2d(in_channels, out_channels, 1, bias=False),
                                            nn.BatchNorm2d(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2(torch.relu(self.bn1(self.conv1(x))))
        if self.stride > 1:
            out = self.avd_layer(out)
        out = self.bn3(self.conv3(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return torch.relu(out + shortcut)


class ResidualStages(nn.Module):
    """Four stages of split bottlenecks (`layer1..layer4`, ResNetCt in the release), returning all four
    outputs: full resolution, then 1/2, 1/4, 1/8."""

    def __init__(self, in_channels: int, layers: Sequence[int], planes: Sequence[int], bottleneck_width: int):
        super().__init__()
        width = in_channels
        for level, (blocks, plane) in enumerate(zip(layers, planes, strict=True), start=1):
            stride = 1 if level == 1 else 2
            stage = [SplitBottleneck(width, plane, bottleneck_width, stride)]
            width = plane * EXPANSION
            stage += [SplitBottleneck(width, plane, bottleneck_width) for _ in range(blocks - 1)]
            self.add_module(f"layer{level}", nn.Sequential(*stage))
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                _he_normal_(module)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for level in range(1, LEVELS + 1):
            x = getattr(self, f"layer{level}")(x)
            features.append(x)
        return features


class Encoder(nn.Module):
    """Input batch norm (no affine), a 3x3 stem convolution, and the residual stages (`Down` in the release)."""

    def __init__(self, in_channels: int, stem_width: int, layers: Sequence[int], planes: Sequence[int],
                 bottleneck_width: int):
        super().__init__()
        self.stem = nn.Sequential(
            nn.BatchNorm2d(in_channels, affine=False),
            nn.Conv2d(in_channels, stem_width, 3, padding=1, bias=False),
            nn.BatchNorm2d(stem_width),
            nn.ReLU(inplace=True),
        )
        self.down = ResidualStages(stem_width, layers, planes, bottleneck_width)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.down(self.stem(x))


class ExternalAttention(nn.Module):
    """External attention (Guo et al., "Beyond Self-attention: External Attention using Two Linear Layers",
    TPAMI 2022): pixels attend to `units` learnt memory slots (`linear_0`, softmax over the pixels, then
    normalised over the slots) and are rebuilt from a second memory (`linear_1`); residual, no activation."""

    def __init__(self, channels: int, units: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 1)
        self.linear_0 = nn.Conv1d(channels, units, 1, bias=False)
        self.linear_1 = nn.Conv1d(units, channels, 1, bias=False)
        self.conv2 = nn.Sequential(nn.Conv2d(channels, channels, 1, bias=False), nn.BatchNorm2d(channels))
        _he_normal_(self.conv1)
        _he_normal_(self.conv2[0])
        # the release's memories start as transposes of each other, drawn at linear_1's scale
        _he_normal_(self.linear_1)
        with torch.no_grad():
            self.linear_0.weight.copy_(self.linear_1.weight.permute(1, 0, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.shape
        pixels = self.conv1(x).view(batch, channels, height * width)
        attention = self.linear_0(pixels).softmax(dim=-1)
        attention = attention / (1e-9 + attention.sum(dim=1, keepdim=True))
        rebuilt = self.linear_1(attention).view(batch, channels, height, width)
        return self.conv2(rebuilt) + x


class AttentionSkips(nn.Module):
    """External attention on each of the four encoder outputs (`X1..X4`, EDN in the release)."""

    def __init__(self, channels: Sequence[int], units: int):
        super().__init__()
        for level, width in enumerate(channels, start=1):
            self.add_module(f"X{level}", ExternalAttention(width, units))

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        return [getattr(self, f"X{level}")(x) for level, x in enumerate(features, start=1)]


def _project(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels),
                         nn.ReLU(inplace=True))


class Decoder(nn.Module):
    """Top-down path (UPCt in the release): project the coarser map to the next width (1x1, BN, ReLU),
    upsample it x2 bilinearly and add the skip, three times."""

    def __init__(self, channels: Sequence[int]):
        super().__init__()
        # channels: the encoder widths, fine to coarse
        for step, level in enumerate(range(LEVELS - 1, 0, -1), start=1):
            self.add_module(f"up{step}", _project(channels[level], channels[level - 1]))

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        out = features[-1]
        for step, skip in enumerate(reversed(features[:-1]), start=1):
            out = skip + F.interpolate(getattr(self, f"up{step}")(out), scale_factor=2, mode="bilinear",
                                       align_corners=False)
        return out


class Head(nn.Module):
    """3x3 convolution to a quarter of the width, BN, ReLU, 1x1 convolution to one logit map."""

    def __init__(self, in_channels: int):
        super().__init__()
        hidden = in_channels // 4
        self.head = nn.Sequential(nn.Conv2d(in_channels, hidden, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(hidden), nn.ReLU(inplace=True), nn.Conv2d(hidden, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x)


class ISTDUNet(nn.Module):
    """U-Net of ResNeSt stages with external-attention skips and a single full-resolution head.

    Encoder (`down`): stem at full resolution, stages at 1, 1/2, 1/4, 1/8 (outputs `4 x channels`); every
    stage output passes an external attention (`DN`); the decoder (`up`) adds them back top-down; `headSeg`
    maps the full-resolution result to logits. No deep supervision: one map in training and eval.
    Height and width must be multiples of 8 (each x2 upsampling must land on its skip's size).

    Args:
        in_channels: image channels (the release hard-codes 1).
        layers: bottleneck blocks per stage.
        channels: planes per stage (stage output = 4 x planes; the release's `layer_parms`).
        stem_width: stem output width (stage 1's input).
        bottleneck_width: ResNeSt's per-group width factor: a stage's split-attention convolution is
            `int(planes * bottleneck_width / 64) * 4` wide, which must be a multiple of 8.
        attention_units: memory slots of each external attention (64 in the release).
    """

    side_multiple = SIDE_DIVISOR

    # read by irstd's DDP strategy: `headDet` never gets a gradient (see __init__)
    has_unused_parameters = True

    def __init__(self, in_channels: int = 1, layers: Sequence[int] = (1, 2, 4, 8),
                 channels: Sequence[int] = (16, 32, 64, 128), stem_width: int = 16, bottleneck_width: int = 16,
                 attention_units: int = 64):
        super().__init__()
        layers, channels = [int(n) for n in layers], [int(c) for c in channels]
        if len(layers) != LEVELS or len(channels) != LEVELS or min(layers) < 1 or min(channels) < 1:
            raise ValueError(f"ISTDUNet needs {LEVELS} layers >= 1 and {LEVELS} channels >= 1, got layers={layers}, "
                             f"channels={channels}")
        for planes in channels:
            width = int(planes * bottleneck_width / 64) * GROUPS
            if width < 1 or width % (GROUPS * RADIX):
                raise ValueError(f"ISTDUNet: planes {planes} with bottleneck_width {bottleneck_width} give a "
                                 f"split-attention width of {width}, which must be a positive multiple of "
                                 f"{GROUPS * RADIX} (channels={channels})")
        if min(in_channels, stem_width, attention_units) < 1:
            raise ValueError(f"ISTDUNet needs in_channels, stem_width and attention_units >= 1, got "
                             f"{in_channels}, {stem_width}, {attention_units}")
        widths = [planes * EXPANSION for planes in channels]
        self.down = Encoder(in_channels, stem_width, layers, channels, bottleneck_width)
        self.up = Decoder(widths)
        # the release's detection head; BasicIRSTD's forward never reads it
        self.headDet = Head(widths[0])
        self.headSeg = Head(widths[0])
        self.DN = AttentionSkips(widths, attention_units)

    def logit_layers(self) -> list[nn.Conv2d]:
        """The convolution whose output is the logit map (the unused `headDet` is left alone)."""
        return [self.headSeg.head[3]]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        if height % SIDE_DIVISOR or width % SIDE_DIVISOR:
            raise ValueError(f"ISTDUNet needs height and width that are multiples of {SIDE_DIVISOR}, "
                             f"got {height} x {width}")
        if self.training and x.shape[0] < 2:
            raise ValueError(f"ISTDUNet needs a batch of at least 2 in training mode (its split attentions "
                             f"batch-normalise globally pooled features), got input of shape {tuple(x.shape)}")
        return self.headSeg(self.up(self.DN(self.down(x))))
