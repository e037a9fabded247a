"""SCTransNet: Yuan et al., "SCTransNet: Spatial-Channel Cross Transformer Network for Infrared Small Target
Detection", IEEE TGRS 2024.

A residual U-Net whose four skip connections pass through a spatial-channel cross transformer (SCTB blocks:
single-head channel cross-attention whose queries and keys are spatially embedded by depth-wise convolutions,
then a two-branch convolutional feed-forward network with ECA), and whose decoder gates each skip with channel
cross attention (CCA). Checked against the authors' release, xdFai/SCTransNet `model/SCTransNet.py`
(commit e027628, configuration `get_CTranS_config`); attribute names follow it so that its checkpoints load by
key identity once the `model.` wrapper prefix is stripped.

Input size: the network is fully convolutional over space. Attention runs between channels (its maps are
C x KV, summed over the pixels), so the token grid may have any size; `position_embeddings` (one per skip level,
shaped by `img_size`) exist in the release but its forward never adds them, so `img_size` only sets the shape of
these unused parameters (keep 256 to load the released weights, whatever the input size). The constraint is on
the sides: four 2x2 poolings, and patch embeddings of stride p_i at level i (1/2**i resolution) that must meet
on one token grid (p_i * 2**i = P for every level, 16 by default) and be upsampled back exactly, so sides must be
multiples of lcm(16, P) = 16 by default (`side_multiple`).

Differences from the release, none of which changes a weight: logits instead of its final sigmoids, and the
six deep-supervision maps (training) or the single map (eval) follow `self.training` instead of its `mode`
argument. Like the release in train mode, eval returns `outc`'s map, not the fused `outconv` one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

LEVELS = 4  # skip levels crossing the transformer (full, 1/2, 1/4, 1/8 resolution)


class ResBlock(nn.Module):
    """Residual block (`Res_block`): two biased 3x3 convs with BN, leaky ReLU, 1x1 projection shortcut."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut = (nn.Sequential(nn.Conv2d(in_channels, out_channels, 1), nn.BatchNorm2d(out_channels))
                         if in_channels != out_channels else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x if self.shortcut is None else self.shortcut(x)
        out = F.leaky_relu(self.bn1(self.conv1(x)))
        return F.leaky_relu(self.bn2(self.conv2(out)) + residual)


class ChannelLayerNorm(nn.Module):
    """Layer norm over the channels of every pixel of a B x C x H x W map (the release's `LayerNorm3d`)."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.LayerNorm(channels, eps=1e-5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class PatchEmbedding(nn.Module):
    """Non-overlapping p x p patches of one level, each to a token of the same width (`Channel_Embeddings`).

    `position_embeddings` is kept for the release's checkpoints only: its forward never uses it.
    """

    def __init__(self, channels: int, patch: int, img_size: int):
        super().__init__()
        self.patch_embeddings = nn.Conv2d(channels, channels, patch, stride=patch)
        self.position_embeddings = nn.Parameter(torch.zeros(1, (img_size // patch) ** 2, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.patch_embeddings(x)


class Reconstruct(nn.Module):
    """Tokens back to a level's resolution: bilinear x patch, 1x1 conv, BN, ReLU."""

    def __init__(self, channels: int, patch: int):
        super().__init__()
        self.patch = patch
        self.conv = nn.Conv2d(channels, channels, 1)
        self.norm = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=self.patch, mode="bilinear", align_corners=False)
        return torch.relu(self.norm(self.conv(x)))


