"""U-Net (Ronneberger et al., MICCAI 2015), the network of the paper's mapping-degeneration study."""

from __future__ import annotations

import math

import torch
from torch import nn


class DoubleConv(nn.Sequential):
    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class UNet(nn.Module):
    """Encoder-decoder with skip connections; `width` channels at full resolution, doubled per level.

    `depth` poolings (default 4, as in the original); inputs must be divisible by 2**depth.
    `target_prior` is the initial output probability of every pixel.
    """

    def __init__(self, in_channels: int = 1, width: int = 32, depth: int = 4, target_prior: float = 0.01):
        super().__init__()
        if width < 1 or depth < 1:
            raise ValueError(f"UNet needs width >= 1 and depth >= 1, got width={width}, depth={depth}")
        self.side_multiple = 2**depth
        channels = [width * 2**level for level in range(depth + 1)]
        self.stem = DoubleConv(in_channels, channels[0])
        self.down = nn.ModuleList(DoubleConv(channels[i], channels[i + 1]) for i in range(depth))
        self.up = nn.ModuleList(nn.ConvTranspose2d(channels[i + 1], channels[i], 2, stride=2)
                                for i in reversed(range(depth)))
        self.decode = nn.ModuleList(DoubleConv(2 * channels[i], channels[i]) for i in reversed(range(depth)))
        self.head = nn.Conv2d(channels[0], 1, 1)
        # Targets cover ~0.1 % of a frame: starting the output at that prior instead of 0.5
        # spares the first hundreds of steps unlearning an all-target map (RetinaNet's init).
        nn.init.constant_(self.head.bias, -math.log((1 - target_prior) / target_prior))
        self.pool = nn.MaxPool2d(2)

    def logit_layers(self) -> list[nn.Conv2d]:
        """The convolutions whose outputs are logits (IRSTDModule's `output_prior` sets their bias)."""
        return [self.head]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = [self.stem(x)]
        for block in self.down:
            skips.append(block(self.pool(skips[-1])))
        x = skips.pop()
        for up, decode in zip(self.up, self.decode, strict=True):
            x = decode(torch.cat([skips.pop(), up(x)], dim=1))
        return self.head(x)
