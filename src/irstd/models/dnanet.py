"""DNA-Net: Li et al., "Dense Nested Attention Network for Infrared Small Target Detection", IEEE TIP 2022.

Layer shapes, attribute names and forward order follow the official release (as used by LESPS), so an
official state_dict loads by key identity once its `model.` prefix is stripped. Unlike the release, the
network returns logits: the sigmoid is applied by `IRSTDModule`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

# Nested levels below the full-resolution row; the fusion head's x16 upsampling and its four
# 1x1 projections are written for exactly this depth in the reference.
DEPTH = 4


class ChannelAttention(nn.Module):
    """CBAM channel gate: a shared bottleneck MLP over average- and max-pooled channel descriptors."""

    def __init__(self, channels: int):
        super().__init__()
        # The release fixes the reduction at 16 (its `ratio` argument is ignored).
        hidden = max(1, channels // 16)
        self.fc1 = nn.Conv2d(channels, hidden, 1, bias=False)
        self.fc2 = nn.Conv2d(hidden, channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        def mlp(descriptor: torch.Tensor) -> torch.Tensor:
            return self.fc2(torch.relu(self.fc1(descriptor)))

        return torch.sigmoid(mlp(F.adaptive_avg_pool2d(x, 1)) + mlp(F.adaptive_max_pool2d(x, 1)))


class SpatialAttention(nn.Module):
    """CBAM spatial gate: a 7x7 convolution over the channel-wise mean and max maps."""

    def __init__(self, kernel_size: int = 7):
        super().__init__()
        self.conv1 = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return torch.sigmoid(self.conv1(pooled))


class ResCBAMBlock(nn.Module):
    """Residual block whose second convolution is gated by channel then spatial attention (Res_CBAM_block)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(out_channels)
        # A projection only where the widths differ; identity blocks carry no shortcut parameters.
        self.shortcut = (nn.Sequential(nn.Conv2d(in_channels, out_channels, 1), nn.BatchNorm2d(out_channels))
                         if in_channels != out_channels else None)
        self.ca = ChannelAttention(out_channels)
        self.sa = SpatialAttention()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x if self.shortcut is None else self.shortcut(x)
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out = self.ca(out) * out
        out = self.sa(out) * out
        return torch.relu(out + residual)


def _stage(in_channels: int, out_channels: int, num_blocks: int = 1) -> nn.Sequential:
    blocks = [ResCBAMBlock(in_channels, out_channels)]
    blocks += [ResCBAMBlock(out_channels, out_channels) for _ in range(num_blocks - 1)]
    return nn.Sequential(*blocks)


def _resize(x: torch.Tensor, scale: float) -> torch.Tensor:
    # The reference resamples every cross-level link bilinearly with align_corners=True.
    return F.interpolate(x, scale_factor=scale, mode="bilinear", align_corners=True)


class DNANet(nn.Module):
    """Dense nested U-shape of Res-CBAM stages with a multi-level fusion head and deep supervision.

    Node `conv{i}_{j}` sits at level i (resolution / 2**i) and nesting column j. Column 0 is the encoder;
    node (i, j) fuses its own row's earlier nodes, the upsampled node (i+1, j-1) and, below the top row,
    the downsampled node (i-1, j). The head fuses the last node of every level at full resolution.

    Args:
        in_channels: image channels (`input_channels` in the release).
        channels: widths of the five levels (`nb_filter`).
        num_blocks: Res-CBAM blocks per stage at levels 1..4 (level 0 stages have one).
        deep_supervision: with it, training returns the logits of x0_1, x0_2, x0_3 and the fused head
            (heads `final1`..`final4`) and eval returns the fused head's; without it, a single head `final`.
    """

    side_multiple = 16  # four poolings, mirrored by x2 upsamplings

    def __init__(self, in_channels: int = 1, channels: Sequence[int] = (16, 32, 64, 128, 256),
                 num_blocks: Sequence[int] = (2, 2, 2, 2), deep_supervision: bool = True):
        super().__init__()
        channels, num_blocks = [int(c) for c in channels], [int(n) for n in num_blocks]
        if len(channels) != DEPTH + 1 or len(num_blocks) != DEPTH:
            raise ValueError(f"DNANet needs {DEPTH + 1} channels and {DEPTH} num_blocks, "
                             f"got channels={channels}, num_blocks={num_blocks}")
        self.deep_supervision = deep_supervision

        def blocks_at(level: int) -> int:
            return 1 if level == 0 else num_blocks[level - 1]

        for level in range(DEPTH + 1):
            source = in_channels if level == 0 else channels[level - 1]
            self.add_module(f"conv{level}_0", _stage(source, channels[level], blocks_at(level)))
        for column in range(1, DEPTH + 1):
            for level in range(DEPTH + 1 - column):
                fused = column * channels[level] + channels[level + 1] + (channels[level - 1] if level else 0)
                self.add_module(f"conv{level}_{column}", _stage(fused, channels[level], blocks_at(level)))

        self.conv0_4_final = _stage((DEPTH + 1) * channels[0], channels[0])
        # conv0_{level}_1x1 projects the deepest node of `level` to the top width before upsampling.
        for level in range(DEPTH, 0, -1):
            self.add_module(f"conv0_{level}_1x1", nn.Conv2d(channels[level], channels[0], 1))

        if deep_supervision:
            for head in range(1, DEPTH + 1):
                self.add_module(f"final{head}", nn.Conv2d(channels[0], 1, 1))
        else:
            self.final = nn.Conv2d(channels[0], 1, 1)

    def logit_layers(self) -> list[nn.Conv2d]:
        """The convolutions whose outputs are logits (IRSTDModule's `output_prior` sets their bias)."""
        if not self.deep_supervision:
            return [self.final]
        return [getattr(self, f"final{head}") for head in range(1, DEPTH + 1)]

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        nodes: dict[tuple[int, int], torch.Tensor] = {(0, 0): self.conv0_0(x)}
        # Grow one level deeper, then fill that anti-diagonal from the bottom up: node (i, j) needs
        # (i+1, j-1) from the same diagonal and (i-1, j) from the previous one (reference order).
        for depth in range(1, DEPTH + 1):
            nodes[depth, 0] = getattr(self, f"conv{depth}_0")(F.max_pool2d(nodes[depth - 1, 0], 2))
            for level in range(depth - 1, -1, -1):
                column = depth - level
                inputs = [nodes[level, j] for j in range(column)]
                inputs.append(_resize(nodes[level + 1, column - 1], 2))
                if level > 0:
                    inputs.append(_resize(nodes[level - 1, column], 0.5))
                nodes[level, column] = getattr(self, f"conv{level}_{column}")(torch.cat(inputs, dim=1))

        fused = [_resize(getattr(self, f"conv0_{level}_1x1")(nodes[level, DEPTH - level]), 2**level)
                 for level in range(DEPTH, 0, -1)]
        head_features = self.conv0_4_final(torch.cat([*fused, nodes[0, DEPTH]], dim=1))

        if not self.deep_supervision:
            return self.final(head_features)
        if not self.training:
            return self.final4(head_features)
        return [self.final1(nodes[0, 1]), self.final2(nodes[0, 2]), self.final3(nodes[0, 3]),
                self.final4(head_features)]
