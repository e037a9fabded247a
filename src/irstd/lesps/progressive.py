"""PAL's progressive label learning as a label-update callback (`label_update=pal`).

PAL (Yu et al., ICCV 2025) trains first on the images whose points are easy, admits harder images as the model
learns to find their points, and updates the admitted images' labels with a LESPS-like rule that decays the
background. The rules are pure tensor functions in `irstd.labels.update.pal`; this callback runs them in the
training loop: the easy set before the first epoch, then rounds through `LabelUpdateCallback`'s machinery
(shards under DDP, atomic label-bank rounds, checkpointed state).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
import torch.distributed as dist

from irstd.data.protocols import LabelSource
from irstd.labels.start import StartRule
from irstd.labels.update.pal import (
    AdmissionSchedule,
    admission_scores,
    admitted_labels,
    easy_set_labels,
    pal_update,
)
from irstd.lesps.callback import LabelUpdateCallback, planned_epochs
from irstd.ops.padding import pad_bottom_right
from irstd.ops.regions import valid_region

log = logging.getLogger(__name__)

EIGHT_BIT_MAX = 255.0


class PALCallback(LabelUpdateCallback):
    """PAL's training loop on the label bank.

    - Before the first epoch: PAL's easy-set test on every training image and its round-0 labels (the points);
      the easy images are admitted, and their labels become their points plus the regions their contours
      enclose (committed as a round). Training epochs then draw only the admitted images. When no image is
      easy, all are admitted (with a warning): there would be nothing to train on.
    - Once the start rule has fired (PAL: `start=fraction`, 20 % of training), on every epoch e (1-based count
      of finished epochs) with e % f == 0: the admitted images' labels are updated with `pal_update`; then,
      while e <= stop x the planned epochs, every hard image whose prediction misses at most the schedule's
      tolerance of its points (and has at most `max_false_alarm_ratio` spurious regions per point) is
      admitted, with its predicted regions that hold a point as its label.

    Args:
        start: the start rule (its config or object), as for every update rule.
        f: epochs between rounds (PAL: 5).
        stop: fraction of the planned epochs after which no image is admitted (PAL: 0.8).
        initial_tolerance, max_false_alarm_ratio: the admission test (PAL: 0.2, 5).
        admit_threshold: probability above which a pixel is predicted target in the admission test.
        Tb, k, r, window, seed_box, decay: `pal_update`'s rule (PAL: LESPS's values, decay 0.97).
        easy: keyword arguments of `easy_set_labels` (window, Canny thresholds in 8-bit grey levels, ...).
        batch_size, evolve_chunk, panel_targets, output_dir: as `LabelUpdateCallback`.
    """

    def __init__(self, start: StartRule | dict[str, Any] | None = None, f: int = 5, stop: float = 0.8,
                 initial_tolerance: float = 0.2, max_false_alarm_ratio: float = 5.0, admit_threshold: float = 0.5,
                 Tb: float = 0.5, k: float = 0.5, r: float = 0.0015, window: int = 33, seed_box: int = 3,
                 decay: float = 0.97, easy: dict[str, Any] | None = None, batch_size: int | None = None,
                 evolve_chunk: int = 16, panel_targets: int = 8, output_dir: str | None = None):
        super().__init__(start or {"name": "fraction", "fraction": 0.2}, f, batch_size, evolve_chunk, panel_targets,
                         output_dir)
        if not 0 < stop <= 1:
            raise ValueError(f"label_update.stop must lie in (0, 1], got {stop}")
        if not 0 <= decay <= 1:
            raise ValueError(f"label_update.decay must lie in [0, 1], got {decay}")
        self.stop, self.initial_tolerance, self.max_false_alarm_ratio = stop, initial_tolerance, max_false_alarm_ratio
        self.admit_threshold = admit_threshold
        self.update_args = dict(Tb=Tb, k=k, r=r, window=window, seed_box=seed_box, decay=decay)
        self.easy_args = dict(easy or {})
        self.schedule: AdmissionSchedule | None = None
        self._schedule_state: dict[str, Any] | None = None
        self.index: dict[str, int] = {}
        self.points: dict[str, np.ndarray] = {}
        self._epoch, self._max_epochs = 0, None
        self._scores: dict[str, tuple[float, float]] = {}
        self._candidates: dict[str, np.ndarray] = {}

    # ---- before the first epoch: the easy set -------------------------------------------------
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        datamodule: LabelSource = trainer.datamodule
        samples = datamodule.train_scan.samples
        self.index = {sample.name: i for i, sample in enumerate(samples)}
        self.points = datamodule.bank.read_round(0)
        self.schedule = AdmissionSchedule(len(samples), start=0.0, stop=self.stop, every=self.f,
                                          initial_tolerance=self.initial_tolerance,
                                          max_false_alarm_ratio=self.max_false_alarm_ratio)
        if self._schedule_state is not None:  # resumed: the admissions of the checkpoint
            self.schedule.load_state_dict(self._schedule_state)
        else:
            self._admit_easy_set(trainer, pl_module, datamodule)
        datamodule.train_subset = self.schedule.admitted.nonzero().flatten().tolist()
        log.info("PAL: training on %d of %d images (the easy set)", len(datamodule.train_subset), len(samples))

    @torch.no_grad()
    def _admit_easy_set(self, trainer: pl.Trainer, pl_module: pl.LightningModule, datamodule: LabelSource) -> None:
        rank, world = trainer.global_rank, trainer.world_size
        device = pl_module.device
        labels: dict[str, np.ndarray] = {}
        easy_names: list[str] = []
        for batch in datamodule.evolve_dataloader(datamodule.train_scan.samples[rank::world], self.batch_size):
            native = batch["image"].to(device) * datamodule.std + datamodule.mean
            valid_hw = batch["valid_hw"].to(device)
            new_labels, image_easy = easy_set_labels(_eight_bit(native, valid_hw), batch["label"].to(device),
                                                     valid_hw, **self.easy_args)
            for i, name in enumerate(batch["name"]):
                height, width = batch["valid_hw"][i].tolist()
                if image_easy[i]:
                    easy_names.append(name)
                    labels[name] = new_labels[i, 0, :height, :width].cpu().numpy()
                else:
                    labels[name] = batch["label"][i, 0, :height, :width].numpy()
        easy = torch.zeros(len(self.index), dtype=torch.bool)
        easy[[self.index[name] for name in _gather(trainer, easy_names)]] = True
        if not easy.any():
            # nothing to start from: PAL degenerates to training on every image from its points
            log.warning("PAL: no training image passed the easy-set test; training starts on all %d images",
                        len(self.index))
            easy[:] = True
        self.schedule.admit_easy(easy)
        self._commit(trainer, datamodule.bank, labels, epoch=-1)

    # ---- rounds ------------------------------------------------------------------------------
    def should_evolve(self, epoch: int, epoch_loss: float, max_epochs: int | None = None) -> bool:
        """PAL's rounds fall on every f-th finished epoch, the first included, once the start rule has fired."""
        self._epoch, self._max_epochs = epoch + 1, max_epochs
        if not self.started:
            if not self.start_rule.fires(epoch, epoch_loss, max_epochs):
                return False
            self.started, self.start_epoch = True, epoch
            log.info("PAL: label updates and admissions start (%s)", self.start_rule.describe())
        return (epoch + 1) % self.f == 0

    def update_labels(self, prob: torch.Tensor, label: torch.Tensor, valid_hw: torch.Tensor,
                      names: Sequence[str]) -> torch.Tensor:
        admitted = torch.tensor([bool(self.schedule.admitted[self.index[name]]) for name in names],
                                device=label.device).view(-1, 1, 1, 1)
        updated = pal_update(prob, label, valid_hw, **self.update_args)
        points = torch.stack([pad_bottom_right(torch.from_numpy(self.points[name])[None], *label.shape[-2:])
                              for name in names]).to(label.device, label.dtype)
        missed, false_alarms = admission_scores(prob, points, valid_hw, threshold=self.admit_threshold)
        candidates = admitted_labels(prob, points, valid_hw, threshold=self.admit_threshold)
        for i, name in enumerate(names):
            if not admitted[i]:
                height, width = valid_hw[i].tolist()
                self._scores[name] = (float(missed[i]), float(false_alarms[i]))
                self._candidates[name] = candidates[i, 0, :height, :width].cpu().numpy()
        return torch.where(admitted, updated, label)

    def finish_round(self, trainer: pl.Trainer, evolved: dict[str, np.ndarray], epoch: int) -> dict[str, np.ndarray]:
        """Admit, across every rank's shard, the hard images that pass; they take their candidate labels."""
        scored = _gather(trainer, [(name, *score) for name, score in self._scores.items()])
        max_epochs = self._max_epochs or planned_epochs(trainer)
        if scored and max_epochs:
            names = [name for name, _, _ in scored]
            # the tolerance grows from the epoch updates started at, as PAL's grows from its start fraction
            self.schedule.start = min(self.start_epoch / max_epochs, self.stop - 1e-9)
            newly = self.schedule.admit(torch.tensor([self.index[name] for name in names]),
                                        torch.tensor([missed for _, missed, _ in scored], dtype=torch.float64),
                                        torch.tensor([fa for _, _, fa in scored], dtype=torch.float64),
                                        epoch=self._epoch, max_epochs=max_epochs)
            newly_admitted = set(newly.tolist())
            for name, candidate in self._candidates.items():
                if self.index[name] in newly_admitted:
                    evolved[name] = candidate
            if newly.numel():
                log.info("PAL: %d image(s) admitted at epoch %d, %d of %d in training", newly.numel(), self._epoch,
                         int(self.schedule.admitted.sum()), len(self.index))
        trainer.datamodule.train_subset = self.schedule.admitted.nonzero().flatten().tolist()
        self._scores, self._candidates = {}, {}
        return evolved

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        pl_module.log("pal/admitted", float(self.schedule.admitted.sum()), on_epoch=True)

    # ---- checkpoint state --------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        if self.schedule is not None:
            state["admission"] = {"admitted_at": self.schedule.admitted_at.tolist()}
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self._schedule_state = state_dict.get("admission")


def _eight_bit(image: torch.Tensor, valid_hw: torch.Tensor) -> torch.Tensor:
    """PAL's edge thresholds are 8-bit grey levels: wider images (16-bit) are scaled by the range of their valid
    region (the padding, at the normalisation mean, must not set it)."""
    valid = valid_region(image.shape, valid_hw, image.device)
    peak = image.masked_fill(~valid, -math.inf).flatten(1).amax(1).view(-1, 1, 1, 1)
    low = image.masked_fill(~valid, math.inf).flatten(1).amin(1).view(-1, 1, 1, 1)
    scaled = (image - low) / (peak - low).clamp(min=1e-12) * EIGHT_BIT_MAX
    return torch.where(peak > EIGHT_BIT_MAX, scaled, image)


def _gather(trainer: pl.Trainer, items: list) -> list:
    """Every rank's `items`, concatenated in rank order (this rank's alone without DDP)."""
    if trainer.world_size == 1 or not dist.is_available() or not dist.is_initialized():
        return list(items)
    gathered: list[list] = [[] for _ in range(trainer.world_size)]
    dist.all_gather_object(gathered, list(items))
    return [item for part in gathered for item in part]