class ChannelCrossAttention(nn.Module):
    """Spatially embedded single-head channel cross-attention (SSCA; the release's `Attention_org`).

    Level i's C_i query channels attend to the KV = sum(C_i) channels of all levels concatenated: queries and keys
    (1x1 then depth-wise 3x3 convs; the query conv has groups C_i / 2) are flattened over the pixels and
    L2-normalised there, the C_i x KV score map is scaled by 1/sqrt(KV), instance-normalised and soft-maxed over
    KV, and applied to the values; a 1x1 conv projects each level's output.
    """

    def __init__(self, channels: Sequence[int]):
        super().__init__()
        self.kv_size = sum(channels)
        for i, width in enumerate(channels, start=1):
            self.add_module(f"mhead{i}", nn.Conv2d(width, width, 1, bias=False))
        self.mheadk = nn.Conv2d(self.kv_size, self.kv_size, 1, bias=False)
        self.mheadv = nn.Conv2d(self.kv_size, self.kv_size, 1, bias=False)
        for i, width in enumerate(channels, start=1):
            self.add_module(f"q{i}", nn.Conv2d(width, width, 3, padding=1, groups=width // 2, bias=False))
        self.k = nn.Conv2d(self.kv_size, self.kv_size, 3, padding=1, groups=self.kv_size, bias=False)
        self.v = nn.Conv2d(self.kv_size, self.kv_size, 3, padding=1, groups=self.kv_size, bias=False)
        for i, width in enumerate(channels, start=1):
            self.add_module(f"project_out{i}", nn.Conv2d(width, width, 1, bias=False))
        # Sixteen scalars the release declares and never uses ("useless" in its source); kept for its checkpoints.
        for i in range(1, LEVELS + 1):
            for j in range(1, LEVELS + 1):
                self.register_parameter(f"q{i}_attn{j}", nn.Parameter(torch.tensor([0.2])))

    def forward(self, levels: list[torch.Tensor], everything: torch.Tensor) -> list[torch.Tensor]:
        batch, _, height, width = everything.shape
        keys = F.normalize(self.k(self.mheadk(everything)).flatten(2), dim=-1)
        values = self.v(self.mheadv(everything)).flatten(2)
        outputs = []
        for i, tokens in enumerate(levels, start=1):
            queries = getattr(self, f"q{i}")(getattr(self, f"mhead{i}")(tokens)).flatten(2)
            scores = F.normalize(queries, dim=-1) @ keys.transpose(1, 2) / math.sqrt(self.kv_size)
            # the release's InstanceNorm2d(1) on the B x 1 x C_i x KV map: standardise each sample's whole map
            scores = F.instance_norm(scores.unsqueeze(1)).squeeze(1)
            mixed = (scores.softmax(dim=-1) @ values).view(batch, -1, height, width)
            outputs.append(getattr(self, f"project_out{i}")(mixed))
        return outputs


class EfficientChannelAttention(nn.Module):
    """ECA: a 1-D convolution across the pooled channel descriptor gives sigmoid channel weights."""

    def __init__(self, kernel_size: int = 3):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv1d(1, 1, kernel_size, padding=kernel_size // 2, bias=False), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        descriptor = F.adaptive_avg_pool2d(x, 1).flatten(1).unsqueeze(1)  # B x 1 x C
        return x * self.conv(descriptor).view(x.shape[0], -1, 1, 1)


class ComplementaryFeedForward(nn.Module):
    """CFN: 1x1 expansion split into a depth-wise 3x3 and a depth-wise 5x5 branch, 1x1 projection, ECA."""

    def __init__(self, channels: int, expansion: float):
        super().__init__()
        hidden = int(channels * expansion)
        self.project_in = nn.Conv2d(channels, 2 * hidden, 1, bias=False)
        self.dwconv3x3 = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden, bias=False)
        self.dwconv5x5 = nn.Conv2d(hidden, hidden, 5, padding=2, groups=hidden, bias=False)
        self.project_out = nn.Conv2d(2 * hidden, channels, 1, bias=False)
        self.eca = EfficientChannelAttention()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        small, large = self.project_in(x).chunk(2, dim=1)
        x = torch.cat([torch.relu(self.dwconv3x3(small)), torch.relu(self.dwconv5x5(large))], dim=1)
        return self.eca(self.project_out(x))


class CrossTransformerBlock(nn.Module):
    """SCTB (`Block_ViT`): pre-norm channel cross-attention and pre-norm CFN, each with a residual, per level."""

    def __init__(self, channels: Sequence[int], expansion: float):
        super().__init__()
        for i, width in enumerate(channels, start=1):
            self.add_module(f"attn_norm{i}", ChannelLayerNorm(width))
        self.attn_norm = ChannelLayerNorm(sum(channels))
        self.channel_attn = ChannelCrossAttention(channels)
        for i, width in enumerate(channels, start=1):
            self.add_module(f"ffn_norm{i}", ChannelLayerNorm(width))
        for i, width in enumerate(channels, start=1):
            self.add_module(f"ffn{i}", ComplementaryFeedForward(width, expansion))

    def forward(self, levels: list[torch.Tensor]) -> list[torch.Tensor]:
        everything = self.attn_norm(torch.cat(levels, dim=1))
        normed = [getattr(self, f"attn_norm{i}")(x) for i, x in enumerate(levels, start=1)]
        attended = [x + a for x, a in zip(levels, self.channel_attn(normed, everything), strict=True)]
        return [x + getattr(self, f"ffn{i}")(getattr(self, f"ffn_norm{i}")(x))
                for i, x in enumerate(attended, start=1)]


class CrossTransformerEncoder(nn.Module):
    """`num_layers` SCTBs, then a layer norm per level."""

    def __init__(self, channels: Sequence[int], num_layers: int, expansion: float):
        super().__init__()
        self.layer = nn.ModuleList(CrossTransformerBlock(channels, expansion) for _ in range(num_layers))
        for i, width in enumerate(channels, start=1):
            self.add_module(f"encoder_norm{i}", ChannelLayerNorm(width))

    def forward(self, levels: list[torch.Tensor]) -> list[torch.Tensor]:
        for block in self.layer:
            levels = block(levels)
        return [getattr(self, f"encoder_norm{i}")(x) for i, x in enumerate(levels, start=1)]


class ChannelTransformer(nn.Module):
    """The skip-connection transformer (`mtc`): embed every level onto one token grid, encode, reconstruct, add."""

    def __init__(self, channels: Sequence[int], patch_sizes: Sequence[int], img_size: int, num_layers: int,
                 expansion: float):
        super().__init__()
        for i, (width, patch) in enumerate(zip(channels, patch_sizes, strict=True), start=1):
            self.add_module(f"embeddings_{i}", PatchEmbedding(width, patch, img_size // 2 ** (i - 1)))
        self.encoder = CrossTransformerEncoder(channels, num_layers, expansion)
        for i, (width, patch) in enumerate(zip(channels, patch_sizes, strict=True), start=1):
            self.add_module(f"reconstruct_{i}", Reconstruct(width, patch))

    def forward(self, levels: list[torch.Tensor]) -> list[torch.Tensor]:
        tokens = [getattr(self, f"embeddings_{i}")(x) for i, x in enumerate(levels, start=1)]
        encoded = self.encoder(tokens)
        return [x + getattr(self, f"reconstruct_{i}")(e)
                for i, (x, e) in enumerate(zip(levels, encoded, strict=True), start=1)]


class ChannelCrossGate(nn.Module):
    """CCA: the skip's channels gated by a sigmoid of the mean of two linear maps of both global averages."""

    def __init__(self, gate_channels: int, skip_channels: int):
        super().__init__()
        self.mlp_x = nn.Sequential(nn.Flatten(), nn.Linear(skip_channels, skip_channels))
        self.mlp_g = nn.Sequential(nn.Flatten(), nn.Linear(gate_channels, skip_channels))

    def forward(self, gate: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        mixed = (self.mlp_x(F.adaptive_avg_pool2d(skip, 1)) + self.mlp_g(F.adaptive_avg_pool2d(gate, 1))) / 2
        return torch.relu(skip * torch.sigmoid(mixed)[:, :, None, None])


class ConvBNReLU(nn.Module):
    """3x3 conv (biased), BN, ReLU (`CBN`)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.norm(self.conv(x)))


class UpBlock(nn.Module):
    """Decoder step (`UpBlock_attention`): nearest x2 upsampling, CCA-gated skip, concatenation, two CBNs."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.coatt = ChannelCrossGate(in_channels // 2, in_channels // 2)
        self.nConvs = nn.Sequential(ConvBNReLU(in_channels, out_channels), ConvBNReLU(out_channels, out_channels))

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        up = F.interpolate(x, scale_factor=2, mode="nearest")
        return self.nConvs(torch.cat([self.coatt(up, skip), up], dim=1))


class SCTransNet(nn.Module):
    """Residual U-Net with a spatial-channel cross transformer on its skips; logits at the input resolution.

    Levels have widths C, 2C, 4C, 8C and a bottom 8C (C = `base_channels`). With deep supervision, training
    returns six logit maps at input size: the 1x1 heads `gt_conv5..2` of the bottom and of decoder outputs 4..2
    (bilinearly upsampled), their fusion with the final map (`outconv`), and the final map (`outc`), last; eval
    returns `outc`'s map.

    Args:
        in_channels: image channels (`n_channels`).
        base_channels: C (`config.base_channel`); even, since the query convs have C_i / 2 groups.
        num_layers: SCTBs in the transformer (`config.transformer.num_layers`).
        patch_sizes: patch side of the four skip levels (`config.patch_sizes`); p_i * 2**i must be equal.
        img_size: only sizes the unused `position_embeddings` (see the module docstring); 256 for the release.
        ffn_expansion: hidden width factor of the feed-forward networks (2.66 in the release).
        deep_supervision: `deepsuper`; without it there are no `gt_conv*`/`outconv` heads.

    Defaults are the release (11,325,939 parameters; its forward leaves 122,944 of them unused: 122,880 in the
    position embeddings and 16 scalars in each of the 4 SCTBs). Input sides must be multiples of
    `side_multiple` (16 by default).
    """

    side_multiple = 16
    # position_embeddings and q*_attn* never get a gradient (released parameters the forward does not use)
    has_unused_parameters = True

    def __init__(self, in_channels: int = 1, base_channels: int = 32, num_layers: int = 4,
                 patch_sizes: Sequence[int] = (16, 8, 4, 2), img_size: int = 256, ffn_expansion: float = 2.66,
                 deep_supervision: bool = True):
        super().__init__()
        patch_sizes = [int(p) for p in patch_sizes]
        if len(patch_sizes) != LEVELS or min(patch_sizes) < 1:
            raise ValueError(f"SCTransNet needs {LEVELS} positive patch sizes, got {patch_sizes}")
        grid = {p * 2**i for i, p in enumerate(patch_sizes)}
        if len(grid) != 1:
            raise ValueError(f"SCTransNet needs patch_sizes[i] * 2**i equal on all levels (one token grid), "
                             f"got patch_sizes={patch_sizes}")
        if base_channels < 2 or base_channels % 2:
            raise ValueError(f"SCTransNet needs an even base_channels >= 2, got {base_channels}")
        if num_layers < 1 or in_channels < 1:
            raise ValueError(f"SCTransNet needs num_layers >= 1 and in_channels >= 1, got num_layers={num_layers}, "
                             f"in_channels={in_channels}")
        token_patch = grid.pop()
        if img_size < token_patch:
            raise ValueError(f"SCTransNet needs img_size >= {token_patch} (the token patch), got {img_size}")
        self.side_multiple = math.lcm(16, token_patch)
        self.deep_supervision = deep_supervision
        c = base_channels
        self.inc = nn.Sequential(ResBlock(in_channels, c))
        self.down_encoder1 = nn.Sequential(ResBlock(c, 2 * c))
        self.down_encoder2 = nn.Sequential(ResBlock(2 * c, 4 * c))
        self.down_encoder3 = nn.Sequential(ResBlock(4 * c, 8 * c))
        self.down_encoder4 = nn.Sequential(ResBlock(8 * c, 8 * c))
        self.mtc = ChannelTransformer([c, 2 * c, 4 * c, 8 * c], patch_sizes, img_size, num_layers, ffn_expansion)
        self.up_decoder4 = UpBlock(16 * c, 4 * c)
        self.up_decoder3 = UpBlock(8 * c, 2 * c)
        self.up_decoder2 = UpBlock(4 * c, c)
        self.up_decoder1 = UpBlock(2 * c, c)
        self.outc = nn.Conv2d(c, 1, 1)
        if deep_supervision:
            self.gt_conv5 = nn.Sequential(nn.Conv2d(8 * c, 1, 1))
            self.gt_conv4 = nn.Sequential(nn.Conv2d(4 * c, 1, 1))
            self.gt_conv3 = nn.Sequential(nn.Conv2d(2 * c, 1, 1))
            self.gt_conv2 = nn.Sequential(nn.Conv2d(c, 1, 1))
            self.outconv = nn.Conv2d(5, 1, 1)

    def logit_layers(self) -> list[nn.Conv2d]:
        """The convolutions whose outputs are logits (IRSTDModule's `output_prior` sets their bias)."""
        if not self.deep_supervision:
            return [self.outc]
        return [self.gt_conv5[0], self.gt_conv4[0], self.gt_conv3[0], self.gt_conv2[0], self.outconv, self.outc]

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        height, width = x.shape[-2:]
        if height % self.side_multiple or width % self.side_multiple:
            raise ValueError(f"SCTransNet needs input sides that are multiples of {self.side_multiple} "
                             f"(four poolings and one token grid), got {height} x {width}")
        x1 = self.inc(x)
        x2 = self.down_encoder1(F.max_pool2d(x1, 2))
        x3 = self.down_encoder2(F.max_pool2d(x2, 2))
        x4 = self.down_encoder3(F.max_pool2d(x3, 2))
        d5 = self.down_encoder4(F.max_pool2d(x4, 2))
        skips = self.mtc([x1, x2, x3, x4])
        # the release adds the encoder features once more on top of the transformer's own residual
        x1, x2, x3, x4 = (s + f for s, f in zip(skips, (x1, x2, x3, x4), strict=True))
        d4 = self.up_decoder4(d5, x4)
        d3 = self.up_decoder3(d4, x3)
        d2 = self.up_decoder2(d3, x2)
        out = self.outc(self.up_decoder1(d2, x1))
        if not (self.deep_supervision and self.training):
            return out
        side = [F.interpolate(getattr(self, f"gt_conv{k}")(feature), scale_factor=2 ** (k - 1), mode="bilinear",
                              align_corners=True)
                for k, feature in ((5, d5), (4, d4), (3, d3), (2, d2))]
        fused = self.outconv(torch.cat([*side[::-1], out], dim=1))
        return [*side, fused, out]
