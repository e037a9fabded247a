"""Training schemes of the paper's mapping-degeneration study (Ying et al., CVPR 2023, Sec. 3 and 5.2.1).

Single-sample: one network per image. The networks are stacked (`torch.func.stack_module_state`) and run under
`vmap`, so hundreds of independent trainings share one process and one grouped convolution per layer instead of
hundreds of processes. Summing the runs' losses leaves each run's gradient its own, and Adam is element-wise, so
one optimizer over the stacked parameters equals one optimizer per run.

Many-sample: one network trained on all images, as in ordinary training.

Both record, at every epoch, the IoU between each image's *positive pixels* (probability above half of the
prediction's maximum, the paper's rule) and its ground-truth mask, from the prediction of the training forward
pass. No augmentation: the study follows the mapping from one fixed input to its point label.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from irstd.losses import focal_loss
from irstd.models import final_output


@dataclass
class StudySamples:
    """N images with their point labels and masks, all N x 1 x H x W on one device.

    `images` are normalised network inputs, `labels` the point labels (1 at each point), `masks` the ground truth
    (bool); `valid` (bool, optional) marks real pixels where images were padded to a common size.
    """

    images: torch.Tensor
    labels: torch.Tensor
    masks: torch.Tensor
    names: list[str]
    valid: torch.Tensor | None = None

    def __post_init__(self) -> None:
        shape = self.images.shape
        if self.images.dim() != 4 or shape[1] != 1:
            raise ValueError(f"StudySamples.images must be N x 1 x H x W, got {tuple(shape)}")
        for field in ("labels", "masks") + (("valid",) if self.valid is not None else ()):
            if getattr(self, field).shape != shape:
                raise ValueError(f"StudySamples.{field} is {tuple(getattr(self, field).shape)}, "
                                 f"images are {tuple(shape)}")
        if len(self.names) != shape[0]:
            raise ValueError(f"StudySamples has {shape[0]} images but {len(self.names)} names")

    def __len__(self) -> int:
        return self.images.shape[0]

    def to(self, device: torch.device | str) -> StudySamples:
        return StudySamples(self.images.to(device), self.labels.to(device), self.masks.to(device), self.names,
                            None if self.valid is None else self.valid.to(device))

    def select(self, index: slice | torch.Tensor) -> StudySamples:
        index_list = range(len(self))[index] if isinstance(index, slice) else index.tolist()
        return StudySamples(self.images[index], self.labels[index], self.masks[index],
                            [self.names[i] for i in index_list],
                            None if self.valid is None else self.valid[index])


@dataclass
class DegenerationCurves:
    """Per-epoch IoU of each image's positive pixels (epochs x N) and each image's best prediction (N x H x W)."""

    iou: torch.Tensor
    loss: torch.Tensor
    best_prediction: torch.Tensor
    names: list[str]

    @property
    def best_iou(self) -> torch.Tensor:
        return self.iou.max(0).values

    @property
    def best_epoch(self) -> torch.Tensor:
        """1-based epoch of each image's maximum IoU (the first one on ties)."""
        return self.iou.argmax(0) + 1


