"""GGL-Net: Zhao, Yu, Shi, Liu and Zhang, "Gradient-Guided Learning Network for Infrared Small Target Detection",
IEEE GRSL 20, 2023.

Checked against the version in PAL (YuChuang1205/PAL `model/GGL/GGL_no_sigmoid.py`, `GGL_No_Sigmoid`), the
one behind PAL's point-supervised tables; MSDA-Net's copy (YuChuang1205/MSDA-Net `model/GGL_Net/model_GGL.py`)
is the same network with a final sigmoid. Attribute names follow PAL so that its weights load with an identity
key mapping. (The LESPS-based copy in YuChuang1205/Refined-IRSTD-Scheme-with-Single-Point-Supervision is a
different variant: four deep-supervision heads `layer_1`..`layer_4` instead of `layer`.)

The network:

* the gradient magnitude of the image (central differences, zero padding) is computed by a parameter-free
  function and max-pooled down the encoder levels;
* a five-level residual encoder (full resolution to 1/16; squeeze-and-excitation inside the residual blocks)
  where, at every level, a gradient supplementary module (`Res`) encodes the gradient map at that resolution
  and merges it with the image features;
* each level passes a local-contrast block (`lcl`), then a top-down decoder of two-way guidance fusions
  (`sbam`): the upsampled deep map gates the shallow one channel-wise, the shallow map gates the deep one
  spatially, and the two products are added;
* two 1x1 convolutions give the logit map at full resolution (PAL's `_no_sigmoid` version ends there too).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from irstd.models.local_contrast import DownResidual, PlainResidual, SpatialAttention, conv3x3

LEVELS = 5
# four 2x poolings down, four 2x upsamplings back: sides must divide by 2**4 (irstd pads to 32 anyway)
SIDE_MULTIPLE = 2 ** (LEVELS - 1)


def gradient_magnitude(x: torch.Tensor) -> torch.Tensor:
    """sqrt(((x[i, j+1] - x[i, j-1]) / 2)^2 + ((x[i-1, j] - x[i+1, j]) / 2)^2) per channel, zero beyond the border.

    The network's fixed image-gradient operator: it has no parameters, so nothing of it is in the state dict.
    """
    padded = F.pad(x, (1, 1, 1, 1))
    horizontal = (padded[..., 1:-1, 2:] - padded[..., 1:-1, :-2]) * 0.5
    vertical = (padded[..., :-2, 1:-1] - padded[..., 2:, 1:-1]) * 0.5
    return torch.sqrt(horizontal * horizontal + vertical * vertical)


class SqueezeExcitation(nn.Module):
    """Channel reweighting from the global average through a bias-free bottleneck (reduction 4 here)."""

    def __init__(self, channels: int, reduction: int = 4):
        super().__init__()
        self.fc = nn.Sequential(
            nn.Linear(channels, channels // reduction, bias=False),
            nn.ReLU(inplace=True),
            nn.Linear(channels // reduction, channels, bias=False),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = self.fc(x.mean(dim=(2, 3)))
        return x * weights[:, :, None, None]


class SEResidual(nn.Module):
    """conv-BN-ReLU, squeeze-and-excitation, conv-BN, plus the identity, ReLU (PAL: `Resnet3`)."""

    def __init__(self, channels: int):
        super().__init__()
        self.layer1 = nn.Sequential(conv3x3(channels, channels), nn.BatchNorm2d(channels), nn.ReLU(inplace=True))
        self.SEAttention = SqueezeExcitation(channels)
        self.layer2 = nn.Sequential(conv3x3(channels, channels), nn.BatchNorm2d(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.layer2(self.SEAttention(self.layer1(x))) + x)


def _encoder_unit(in_channels: int, out_channels: int, last_activation: bool) -> list[nn.Module]:
    """conv-BN-ReLU, SE, conv-BN(-ReLU): the index layout of PAL's `Res.layer1` / `Res.layer2`."""
    unit = [conv3x3(in_channels, out_channels), nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True),
            SqueezeExcitation(out_channels), conv3x3(out_channels, out_channels), nn.BatchNorm2d(out_channels)]
    return unit + [nn.ReLU(inplace=True)] if last_activation else unit


