"""Scale and location sensitive (SLS) loss of MSHNet (Liu et al., CVPR 2024), on logits.

Checked against the authors' `SLSIoULoss` (Lliu666/MSHNet, `model/loss.py`, commit 7c5194b); see
scripts/reference/mshnet.py. With p = sigmoid(logits) and t the (soft) label, per image:

    IoU      = sum(p t) / (sum(p) + sum(t) - sum(p t))                      (no smoothing term)
    alpha    = (min(P, T) + D) / (max(P, T) + D),  P = sum(p), T = sum(t), D = ((P - T) / 2)**2
    location = 1 - min(|c_p|, |c_t|) / (max(|c_p|, |c_t|) + 1e-8)
               + (4 / pi**2) * (atan(c_p,y / (c_p,x + 1e-8)) - atan(c_t,y / (c_t,x + 1e-8)))**2

and the loss is 1 - mean_batch(alpha IoU) + mean_batch(location). The "centres" c are the release's: the mean
over all pixels of x/W times the map (and y/H times the map), i.e. the first moments divided by H W, not
mass-normalised centroids; |c| = sqrt(c_x**2 + c_y**2 + 1e-8).

What the release does per head (main.py): for epochs 0..warm_epoch (warm_epoch=5, so six epochs) the network
runs without its multi-scale head and the loss is the plain per-image soft IoU of the single full-resolution
map, 1 - mean_batch(IoU) (here `scale=False, location=False`); afterwards the fused map and the four side
heads (at 1, 1/2, 1/4, 1/8 resolution, each against the label max-pooled 2x2 once per halving) each get the
full SLS loss, averaged over the five heads with equal weights. This class sums over heads instead, the
convention of every loss in irstd.losses (a constant factor); it has no warm-up of its own. A head smaller
than the label by an integer factor f is compared with the label max-pooled by f, as the release does;
irstd's MSHNet returns its side heads upsampled to full size, so there every head meets the full label.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

# the release's additive constants in the location term
_EPS = 1e-8


def _ratio(numerator: torch.Tensor, denominator: torch.Tensor) -> torch.Tensor:
    # the release divides without smoothing; the denominators vanish only when the map and the label are both
    # empty (a sigmoid underflowing to 0 everywhere), where it gives NaN: read 0/0 as 0 instead
    return numerator / denominator.clamp_min(torch.finfo(denominator.dtype).tiny)


def location_loss(prob: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The release's `LLoss`: mean over the batch of (1 - length ratio + angle term) of the two "centres"."""
    height, width = prob.shape[-2:]
    x = torch.arange(width, dtype=prob.dtype, device=prob.device) / width
    y = (torch.arange(height, dtype=prob.dtype, device=prob.device) / height)[:, None]
    dims = tuple(range(1, prob.dim()))

    def centre(m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return (m * x).mean(dims), (m * y).mean(dims)

    (px, py), (tx, ty) = centre(prob), centre(target)
    angle = (4 / math.pi**2) * (torch.atan(py / (px + _EPS)) - torch.atan(ty / (tx + _EPS))).square()
    pred_length = torch.sqrt(px.square() + py.square() + _EPS)
    target_length = torch.sqrt(tx.square() + ty.square() + _EPS)
    length = torch.minimum(pred_length, target_length) / (torch.maximum(pred_length, target_length) + _EPS)
    return (1 - length + angle).mean()


def sls_loss(logits: torch.Tensor, target: torch.Tensor, scale: bool = True, location: bool = True) -> torch.Tensor:
    """SLS loss of one logit map (B x C x H x W) against a label of the same size (see the module docstring).

    `scale=False` drops the factor alpha, `location=False` the location term; with both off it is the
    release's warm-up loss, 1 - mean_batch(IoU).
    """
    prob = torch.sigmoid(logits)
    dims = tuple(range(1, prob.dim()))
    intersection = (prob * target).sum(dims)
    pred_sum, target_sum = prob.sum(dims), target.sum(dims)
    iou = _ratio(intersection, pred_sum + target_sum - intersection)
    if scale:
        spread = ((pred_sum - target_sum) / 2).square()
        iou = iou * _ratio(torch.minimum(pred_sum, target_sum) + spread,
                           torch.maximum(pred_sum, target_sum) + spread)
    loss = 1 - iou.mean()
    if location:
        loss = loss + location_loss(prob, target)
    return loss


def fit_label(target: torch.Tensor, head: torch.Tensor) -> torch.Tensor:
    """The label at the head's size: itself, or max-pooled by the integer factor that shrinks it to the head."""
    size, head_size = tuple(target.shape[-2:]), tuple(head.shape[-2:])
    if head_size == size:
        return target
    factor = size[0] // max(head_size[0], 1)
    if factor < 2 or (size[0] // factor, size[1] // factor) != head_size:
        raise ValueError(f"SLSLoss: a {head_size[0]} x {head_size[1]} head does not fit a {size[0]} x {size[1]} "
                         "label (equal size, or smaller by one integer factor on both sides)")
    return F.max_pool2d(target, factor)


class SLSLoss(nn.Module):
    """MSHNet's scale and location sensitive loss, summed over deep-supervision heads.

    Args:
        scale: weight each image's IoU by the scale factor alpha (off in the release's warm-up).
        location: add the location term (the release's `with_shape`; off in its warm-up).
    """

    def __init__(self, scale: bool = True, location: bool = True):
        super().__init__()
        self.scale = bool(scale)
        self.location = bool(location)

    def forward(self, logits: torch.Tensor | Sequence[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        heads = logits if isinstance(logits, (list, tuple)) else [logits]
        return sum(sls_loss(head, fit_label(target, head), self.scale, self.location) for head in heads)
