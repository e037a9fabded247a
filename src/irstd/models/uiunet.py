"""UIU-Net: Wu, Hong and Chanussot, "UIU-Net: U-Net in U-Net for Infrared Small Object Detection",
IEEE Transactions on Image Processing 32, 2023.

Checked against the BasicIRSTD toolbox (XinyiYing/BasicIRSTD, `model/UIUNet/model_UIUNet.py` and
`model/UIUNet/fusion.py`, commit 95650c3), whose trained UIU-Net weights are the ones users load: one input
channel, seven sigmoid maps in training and the fused one in test. The authors' repository
(danfenghong/IEEE_TIP_UIU-Net, `model/uiunet.py`, commit 625023a) has the same layers and names but
defaults to three input channels (`in_channels=3` here builds it) and always returns all seven maps.

Parameter names follow the release, so a BasicIRSTD state_dict loads by key identity once its `model.`
prefix is stripped. Unlike the release the network returns logits: the sigmoid is applied by `IRSTDModule`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

# Encoder stages 1..4 are residual U-blocks of heights 7, 6, 5, 4 (each pools down to the same 1/32 of the
# network input); stages 5 and 6 (and the decoder's stage 5) are the dilated height-4 block without pooling.
POOLED_HEIGHTS = (7, 6, 5, 4)
DILATED_HEIGHT = 4
STAGES = 6
# the interactive fusion's channel bottleneck (`r` in the release)
FUSION_REDUCTION = 4


def _resize_to(x: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Bilinear resampling (half-pixel centres) onto `reference`'s grid, whatever the rounding of the pools."""
    return F.interpolate(x, size=reference.shape[-2:], mode="bilinear", align_corners=False)


def _pool(x: torch.Tensor) -> torch.Tensor:
    # ceil mode: an odd side keeps its last row/column, so any input size goes through
    return F.max_pool2d(x, 2, stride=2, ceil_mode=True)


class REBNCONV(nn.Module):
    """3x3 convolution (optionally dilated, same size out) -> batch norm -> ReLU."""

    def __init__(self, in_channels: int, out_channels: int, dilation: int = 1):
        super().__init__()
        self.conv_s1 = nn.Conv2d(in_channels, out_channels, 3, padding=dilation, dilation=dilation)
        self.bn_s1 = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.bn_s1(self.conv_s1(x)))