class GradientSupplement(nn.Module):
    """The gradient supplementary module (PAL: `Res`): encode the gradient map, concatenate it to the image
    features, encode the pair back to their width and add the image features (residual), ReLU."""

    def __init__(self, gradient_channels: int, channels: int):
        super().__init__()
        self.layer1 = nn.Sequential(*_encoder_unit(gradient_channels, channels, last_activation=True))
        self.layer2 = nn.Sequential(*_encoder_unit(2 * channels, channels, last_activation=False))

    def forward(self, features: torch.Tensor, gradient: torch.Tensor) -> torch.Tensor:
        merged = torch.cat([features, self.layer1(gradient)], dim=1)
        return torch.relu(self.layer2(merged) + features)


class GradientEncoder(nn.Module):
    """Five levels of residual blocks, each closed by a gradient supplementary module (PAL: `Stage`)."""

    def __init__(self, in_channels: int, channels: Sequence[int]):
        super().__init__()
        width = channels[0]
        self.layer1 = nn.Sequential(
            conv3x3(in_channels, width), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
            conv3x3(width, width), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
        )
        for level in range(1, LEVELS + 1):
            width = channels[level - 1]
            first = PlainResidual(width) if level == 1 else DownResidual(channels[level - 2], width)
            self.add_module(f"resnet{level}_1", first)
            self.add_module(f"resnet{level}_2", SEResidual(width))
            self.add_module(f"resnet{level}_3", SEResidual(width))
            self.add_module(f"Res{level}", GradientSupplement(in_channels, width))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        gradient = gradient_magnitude(x)
        out = self.layer1(x)
        features: list[torch.Tensor] = []
        for level in range(1, LEVELS + 1):
            if level > 1:
                gradient = F.max_pool2d(gradient, 2)
            for block in (1, 2, 3):
                out = getattr(self, f"resnet{level}_{block}")(out)
            out = getattr(self, f"Res{level}")(out, gradient)
            features.append(out)
        return features


