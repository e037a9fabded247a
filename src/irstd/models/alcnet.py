"""ALCNet: Dai et al., "Attentional Local Contrast Networks for Infrared Small Target Detection", TGRS 2021.

The variant released with LESPS (XinyiYing/LESPS, `model/ACM/model_ALCNet.py`, `ASKCResNetFPN`): a
residual encoder whose features are merged top-down by AsymBi fusion, FPN style, then upsampled to 1/2
resolution by a last transposed convolution and classified there. Attribute names follow the release
so that its checkpoints load with an identity key mapping.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from irstd.models.blocks import AsymBiFusion, FCNHead, check_widths, residual_stage, resnet_stem


def _resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize with align_corners=False, as the release's torchvision `Resize` on tensors.

    Like `Resize`, a map already at `size` is returned as is. For inputs whose sides are multiples of 16
    (which the fusions require anyway) only the final upsampling is not an identity, and for upsampling
    antialiasing changes nothing, so the torchvision version's antialias default does not matter.
    """
    if tuple(x.shape[-2:]) == size:
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class ALCNet(nn.Module):
    """Residual FPN with AsymBi fusion; logits at the input resolution.

    Args:
        in_channels: image channels.
        layers: residual blocks in each of the three encoder stages.
        channels: stem width (also the width at 1/2 resolution, where the head sits), then the widths
            of stages 1, 2, 3 (at 1/4, 1/8, 1/16 resolution).

    Defaults are the released configuration (519,889 parameters). Input sides must be multiples of 16.
    """

    side_multiple = 16  # a stride-2 stem, a pooling and two stride-2 stages, mirrored by x2 upsamplings

    # read by irstd's DDP strategy: uplayer1/uplayer2 never get a gradient (see __init__)
    has_unused_parameters = True

    def __init__(self, in_channels: int = 1, layers: Sequence[int] = (4, 4, 4),
                 channels: Sequence[int] = (8, 16, 32, 64)):
        super().__init__()
        layers, channels = check_widths("ALCNet", layers, channels)
        self.stem = resnet_stem(in_channels, channels[0])
        self.head = FCNHead(channels[0])
        self.layer1 = residual_stage(channels[1], channels[1], layers[0])
        self.layer2 = residual_stage(channels[1], channels[2], layers[1], stride=2)
        self.layer3 = residual_stage(channels[2], channels[3], layers[2], stride=2)
        self.deconv2 = nn.ConvTranspose2d(channels[3], channels[2], 4, stride=2, padding=1)
        self.deconv1 = nn.ConvTranspose2d(channels[2], channels[1], 4, stride=2, padding=1)
        self.deconv0 = nn.ConvTranspose2d(channels[1], channels[0], 4, stride=2, padding=1)
        # The release builds these two decoder stages but its forward never calls them (92,928 parameters
        # by default). They stay so that released checkpoints load strictly; they get no gradient, so
        # distributed training needs find_unused_parameters (`has_unused_parameters`).
        self.uplayer2 = residual_stage(channels[2], channels[2], layers[1])
        self.uplayer1 = residual_stage(channels[1], channels[1], layers[0])
        self.fuse23 = AsymBiFusion(channels[2])
        self.fuse12 = AsymBiFusion(channels[1])

    def logit_layers(self) -> list[nn.Conv2d]:
        """The convolutions whose outputs are logits (IRSTDModule's `output_prior` sets their bias)."""
        return [self.head.block[-1]]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        c1 = self.layer1(self.stem(x))  # 1/4
        c2 = self.layer2(c1)  # 1/8
        out = _resize(self.layer3(c2), (height // 16, width // 16))
        out = _resize(self.fuse23(self.deconv2(out), c2), (height // 8, width // 8))
        out = self.deconv0(self.fuse12(self.deconv1(out), c1))  # 1/2
        # The release ends with a sigmoid here; the framework applies it (IRSTDModule.probabilities).
        return _resize(self.head(out), (height, width))
