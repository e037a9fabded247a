"""RDIAN: Sun, Bai, Yang and Bai, "Receptive-Field and Direction Induced Attention Network for Infrared Dim
Small Target Detection With a Large-Scale Dataset IRDST", IEEE TGRS 61, 2023.

Checked against the authors' release, sun11999/RDIAN `model/segmentation.py` (with `model/cbam.py`,
`model/direction.py`; weights `params/best.pth`). BasicIRSTD (XinyiYing/BasicIRSTD `model/RDIAN/`) carries the
same three files; its only difference is a final sigmoid, which we leave out (the framework applies it). Attribute
names follow the release so that its weights load with an identity key mapping.

The network, at full resolution H x W then H/2 x W/2:

* direction-induced attention: eight fixed 5x5 difference kernels (centre minus the pixel two steps away in one
  of eight directions); the products of opposite directions, summed and squashed, weight the first features.
  A point target is brighter than its surround in every direction, so all four products are large there;
  along an edge or a line at least one pair has opposite signs.
* receptive-field block: four residual branches with 1x1, 3x3, 5x5 and 7x7 kernels on the stride-2 features,
  concatenated, fused by a 3x3 convolution and refined by CBAM.
* the result is upsampled bilinearly and added to a 1x1 projection of the full-resolution features before an
  FCN head gives the logit map.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

# (row, column) of the -1 tap in the 5x5 kernel of d11 .. d18; the +1 tap is the centre (2, 2)
DIRECTION_TAPS = ((0, 0), (0, 2), (0, 4), (2, 4), (4, 4), (4, 2), (4, 0), (2, 0))
# the receptive-field branches: kernel size of each (residual_block0 .. residual_block3)
BRANCH_KERNELS = (1, 3, 5, 7)


def conv_bn_leaky(in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1) -> nn.Sequential:
    """Convolution without bias, batch norm, LeakyReLU(0.01); 'same' padding (release: `conv_batch`)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.LeakyReLU(),
    )


class DirectionalDifference(nn.Module):
    """x(p) - x(p + offset) for one of the eight offsets two pixels away, as a fixed 5x5 convolution.

    The release keeps each kernel as a frozen `nn.Parameter` called `weight` (so it is in the state dict, in the
    released weights and in the parameter count); we do the same, and use it detached so that nothing that turns
    gradients back on (a functional or vmapped trainer) can move it.
    """

    def __init__(self, tap: tuple[int, int]):
        super().__init__()
        kernel = torch.zeros(1, 1, 5, 5)
        kernel[0, 0, 2, 2] = 1.0
        kernel[0, 0, tap[0], tap[1]] = -1.0
        self.weight = nn.Parameter(kernel, requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight.detach(), padding=2)