def positive_iou(prob: torch.Tensor, mask: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """IoU per image between pixels above half of the image's maximum probability and the mask (N x 1 x H x W)."""
    if valid is not None:
        prob = prob.masked_fill(~valid, 0.0)
    peak = prob.flatten(1).amax(1).view(-1, 1, 1, 1)
    positive = prob > 0.5 * peak
    mask = mask.bool()
    intersection = (positive & mask).flatten(1).sum(1)
    union = (positive | mask).flatten(1).sum(1)
    return intersection / union.clamp(min=1)


def _supervision_loss(output: torch.Tensor | list[torch.Tensor], label: torch.Tensor) -> torch.Tensor:
    heads = output if isinstance(output, (list, tuple)) else [output]
    return sum(focal_loss(head, label) for head in heads)


def dihedral(x: torch.Tensor, ops: torch.Tensor) -> torch.Tensor:
    """Image i (N x C x H x W, square) turned by ops[i] % 4 quarter turns, then mirrored when ops[i] >= 4."""
    return torch.stack([_turn(image, int(op)) for image, op in zip(x, ops, strict=True)])


def undo_dihedral(x: torch.Tensor, ops: torch.Tensor) -> torch.Tensor:
    return torch.stack([_unturn(image, int(op)) for image, op in zip(x, ops, strict=True)])


def _turn(image: torch.Tensor, op: int) -> torch.Tensor:
    image = torch.rot90(image, op % 4, dims=(-2, -1))
    return image.flip(-1) if op >= 4 else image


def _unturn(image: torch.Tensor, op: int) -> torch.Tensor:
    image = image.flip(-1) if op >= 4 else image
    return torch.rot90(image, -(op % 4), dims=(-2, -1))


def _augmented(samples: StudySamples, ops: torch.Tensor | None) -> StudySamples:
    if ops is None:
        return samples
    return StudySamples(dihedral(samples.images, ops), dihedral(samples.labels, ops), dihedral(samples.masks, ops),
                        samples.names, None if samples.valid is None else dihedral(samples.valid, ops))


def _dihedral_draws(augment: bool, epochs: int, total: int, seed: int) -> torch.Tensor | None:
    """epochs x N transform indices (0-7), drawn up front so that a run's draws do not depend on chunking."""
    if not augment:
        return None
    return torch.randint(8, (epochs, total), generator=torch.Generator().manual_seed(seed))


class _Tracker:
    """Keeps the per-epoch IoU and loss and each image's prediction at its best epoch so far."""

    def __init__(self, samples: StudySamples, epochs: int):
        n, _, h, w = samples.images.shape
        self.iou = torch.zeros(epochs, n)
        self.loss = torch.zeros(epochs, n)
        self.best = torch.full((n,), -1.0)
        self.best_prediction = torch.zeros(n, h, w, dtype=torch.float16)

    def record(self, epoch: int, index: torch.Tensor, prob: torch.Tensor, iou: torch.Tensor,
               loss: torch.Tensor, ops: torch.Tensor | None = None) -> None:
        """`prob` as the network saw its input; `ops` (the inputs' transforms) turn it back for the stored view."""
        iou, loss, prob = iou.detach().cpu(), loss.detach().cpu(), prob.detach().cpu()
        if ops is not None:
            prob = undo_dihedral(prob, ops.cpu())
        self.iou[epoch, index] = iou
        self.loss[epoch, index] = loss
        better = iou > self.best[index]
        self.best[index[better]] = iou[better]
        self.best_prediction[index[better]] = prob[better, 0].half()

    def curves(self, names: list[str]) -> DegenerationCurves:
        return DegenerationCurves(self.iou, self.loss, self.best_prediction.float(), names)


def train_single_sample(
    build_network: Callable[[], nn.Module],
    samples: StudySamples,
    epochs: int,
    lr: float = 5e-4,
    seed: int = 0,
    chunk_size: int | None = None,
    augment: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> DegenerationCurves:
    """Train one network per image for `epochs` steps (one image = one step per epoch), vmapped over images.

    `augment` shows each step the image (and label) under a random flip/quarter turn, as the paper's training
    pipeline does; IoU is invariant to it, and the stored best predictions are turned back.

    Run i's initial weights come from `torch.manual_seed(seed + i)`, so a run does not depend on how the runs
    are grouped: `chunk_size` only bounds how many networks train at once (memory), not the results.
    `progress(done_runs, total_runs)` is called after each chunk.
    """
    total = len(samples)
    chunk_size = chunk_size or total
    if chunk_size < 1 or epochs < 1:
        raise ValueError(f"train_single_sample needs epochs >= 1 and chunk_size >= 1, got {epochs}, {chunk_size}")
    tracker = _Tracker(samples, epochs)
    device = samples.images.device
    draws = _dihedral_draws(augment, epochs, total, seed)
    for start in range(0, total, chunk_size):
        index = torch.arange(start, min(total, start + chunk_size))
        chunk = samples.select(slice(start, start + len(index)))
        networks = []
        for run in index.tolist():
            torch.manual_seed(seed + run)
            networks.append(build_network().to(device).train())
        _train_stacked(networks, chunk, index, epochs, lr, tracker, None if draws is None else draws[:, index])
        if progress is not None:
            progress(start + len(index), total)
    return tracker.curves(samples.names)


def _train_stacked(networks: list[nn.Module], samples: StudySamples, index: torch.Tensor, epochs: int,
                   lr: float, tracker: _Tracker, draws: torch.Tensor | None) -> None:
    params, buffers = stack_module_state(networks)
    params = {name: value.detach().requires_grad_() for name, value in params.items()}
    # The template only lends its forward: its own (meta) tensors are replaced by each run's.
    template = copy.deepcopy(networks[0]).to("meta")

    def run_one(run_params, run_buffers, image, label):
        output = functional_call(template, (run_params, run_buffers), (image.unsqueeze(0),))
        return _supervision_loss(output, label.unsqueeze(0)), final_output(output)[0]

    step = vmap(run_one)
    optimizer = torch.optim.Adam(params.values(), lr=lr)
    for epoch in range(epochs):
        ops = None if draws is None else draws[epoch]
        seen = _augmented(samples, ops)
        loss, logits = step(params, buffers, seen.images, seen.labels)
        optimizer.zero_grad(set_to_none=True)
        loss.sum().backward()
        optimizer.step()
        prob = torch.sigmoid(logits.detach())
        tracker.record(epoch, index, prob, positive_iou(prob, seen.masks, seen.valid), loss, ops)
        if not torch.isfinite(loss).all():
            bad = [samples.names[i] for i in torch.nonzero(~torch.isfinite(loss)).flatten().tolist()]
            raise FloatingPointError(f"single-sample training diverged at epoch {epoch + 1} on {bad[:5]}")


def train_many_sample(
    network: nn.Module,
    samples: StudySamples,
    epochs: int,
    batch_size: int = 16,
    lr: float = 5e-4,
    seed: int = 0,
    augment: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> DegenerationCurves:
    """Train one network on all images, recording every image every epoch.

    Each epoch shuffles the images (seeded) into ceil(N / batch_size) batches of near-equal size; `augment` as in
    `train_single_sample`.
    """
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"train_many_sample needs epochs >= 1 and batch_size >= 1, got {epochs}, {batch_size}")
    tracker = _Tracker(samples, epochs)
    network = network.to(samples.images.device).train()
    optimizer = torch.optim.Adam(network.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    total = len(samples)
    batches = math.ceil(total / batch_size)
    draws = _dihedral_draws(augment, epochs, total, seed)
    for epoch in range(epochs):
        order = torch.randperm(total, generator=generator)
        for index in order.tensor_split(batches):
            ops = None if draws is None else draws[epoch, index]
            batch = _augmented(samples.select(index), ops)
            output = network(batch.images)
            logits = final_output(output)
            # Per-image loss of the output head, for the record; training uses the batch loss of every head.
            with torch.no_grad():
                losses = vmap(focal_loss)(logits.unsqueeze(1), batch.labels.unsqueeze(1))
            optimizer.zero_grad(set_to_none=True)
            _supervision_loss(output, batch.labels).backward()
            optimizer.step()
            prob = torch.sigmoid(logits.detach())
            tracker.record(epoch, index, prob, positive_iou(prob, batch.masks, batch.valid), losses, ops)
        if progress is not None:
            progress(epoch + 1, epochs)
    return tracker.curves(samples.names)
