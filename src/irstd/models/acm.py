"""ACM: Dai et al., "Asymmetric Contextual Modulation for Infrared Small Target Detection", WACV 2021.

The variant released with LESPS (XinyiYing/LESPS, `model/ACM/model_ACM.py`, `ASKCResUNet`): a residual
U-Net whose skip connections merge through asymmetric bi-directional (AsymBi) fusion. Attribute names
follow the release so that its checkpoints load with an identity key mapping.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from irstd.models.blocks import AsymBiFusion, FCNHead, check_widths, residual_stage, resnet_stem


class ACM(nn.Module):
    """Residual U-Net with AsymBi skip fusion; logits at the input resolution.

    Args:
        in_channels: image channels.
        layers: residual blocks in each of the three encoder stages (the decoder mirrors stages 1, 2).
        channels: stem width, then the widths of stages 1, 2, 3 (at 1/4, 1/8, 1/16 resolution).

    Defaults are the released configuration (397,823 parameters). Input sides must be multiples of 16.
    """

    side_multiple = 16  # a stride-2 stem, a pooling and two stride-2 stages, mirrored by x2 upsamplings

    def __init__(self, in_channels: int = 1, layers: Sequence[int] = (3, 3, 3),
                 channels: Sequence[int] = (8, 16, 32, 64)):
        super().__init__()
        layers, channels = check_widths("ACM", layers, channels)
        self.stem = resnet_stem(in_channels, channels[0])
        self.layer1 = residual_stage(channels[1], channels[1], layers[0])
        self.layer2 = residual_stage(channels[1], channels[2], layers[1], stride=2)
        self.layer3 = residual_stage(channels[2], channels[3], layers[2], stride=2)
        self.deconv2 = nn.ConvTranspose2d(channels[3], channels[2], 4, stride=2, padding=1)
        self.uplayer2 = residual_stage(channels[2], channels[2], layers[1])
        self.fuse2 = AsymBiFusion(channels[2])
        self.deconv1 = nn.ConvTranspose2d(channels[2], channels[1], 4, stride=2, padding=1)
        self.uplayer1 = residual_stage(channels[1], channels[1], layers[0])
        self.fuse1 = AsymBiFusion(channels[1])
        self.head = FCNHead(channels[1])

    def logit_layers(self) -> list[nn.Conv2d]:
        """The convolutions whose outputs are logits (IRSTDModule's `output_prior` sets their bias)."""
        return [self.head.block[-1]]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c1 = self.layer1(self.stem(x))  # 1/4
        c2 = self.layer2(c1)  # 1/8
        c3 = self.layer3(c2)  # 1/16
        up2 = self.uplayer2(self.fuse2(self.deconv2(c3), c2))
        up1 = self.uplayer1(self.fuse1(self.deconv1(up2), c1))
        # The release ends with a sigmoid here; the framework applies it (IRSTDModule.probabilities).
        return F.interpolate(self.head(up1), scale_factor=4, mode="bilinear", align_corners=False)