class NewBlock(nn.Module):
    """Residual bottleneck of one kernel size: conv to half width, conv back, add the input (no final activation)."""

    def __init__(self, channels: int, kernel_size: int):
        super().__init__()
        self.layer1 = conv_bn_leaky(channels, channels // 2, kernel_size)
        self.layer2 = conv_bn_leaky(channels // 2, channels, kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.layer2(self.layer1(x))


class ChannelGate(nn.Module):
    """CBAM channel attention: a shared MLP on the global average and max descriptors, summed, sigmoid."""

    def __init__(self, channels: int, hidden: int):
        super().__init__()
        # index layout of the release: 0 flatten, 1 linear, 2 relu, 3 linear
        self.mlp = nn.Sequential(nn.Flatten(), nn.Linear(channels, hidden), nn.ReLU(), nn.Linear(hidden, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.mlp(F.adaptive_avg_pool2d(x, 1)) + self.mlp(F.adaptive_max_pool2d(x, 1))
        return x * torch.sigmoid(logits)[:, :, None, None]


class SpatialConv(nn.Module):
    """The spatial gate's 7x7 convolution (no bias) and batch norm, without activation (release: `BasicConv`)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 1, 7, padding=3, bias=False)
        self.bn = nn.BatchNorm2d(1, eps=1e-5, momentum=0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))


class SpatialGate(nn.Module):
    """CBAM spatial attention over the channel-wise max and mean maps (in that order)."""

    def __init__(self):
        super().__init__()
        self.spatial = SpatialConv()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([x.amax(dim=1, keepdim=True), x.mean(dim=1, keepdim=True)], dim=1)
        return x * torch.sigmoid(self.spatial(pooled))


class CBAM(nn.Module):
    """Channel then spatial attention (Woo et al., ECCV 2018)."""

    def __init__(self, channels: int, hidden: int):
        super().__init__()
        self.ChannelGate = ChannelGate(channels, hidden)
        self.SpatialGate = SpatialGate()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.SpatialGate(self.ChannelGate(x))


class FCNHead(nn.Module):
    """3x3 conv to a quarter of the width, BN, ReLU, dropout 0.1, 1x1 conv to the logit map."""

    def __init__(self, channels: int):
        super().__init__()
        self.block = nn.Sequential(
            nn.Conv2d(channels, channels // 4, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels // 4),
            nn.ReLU(inplace=True),
            nn.Dropout(0.1),
            nn.Conv2d(channels // 4, 1, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class RDIAN(nn.Module):
    """Receptive-field and direction induced attention network; logits at the input resolution.

    Args:
        in_channels: image channels; the direction kernels are defined on one channel, so only 1 is accepted
            (as in the release).
        channels: width of the half-resolution trunk (the full-resolution features have half of it).
        num_blocks: residual blocks in the 1x1, 3x3, 5x5 and 7x7 branches.

    Defaults are the release (216,758 parameters, 200 of them the frozen direction kernels). Any input size
    works (the stride-2 trunk is resized back to the input size); there is no deep supervision.
    """

    side_multiple = 1  # no downsampling that upsampling must mirror: any side

    def __init__(self, in_channels: int = 1, channels: int = 32, num_blocks: Sequence[int] = (1, 2, 2, 2)):
        super().__init__()
        num_blocks = [int(n) for n in num_blocks]
        if in_channels != 1:
            raise ValueError(f"RDIAN's direction kernels take single-channel images, got in_channels={in_channels}")
        if channels < 4 or channels % 4:
            raise ValueError(f"RDIAN needs channels to be a multiple of 4 (halved in the stem and branches, "
                             f"quartered in the head), got channels={channels}")
        if len(num_blocks) != len(BRANCH_KERNELS) or min(num_blocks) < 1:
            raise ValueError(f"RDIAN needs {len(BRANCH_KERNELS)} num_blocks >= 1 (one per branch), got {num_blocks}")
        stem = channels // 2
        self.conv1 = conv_bn_leaky(in_channels, stem)
        self.conv2 = conv_bn_leaky(stem, channels, stride=2)
        for index, (kernel, blocks) in enumerate(zip(BRANCH_KERNELS, num_blocks, strict=True)):
            self.add_module(f"residual_block{index}",
                            nn.Sequential(*[NewBlock(channels, kernel) for _ in range(blocks)]))
        # the release builds CBAM(32, reduction_ratio=32): a one-unit bottleneck at the default width
        self.cbam = CBAM(channels, max(1, channels // 32))
        self.conv_cat = conv_bn_leaky(len(BRANCH_KERNELS) * channels, channels)
        self.conv_res = conv_bn_leaky(stem, channels, 1)
        for index, tap in enumerate(DIRECTION_TAPS, start=11):
            self.add_module(f"d{index}", DirectionalDifference(tap))
        self.head = FCNHead(channels)

    def logit_layers(self) -> list[nn.Conv2d]:
        """The convolutions whose outputs are logits (IRSTDModule's `output_prior` sets their bias)."""
        return [self.head.block[-1]]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        # opposite directions multiplied: large where the centre stands out both ways
        contrast = (self.d11(x) * self.d15(x) + self.d12(x) * self.d16(x)
                    + self.d13(x) * self.d17(x) + self.d14(x) * self.d18(x))
        full = self.conv1(x)
        trunk = self.conv2(full + full * torch.sigmoid(contrast))
        branches = [self.residual_block0(trunk), self.residual_block1(trunk), self.residual_block2(trunk),
                    self.residual_block3(trunk)]
        fused = self.cbam(self.conv_cat(torch.cat(branches, dim=1)))
        fused = F.interpolate(fused, size=(height, width), mode="bilinear", align_corners=False)
        # The release's BasicIRSTD copy ends with a sigmoid; the framework applies it (IRSTDModule.probabilities).
        return self.head(torch.relu(fused + self.conv_res(full)))
