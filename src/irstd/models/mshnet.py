"""MSHNet: Liu et al., "Infrared Small Target Detection with Scale and Location Sensitivity", CVPR 2024.

A plain U-Net of residual CBAM blocks (the paper's point is the loss, irstd.losses.SLSLoss, and a light
multi-scale head) checked against the authors' release, Lliu666/MSHNet `model/MSHNet.py` (commit 7c5194b),
whose attribute names are kept so that its state_dict loads by key identity. The residual CBAM block is the
same as DNA-Net's (conv1/bn1/conv2/bn2/shortcut/ca/sa), so it is shared with irstd.models.dnanet.

Differences from the release, none of which changes a weight:
- The release takes 3 channels (grey frames read as RGB and normalised with ImageNet statistics) and its
  released checkpoints have `conv_init.weight` of shape 16 x 3 x 1 x 1; here `in_channels` defaults to 1.
- The release's `forward(x, warm_flag)` skips the multi-scale head during its warm-up epochs (then it
  returns only `output_0`'s map); here the head is always on, as in the release after warm-up and at test.
- The side heads `output_1..3` predict at 1/2, 1/4, 1/8 resolution; the release trains them against the label
  max-pooled to their size, here they are returned bilinearly upsampled to the input size (the same
  upsampling that feeds the fusion conv `final`), since irstd's losses compare every map with the full label.
- Logits, not probabilities (the release has no sigmoid either; its metrics threshold logits at 0).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from irstd.models.dnanet import ResCBAMBlock

LEVELS = 5  # four 2x2 poolings below the full-resolution level


def _blocks(in_channels: int, out_channels: int, count: int) -> nn.Sequential:
    """`count` residual CBAM blocks; the first changes the width (`_make_layer` in the release)."""
    return nn.Sequential(ResCBAMBlock(in_channels, out_channels),
                         *(ResCBAMBlock(out_channels, out_channels) for _ in range(count - 1)))


def _upsample(x: torch.Tensor, factor: int) -> torch.Tensor:
    # every upsampling of the release is bilinear with align_corners=True
    return F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=True)


class MSHNet(nn.Module):
    """U-Net (4 poolings, skip concatenation) of residual CBAM blocks with a four-scale logit head.

    Every decoder level d0..d3 (full, 1/2, 1/4, 1/8 resolution) has a 1x1 logit conv `output_<d>`; the four
    maps, upsampled to full size, are fused by the 3x3 conv `final`. Training returns five logit maps at input
    size, [output_0, output_1, output_2, output_3, final] (the side heads upsampled); eval returns `final`'s.

    Args:
        in_channels: image channels (`input_channels` in the release, which uses 3).
        channels: widths of the five levels (`param_channels`).
        num_blocks: blocks of the encoder stages 1..3 and the middle stage (`param_blocks`); decoder stage d
            (d = 1..3) has as many blocks as encoder stage d; the level-0 stages have one block each.

    Defaults are the release (4,065,481 parameters at in_channels=1, 4,065,513 at 3). Input sides must be
    multiples of 16 (`side_multiple`).
    """

    side_multiple = 16

    def __init__(self, in_channels: int = 1, channels: Sequence[int] = (16, 32, 64, 128, 256),
                 num_blocks: Sequence[int] = (2, 2, 2, 2)):
        super().__init__()
        channels, num_blocks = [int(c) for c in channels], [int(n) for n in num_blocks]
        if len(channels) != LEVELS or len(num_blocks) != LEVELS - 1:
            raise ValueError(f"MSHNet needs {LEVELS} channels and {LEVELS - 1} num_blocks, "
                             f"got channels={channels}, num_blocks={num_blocks}")
        if min(channels) < 1 or min(num_blocks) < 1 or in_channels < 1:
            raise ValueError(f"MSHNet needs positive widths and block counts, got in_channels={in_channels}, "
                             f"channels={channels}, num_blocks={num_blocks}")
        c0, c1, c2, c3, c4 = channels
        self.conv_init = nn.Conv2d(in_channels, c0, 1)
        self.encoder_0 = _blocks(c0, c0, 1)
        self.encoder_1 = _blocks(c0, c1, num_blocks[0])
        self.encoder_2 = _blocks(c1, c2, num_blocks[1])
        self.encoder_3 = _blocks(c2, c3, num_blocks[2])
        self.middle_layer = _blocks(c3, c4, num_blocks[3])
        # decoder level d: its encoder skip concatenated with the upsampled level below
        self.decoder_3 = _blocks(c3 + c4, c3, num_blocks[2])
        self.decoder_2 = _blocks(c2 + c3, c2, num_blocks[1])
        self.decoder_1 = _blocks(c1 + c2, c1, num_blocks[0])
        self.decoder_0 = _blocks(c0 + c1, c0, 1)
        for level, width in enumerate(channels[:4]):
            self.add_module(f"output_{level}", nn.Conv2d(width, 1, 1))
        self.final = nn.Conv2d(4, 1, 3, padding=1)

    def logit_layers(self) -> list[nn.Conv2d]:
        """The convolutions whose outputs are logits (IRSTDModule's `output_prior` sets their bias)."""
        return [self.output_0, self.output_1, self.output_2, self.output_3, self.final]

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        height, width = x.shape[-2:]
        if height % self.side_multiple or width % self.side_multiple:
            raise ValueError(f"MSHNet needs input sides that are multiples of {self.side_multiple} "
                             f"(four 2x2 poolings), got {height} x {width}")
        e0 = self.encoder_0(self.conv_init(x))
        e1 = self.encoder_1(F.max_pool2d(e0, 2))
        e2 = self.encoder_2(F.max_pool2d(e1, 2))
        e3 = self.encoder_3(F.max_pool2d(e2, 2))
        bottom = self.middle_layer(F.max_pool2d(e3, 2))

        d3 = self.decoder_3(torch.cat([e3, _upsample(bottom, 2)], dim=1))
        d2 = self.decoder_2(torch.cat([e2, _upsample(d3, 2)], dim=1))
        d1 = self.decoder_1(torch.cat([e1, _upsample(d2, 2)], dim=1))
        d0 = self.decoder_0(torch.cat([e0, _upsample(d1, 2)], dim=1))

        # each level's logits brought to full size: 1/2**level -> 1
        side = [self.output_0(d0), _upsample(self.output_1(d1), 2), _upsample(self.output_2(d2), 4),
                _upsample(self.output_3(d3), 8)]
        fused = self.final(torch.cat(side, dim=1))
        return [*side, fused] if self.training else fused