class RSU(nn.Module):
    """Residual U-block (the "inner U-Net"): an input convolution to `out_channels`, a small U-Net of
    `height` levels at `mid_channels` on top of it, and the sum of both.

    Encoder layers are `rebnconv1..rebnconv{height}`, decoder layers `rebnconv{height-1}d..rebnconv1d`.
    Pooled blocks halve the resolution between encoder levels 1..height-1 and dilate only the bottom layer
    (x2); the dilated block (RSU-4F) keeps the resolution and dilates level i by 2**(i-1) instead.
    """

    def __init__(self, height: int, in_channels: int, mid_channels: int, out_channels: int,
                 dilated: bool = False):
        super().__init__()
        self.height, self.dilated = height, dilated

        def dilation(level: int) -> int:
            if dilated:
                return 2 ** (level - 1)
            return 2 if level == height else 1

        self.rebnconvin = REBNCONV(in_channels, out_channels)
        for level in range(1, height + 1):
            source = out_channels if level == 1 else mid_channels
            self.add_module(f"rebnconv{level}", REBNCONV(source, mid_channels, dilation(level)))
        for level in range(height - 1, 0, -1):
            target = out_channels if level == 1 else mid_channels
            self.add_module(f"rebnconv{level}d", REBNCONV(2 * mid_channels, target, dilation(level)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        entry = self.rebnconvin(x)
        skips = [self.rebnconv1(entry)]
        for level in range(2, self.height):
            below = skips[-1] if self.dilated else _pool(skips[-1])
            skips.append(getattr(self, f"rebnconv{level}")(below))
        # the bottom layer sees the deepest encoder level at its own resolution (dilated, never pooled)
        out = getattr(self, f"rebnconv{self.height}")(skips[-1])
        for level in range(self.height - 1, 0, -1):
            skip = skips[level - 1]
            out = getattr(self, f"rebnconv{level}d")(torch.cat([out, skip], dim=1))
            if level > 1 and not self.dilated:
                out = _resize_to(out, skips[level - 2])
        return out + entry


class SpatialAttention(nn.Module):
    """A 3x3 convolution over the per-pixel channel mean and max (the sigmoid follows in the Sequential)."""

    def __init__(self, kernel_size: int = 3):
        super().__init__()
        self.conv1 = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv1(torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1))


class InteractiveFusion(nn.Module):
    """The interactive cross-attention fusion (AsymBiChaFuseReduce in the release) of a decoder feature
    (`high`, coarse, upsampled) and the encoder skip (`low`) of the same level.

    The high feature is projected to the skip's width; its global context gates the skip's channels
    (`topdown`), and the gated skip gives a one-channel spatial map that gates the high feature
    (`bottomup`). Both gated features (scaled by 2) pass the same `post` convolution (called twice, as in
    the release: in training its batch norm updates its running statistics twice per forward).
    """

    def __init__(self, high_channels: int, low_channels: int, reduction: int = FUSION_REDUCTION):
        super().__init__()
        channels, bottleneck = low_channels, low_channels // reduction
        self.feature_high = nn.Sequential(nn.Conv2d(high_channels, channels, 1), nn.BatchNorm2d(channels),
                                          nn.ReLU(inplace=True))
        self.topdown = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(channels, bottleneck, 1), nn.BatchNorm2d(bottleneck), nn.ReLU(inplace=True),
            nn.Conv2d(bottleneck, channels, 1), nn.BatchNorm2d(channels), nn.Sigmoid(),
        )
        self.bottomup = nn.Sequential(
            nn.Conv2d(channels, bottleneck, 1), nn.BatchNorm2d(bottleneck), nn.ReLU(inplace=True),
            SpatialAttention(3), nn.Sigmoid(),
        )
        self.post = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.BatchNorm2d(channels),
                                  nn.ReLU(inplace=True))

    def forward(self, high: torch.Tensor, low: torch.Tensor) -> torch.Tensor:
        high = self.feature_high(high)
        channel_gate = self.topdown(high)
        spatial_gate = self.bottomup(low * channel_gate)
        return torch.cat([self.post(2 * low * channel_gate), self.post(2 * high * spatial_gate)], dim=1)