class LocalContrast(nn.Module):
    """1x1 conv, ReLU, 3x3 conv, ReLU (PAL: `LCL`), applied to each encoder level."""

    def __init__(self, channels: int):
        super().__init__()
        self.layer1 = nn.Sequential(
            nn.Conv2d(channels, channels, 1), nn.ReLU(inplace=True),
            conv3x3(channels, channels), nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer1(x)


class ChannelAttention(nn.Module):
    """Sigmoid of a shared bias-free bottleneck (reduction 8) on the global max and average descriptors."""

    def __init__(self, channels: int, reduction: int = 8):
        super().__init__()
        self.se = nn.Sequential(
            nn.Conv2d(channels, channels // reduction, 1, bias=False), nn.ReLU(),
            nn.Conv2d(channels // reduction, channels, 1, bias=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.se(F.adaptive_max_pool2d(x, 1)) + self.se(F.adaptive_avg_pool2d(x, 1)))


class TwoWayFusion(nn.Module):
    """Two-way guidance fusion of a deep map and the next shallower one (PAL: `Sbam`).

    The deep map is upsampled x2 (bilinear, corners aligned) and projected to the shallow width; it gates the
    shallow map channel-wise, the shallow map gates it spatially, and the two gated maps are added.
    """

    def __init__(self, deep_channels: int, shallow_channels: int):
        super().__init__()
        self.hl_layer = nn.Sequential(
            nn.UpsamplingBilinear2d(scale_factor=2),
            nn.Conv2d(deep_channels, shallow_channels, 1), nn.BatchNorm2d(shallow_channels), nn.ReLU(inplace=True),
        )
        self.hl_layer_2 = ChannelAttention(shallow_channels)
        self.ll_layer = SpatialAttention()

    def forward(self, deep: torch.Tensor, shallow: torch.Tensor) -> torch.Tensor:
        deep = self.hl_layer(deep)
        return shallow * self.hl_layer_2(deep) + deep * self.ll_layer(shallow)


class GGLNet(nn.Module):
    """Gradient-guided learning network; logits at the input resolution, no deep supervision.

    Args:
        in_channels: image channels. PAL feeds grey images replicated to 3 channels (one mean and std for all
            three), so its network has `in_channels=3`; here the default is 1, and `collapse_rgb_input` turns a
            3-channel state dict into the exactly equivalent 1-channel one.
        channels: widths of the five encoder levels (full resolution to 1/16).

    Defaults with in_channels=3 are PAL's network (8,988,093 parameters); the default in_channels=1 has
    8,978,877. Input sides must be multiples of 16 (four 2x poolings, mirrored by the decoder); others raise
    ValueError.
    """

    side_multiple = SIDE_MULTIPLE

    def __init__(self, in_channels: int = 1, channels: Sequence[int] = (16, 32, 64, 128, 256)):
        super().__init__()
        channels = [int(c) for c in channels]
        if in_channels < 1:
            raise ValueError(f"GGLNet needs in_channels >= 1, got {in_channels}")
        if len(channels) != LEVELS or min(channels) < 8:
            raise ValueError(f"GGLNet needs {LEVELS} channel widths >= 8 (its attention bottlenecks divide them "
                             f"by 8), got channels={channels}")
        self.stage = GradientEncoder(in_channels, channels)
        for level in range(1, LEVELS + 1):
            self.add_module(f"lcl{level}", LocalContrast(channels[level - 1]))
        for level in range(LEVELS - 1, 0, -1):
            self.add_module(f"sbam{level}", TwoWayFusion(channels[level], channels[level - 1]))
        self.layer = nn.Sequential(
            nn.Conv2d(channels[0], channels[0], 1), nn.ReLU(inplace=True),
            nn.Conv2d(channels[0], 1, 1),
        )
        _reference_init(self)

    def logit_layers(self) -> list[nn.Conv2d]:
        """The convolutions whose outputs are logits (IRSTDModule's `output_prior` sets their bias)."""
        return [self.layer[-1]]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        if height % SIDE_MULTIPLE or width % SIDE_MULTIPLE:
            raise ValueError(f"GGLNet needs input sides that are multiples of {SIDE_MULTIPLE}, "
                             f"got {height} x {width}")
        levels = [getattr(self, f"lcl{level}")(features) for level, features in enumerate(self.stage(x), start=1)]
        out = levels[-1]
        for level in range(LEVELS - 1, 0, -1):  # sbam4 fuses levels 5 and 4, ..., sbam1 the result and level 1
            out = getattr(self, f"sbam{level}")(out, levels[level - 1])
        # PAL's `_no_sigmoid` network returns these logits as well; MSDA-Net's copy adds a sigmoid.
        return self.layer(out)


def _reference_init(net: GGLNet) -> None:
    """PAL's `weights_init`: Kaiming-normal (fan_out, ReLU) convolutions with zero bias, batch norm at 1 and 0,
    applied to every convolution except those of the fusions' channel and spatial attention (which keep
    PyTorch's default, as in PAL)."""
    skipped = {id(conv) for module in net.modules() if isinstance(module, (ChannelAttention, SpatialAttention))
               for conv in module.modules()}
    for module in net.modules():
        if id(module) in skipped:
            continue
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


def collapse_rgb_input(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A PAL state dict (3 identical input channels) as the equivalent single-channel one.

    PAL replicates a grey image into 3 channels normalised with one mean and std, and the gradient map inherits
    the replication, so the convolutions reading the image or its gradient see the same map three times: summing
    their weights over the input channels gives exactly the same outputs from the single grey channel.
    """
    readers = {"stage.layer1.0.weight"} | {f"stage.Res{level}.layer1.0.weight" for level in range(1, LEVELS + 1)}
    collapsed = dict(state)
    for key in readers:
        if key not in state:
            raise ValueError(f"not a GGL-Net state dict: no {key}")
        collapsed[key] = state[key].sum(dim=1, keepdim=True)
    return collapsed