class UIUNet(nn.Module):
    """U²-Net-style encoder-decoder of residual U-blocks with interactive fusion on four skips.

    Encoder `stage1..stage6` (resolution / 2**(i-1)), decoder `stage5d..stage1d`; decoder stage i fuses the
    upsampled output of the level below with encoder stage i (`fuse{i}`, i = 2..5; level 1 concatenates
    plainly). Side heads `side1..side6` (3x3, one channel) read decoder stages 1..5 and encoder stage 6, are
    upsampled to the input size, and `outconv` (1x1) fuses all six. Any input size works (ceil-mode pools,
    upsampling to the skip's size); multiples of 32 keep every level exact.

    Args:
        in_channels: image channels (`in_ch`; 1 in BasicIRSTD, 3 in the authors' repository).
        channels: output widths of encoder stages 1..6; decoder stage i outputs the width of encoder stage
            i-1 (stage 1: of stage 1), which is what the next fusion and side head expect.
        mid_channels: inner (U-Net) widths of encoder stages 1..6.
        decoder_mid_channels: inner widths of decoder stages 1..5.
        deep_supervision: with it, training returns the logits of the six side heads (side1 first) and of
            the fused head (LAST); eval returns the fused head's. Without it, training returns the fused
            head's alone (the side heads still feed it).
    """

    side_multiple = 1  # ceil-mode pooling and upsampling to the skip's size take any side

    def __init__(self, in_channels: int = 1, channels: Sequence[int] = (64, 128, 256, 512, 512, 512),
                 mid_channels: Sequence[int] = (32, 32, 64, 128, 256, 256),
                 decoder_mid_channels: Sequence[int] = (16, 32, 64, 128, 256), deep_supervision: bool = True):
        super().__init__()
        channels = [int(c) for c in channels]
        mid_channels = [int(c) for c in mid_channels]
        decoder_mid_channels = [int(c) for c in decoder_mid_channels]
        if (len(channels) != STAGES or len(mid_channels) != STAGES or len(decoder_mid_channels) != STAGES - 1
                or min(mid_channels + decoder_mid_channels) < 1 or int(in_channels) < 1):
            raise ValueError(f"UIUNet needs {STAGES} channels, {STAGES} mid_channels and {STAGES - 1} "
                             f"decoder_mid_channels, all >= 1, and in_channels >= 1; got channels={channels}, "
                             f"mid_channels={mid_channels}, decoder_mid_channels={decoder_mid_channels}, "
                             f"in_channels={in_channels}")
        if min(channels) < FUSION_REDUCTION:
            raise ValueError(f"UIUNet needs channels >= {FUSION_REDUCTION} (the fusions divide them by "
                             f"{FUSION_REDUCTION}), got channels={channels}")
        self.deep_supervision = deep_supervision

        def block(stage: int, source: int, mid: int, out: int) -> RSU:
            if stage <= len(POOLED_HEIGHTS):
                return RSU(POOLED_HEIGHTS[stage - 1], source, mid, out)
            return RSU(DILATED_HEIGHT, source, mid, out, dilated=True)

        for stage in range(1, STAGES + 1):
            source = in_channels if stage == 1 else channels[stage - 2]
            self.add_module(f"stage{stage}", block(stage, source, mid_channels[stage - 1], channels[stage - 1]))

        # decoder stage i: output width, and the width of what arrives from below (fused with skip i)
        decoder_out = {stage: channels[max(stage - 2, 0)] for stage in range(1, STAGES)}
        for stage in range(STAGES - 1, 0, -1):
            skip = channels[stage - 1]
            self.add_module(f"stage{stage}d", block(stage, 2 * skip, decoder_mid_channels[stage - 1],
                                                    decoder_out[stage]))

        for stage in range(1, STAGES):
            self.add_module(f"side{stage}", nn.Conv2d(decoder_out[stage], 1, 3, padding=1))
        self.side6 = nn.Conv2d(channels[STAGES - 1], 1, 3, padding=1)
        self.outconv = nn.Conv2d(STAGES, 1, 1)

        for stage in range(STAGES - 1, 1, -1):
            from_below = channels[STAGES - 1] if stage == STAGES - 1 else decoder_out[stage + 1]
            self.add_module(f"fuse{stage}", InteractiveFusion(from_below, channels[stage - 1]))

    def logit_layers(self) -> list[nn.Conv2d]:
        """The convolutions whose outputs are logits: the six side heads and the fused head."""
        return [getattr(self, f"side{stage}") for stage in range(1, STAGES + 1)] + [self.outconv]

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        if self.training and x.shape[0] < 2:
            raise ValueError(f"UIUNet needs a batch of at least 2 in training mode (its fusions batch-normalise "
                             f"globally pooled features), got input of shape {tuple(x.shape)}")
        encoded = [self.stage1(x)]
        for stage in range(2, STAGES + 1):
            encoded.append(getattr(self, f"stage{stage}")(_pool(encoded[-1])))

        decoded: dict[int, torch.Tensor] = {}
        below = encoded[STAGES - 1]
        for stage in range(STAGES - 1, 0, -1):
            skip = encoded[stage - 1]
            below = _resize_to(below, skip)
            merged = getattr(self, f"fuse{stage}")(below, skip) if stage > 1 else torch.cat([below, skip], dim=1)
            below = decoded[stage] = getattr(self, f"stage{stage}d")(merged)

        features = [decoded[stage] for stage in range(1, STAGES)] + [encoded[STAGES - 1]]
        sides = [getattr(self, f"side{stage}")(feature) for stage, feature in enumerate(features, start=1)]
        sides = [sides[0]] + [_resize_to(side, sides[0]) for side in sides[1:]]
        fused = self.outconv(torch.cat(sides, dim=1))

        if self.training and self.deep_supervision:
            return [*sides, fused]
        return fused
