"""When and where label updates run during training: the round machinery (`LabelUpdateCallback`), LESPS on it
(`LESPSCallback`), and `FixedLabelsCallback` for runs whose labels stay as round 0 made them."""

from __future__ import annotations

import csv
import io
import logging
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_only

from irstd.data.label_bank import LabelBank
from irstd.data.protocols import LabelSource
from irstd.data.sources import Sample
from irstd.labels.start import StartRule, build_start_rule
from irstd.lesps.evolution import evolve_labels
from irstd.losses import focal_loss
from irstd.ops.padding import pad_bottom_right
from irstd.ops.regions import valid_region
from irstd.utils.files import atomic_write
from irstd.utils.run_layout import ROUNDS_FILE

log = logging.getLogger(__name__)

ROUND_FIELDS = ("round", "epoch", "forward_s", "evolve_s", "labelled_pixels", "label_pa", "label_iou", "lossd",
                "loss_before", "loss_after", "label_pa_before", "label_iou_before")
# the columns that score labels against masks: left out of a round of a dataset without masks
QUALITY_FIELDS = ("label_pa", "label_iou", "label_pa_before", "label_iou_before")


class LabelUpdateCallback(pl.Callback):
    """Update the training labels with the live model at the end of training epochs, in rounds.

    Updates start at the epoch the start rule (`start`: a `irstd.labels.start` rule or its config, e.g.
    `{"name": "loss", "Tloss": 10}`) fires on, asked once per epoch with the epoch's mean training loss (the
    training loss averaged over the epoch's batches and ranks); they then run whenever `(epoch + 1) % f == 0`.
    A round predicts every training image whole (eval mode, no augmentation, no gradient) on the model's
    device, updates the labels there with the subclass's `update_labels`, and commits the next label-bank
    round, which the next epoch trains on. Under DDP each rank updates its shard of the images, rank 0 commits
    after a barrier, and every rank reads the new round.

    Per round it logs (to the loggers and `lesps_rounds.csv` in the run directory): time spent in the
    forward pass and in evolution, labelled pixels (>= 0.5), the PA and IoU of the evolved labels (>= 0.5)
    against the masks when they exist, and lossd = |focal loss of the predictions against the labels after
    the update minus before| (the paper's supplement, Fig. III), and the PA/IoU of the labels before the
    update (round 0's point labels at the first round); without masks the PA/IoU columns are left out, not
    written as NaN. A panel per round (`lesps/round_NNNN.png`)
    shows a fixed set of targets: image, ground truth, label, prediction.

    Every epoch it also logs `labels/label_pa` and `labels/label_iou`: the current labels against the masks
    (when the dataset has masks), so a run reports how good the labels it ended with are.
    """

    def __init__(self, start: StartRule | dict[str, Any] | None = None, f: int = 5, batch_size: int | None = None,
                 evolve_chunk: int = 16, panel_targets: int = 8, output_dir: str | None = None):
        super().__init__()
        if f < 1:
            raise ValueError(f"label_update.f must be >= 1 epoch, got {f}")
        if evolve_chunk < 1:
            raise ValueError(f"label_update.evolve_chunk must be >= 1 image, got {evolve_chunk}")
        self.start_rule = start if isinstance(start, StartRule) else build_start_rule(start or {"name": "loss"})
        self.f = f
        self.quality = LabelQuality()
        self.batch_size = batch_size
        self.evolve_chunk = evolve_chunk
        self.panel_targets = panel_targets
        self.output_dir = Path(output_dir) if output_dir else None
        # state saved in checkpoints
        self.started = False
        self.start_epoch: int | None = None
        self.rounds_done = 0
        self.loss_history: list[float] = []
        self.panel_spots: list[tuple[str, int, int]] = []
        # this epoch's step losses, detached and left on their device until the epoch ends (`_epoch_loss`)
        self._batch_losses: list[torch.Tensor] = []

    # ---- the update rule, the subclass's --------------------------------------------------------
    def update_labels(self, prob: torch.Tensor, label: torch.Tensor, valid_hw: torch.Tensor,
                      names: Sequence[str]) -> torch.Tensor:
        """The next labels of a padded batch (B x 1 x H x W probabilities and labels, B x 2 valid sizes, the
        images' names)."""
        raise NotImplementedError

    def finish_round(self, trainer: pl.Trainer, evolved: dict[str, np.ndarray], epoch: int) -> dict[str, np.ndarray]:
        """This rank's labels of the round, after every rank has updated its shard and before the commit; a rule
        that decides across ranks (PAL's admissions) gathers here. Default: as they are."""
        return evolved

    # ---- the start rule ----------------------------------------------------------------------
    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._batch_losses = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        # kept on the device: reading the value here would make the host wait for every step's backward pass
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        self._batch_losses.append(loss.detach())

    def _epoch_loss(self, trainer: pl.Trainer, device: torch.device) -> float:
        """The mean of this epoch's step losses over its batches and ranks: the host reads them once, here.

        The same number as a mean of the losses read step by step (float64 mean of the float32 values)."""
        if self._batch_losses:
            steps = torch.stack([loss.reshape(()) for loss in self._batch_losses]).double().cpu().numpy()
            mean = float(np.mean(steps))
        else:
            mean = float("nan")
        return float(trainer.strategy.reduce(torch.tensor(mean, device=device), reduce_op="mean"))

    def should_evolve(self, epoch: int, epoch_loss: float, max_epochs: int | None = None) -> bool:
        """Apply the start rule, then the every-f-epochs rule; updates `started`/`start_epoch`."""
        if not self.started:
            if self.start_rule.fires(epoch, epoch_loss, max_epochs):
                self.started, self.start_epoch = True, epoch
                log.info("label updates start at epoch %d (%s; mean loss %.4g)", epoch, self.start_rule.describe(),
                         epoch_loss)
                return True
            return False
        return (epoch + 1) % self.f == 0

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        epoch = trainer.current_epoch
        epoch_loss = self._epoch_loss(trainer, pl_module.device)
        self.loss_history.append(epoch_loss)
        pl_module.log("lesps/epoch_loss", epoch_loss, on_epoch=True, sync_dist=False)
        if self.should_evolve(epoch, epoch_loss, planned_epochs(trainer)):
            pl_module.log("lesps/start_epoch", float(self.start_epoch), on_epoch=True)
            self.evolve(trainer, pl_module, epoch)
        self.quality.log(trainer, pl_module)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.started:
            last = f"{self.loss_history[-1]:.4g}" if self.loss_history else "n/a"
            log.warning("the labels were never updated: the start rule (%s) never fired (last epoch's mean loss: "
                        "%s). A loss threshold depends on the backbone, the loss and the dataset size: lower "
                        "start.Tloss, use start=plateau or start=epoch, or train longer.",
                        self.start_rule.describe(), last)

    # ---- one evolution round -----------------------------------------------------------------
    @torch.no_grad()
    def evolve(self, trainer: pl.Trainer, pl_module: pl.LightningModule, epoch: int) -> None:
        datamodule: LabelSource = trainer.datamodule
        bank = datamodule.bank
        rank, world = trainer.global_rank, trainer.world_size
        device = pl_module.device
        if world > 1:
            # batch-norm statistics follow each rank's own last batches: evolve every shard with rank 0's
            _broadcast_buffers(pl_module)
        evolved, totals = self.evolve_samples(pl_module, datamodule, datamodule.train_scan.samples[rank::world])
        evolved = self.finish_round(trainer, evolved, epoch)
        round_index = self._commit(trainer, bank, evolved, epoch)
        quality = trainer.strategy.reduce(totals.quality, reduce_op="sum")
        sums = trainer.strategy.reduce(torch.tensor([totals.loss_before, totals.loss_after, totals.forward_s,
                                                     totals.evolve_s], dtype=torch.float64, device=device),
                                       reduce_op="sum")
        self.rounds_done += 1
        after, before = (_pa_iou(q) for q in quality)
        record = {
            "round": round_index, "epoch": epoch, "forward_s": float(sums[2]) / world,
            "evolve_s": float(sums[3]) / world, "labelled_pixels": int(quality[0, 4]),
            "label_pa": after[0], "label_iou": after[1], "lossd": abs(float(sums[1] - sums[0])),
            "loss_before": float(sums[0]), "loss_after": float(sums[1]),
            "label_pa_before": before[0], "label_iou_before": before[1],
        }
        if quality[0, 5] == 0:
            record = {key: value for key, value in record.items() if key not in QUALITY_FIELDS}
        pl_module.log_dict({f"lesps/{k}": float(v) for k, v in record.items()}, on_epoch=True)
        self._write_round(trainer, record)
        self._write_panel(trainer, pl_module, round_index)

    @torch.no_grad()
    def evolve_samples(self, pl_module: pl.LightningModule, datamodule: LabelSource,
                       samples: Sequence[Sample]) -> tuple[dict[str, np.ndarray], _RoundTotals]:
        """The next labels of `samples` (a rank's shard) from the model's predictions; no files, no collectives."""
        was_training = pl_module.training
        pl_module.eval()
        device = pl_module.device
        totals = _RoundTotals(device)
        evolved: dict[str, np.ndarray] = {}
        pending: list[dict[str, Any]] = []
        loader = datamodule.evolve_dataloader(samples, batch_size=self.batch_size) if samples else []
        for batch in loader:
            start = _synchronized_time(device)
            logits = pl_module.final_logits(batch["image"].to(device))
            totals.forward_s += _synchronized_time(device) - start
            for i, name in enumerate(batch["name"]):
                height, width = batch["valid_hw"][i].tolist()
                pending.append({"name": name, "logits": logits[i, :, :height, :width],
                                "label": batch["label"][i, :, :height, :width].to(device),
                                "mask": batch["mask"][i, :, :height, :width].to(device),
                                "has_mask": bool(batch["has_mask"][i])})
            # evolving many images per call amortises its fixed cost (the forward stays image by image)
            if len(pending) >= self.evolve_chunk:
                evolved.update(self._evolve_chunk(pending, totals))
                pending = []
        if pending:
            evolved.update(self._evolve_chunk(pending, totals))
        if was_training:
            pl_module.train()
        return evolved, totals

    def _evolve_chunk(self, items: list[dict[str, Any]], totals: _RoundTotals) -> dict[str, np.ndarray]:
        """Evolve several images in one call: pad them to a common size, evolve, crop back."""
        height = max(item["label"].shape[-2] for item in items)
        width = max(item["label"].shape[-1] for item in items)

        def stack(key: str, fill: float = 0.0) -> torch.Tensor:
            return torch.stack([pad_bottom_right(item[key], height, width, fill) for item in items])

        logits, label, mask = stack("logits", -30.0), stack("label"), stack("mask")
        valid_hw = torch.tensor([item["label"].shape[-2:] for item in items], device=label.device)
        has_mask = torch.tensor([item["has_mask"] for item in items], device=label.device)
        start = _synchronized_time(label.device)
        new_label = self.update_labels(torch.sigmoid(logits), label, valid_hw, [item["name"] for item in items])
        totals.evolve_s += _synchronized_time(label.device) - start
        valid = _valid(valid_hw, label.shape)
        totals.loss_before += float(focal_loss(logits, label * valid))
        totals.loss_after += float(focal_loss(logits, new_label * valid))
        totals.quality[0] += _label_quality(new_label, mask, has_mask, valid)
        totals.quality[1] += _label_quality(label, mask, has_mask, valid)
        return {item["name"]: new_label[i, 0, :h, :w].cpu().numpy()
                for i, (item, (h, w)) in enumerate(zip(items, valid_hw.tolist(), strict=True))}

    def _commit(self, trainer: pl.Trainer, bank: LabelBank, evolved: dict[str, np.ndarray], epoch: int) -> int:
        """Gather every rank's shard through files beside the bank, then rank 0 commits the whole round."""
        if trainer.world_size == 1:
            return bank.commit(evolved, meta={"epoch": epoch})
        shard_dir = bank.root / ".shards"
        shard_file = shard_dir / f"epoch{epoch:05d}_rank{trainer.global_rank:03d}.npz"
        with atomic_write(shard_file) as handle:
            np.savez(handle, names=np.array(list(evolved), dtype=object), **{
                f"a{i}": array for i, array in enumerate(evolved.values())})
        trainer.strategy.barrier("lesps-shards-written")
        if trainer.is_global_zero:
            # exactly this world's files: a crashed earlier run may have left others for the same epoch
            paths = [shard_dir / f"epoch{epoch:05d}_rank{rank:03d}.npz" for rank in range(trainer.world_size)]
            merged: dict[str, np.ndarray] = {}
            for path in paths:
                with np.load(path, allow_pickle=True) as data:
                    merged.update({name: data[f"a{i}"] for i, name in enumerate(data["names"])})
            bank.commit(merged, meta={"epoch": epoch})
            for path in paths:
                path.unlink()
        trainer.strategy.barrier("lesps-round-committed")
        return bank.current_round()

    # ---- outputs -----------------------------------------------------------------------------
    def _run_dir(self, trainer: pl.Trainer) -> Path:
        return self.output_dir or Path(trainer.default_root_dir)

    @rank_zero_only
    def _write_round(self, trainer: pl.Trainer, record: dict[str, Any]) -> None:
        path = self._run_dir(trainer) / ROUNDS_FILE
        previous = path.read_text() if path.is_file() else ""
        rows = [row for row in csv.DictReader(io.StringIO(previous)) if int(row["round"]) < record["round"]]
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=[name for name in ROUND_FIELDS if name in record],
                                extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows + [record])
        with atomic_write(path, "w") as handle:
            handle.write(buffer.getvalue())

    @rank_zero_only
    def _write_panel(self, trainer: pl.Trainer, pl_module: pl.LightningModule, round_index: int) -> None:
        from irstd.viz import evolution_panel, log_image, save_png

        datamodule: LabelSource = trainer.datamodule
        if not self.panel_spots:
            self.panel_spots = _pick_panel_spots(datamodule, self.panel_targets)
        if not self.panel_spots:
            return
        samples = {s.name: s for s in datamodule.train_scan.samples}
        names = sorted({name for name, _, _ in self.panel_spots})
        loader = datamodule.evolve_dataloader([samples[n] for n in names], batch_size=1)
        was_training = pl_module.training
        pl_module.eval()
        views: dict[str, dict[str, np.ndarray]] = {}
        with torch.no_grad():
            for batch in loader:
                height, width = batch["valid_hw"][0].tolist()
                probs = pl_module.probabilities(batch["image"].to(pl_module.device))
                views[batch["name"][0]] = {
                    "image": samples[batch["name"][0]].load_image(),
                    "mask": batch["mask"][0, 0, :height, :width].numpy() if batch["has_mask"][0] else None,
                    "label": batch["label"][0, 0, :height, :width].numpy(),
                    "prediction": probs[0, 0, :height, :width].cpu().numpy(),
                }
        if was_training:
            pl_module.train()
        panel = evolution_panel(views, self.panel_spots, title=f"round {round_index}")
        path = self._run_dir(trainer) / "lesps" / f"round_{round_index:04d}.png"
        save_png(panel, path)
        log_image(trainer.loggers, "lesps/panel", panel, trainer.global_step,
                  f"round {round_index}: image | ground truth | label | prediction")

    # ---- checkpoint state --------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"started": self.started, "start_epoch": self.start_epoch, "rounds_done": self.rounds_done,
                "loss_history": list(self.loss_history), "panel_spots": [list(s) for s in self.panel_spots],
                "start_rule": self.start_rule.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.start_rule.load_state_dict(state_dict.get("start_rule", {}))
        self.started = state_dict["started"]
        self.start_epoch = state_dict["start_epoch"]
        self.rounds_done = state_dict["rounds_done"]
        self.loss_history = list(state_dict["loss_history"])
        self.panel_spots = [tuple(s) for s in state_dict["panel_spots"]]


class LESPSCallback(LabelUpdateCallback):
    """LESPS (Ying et al., CVPR 2023): each round evolves the labels with `evolve_labels` (Eqs. 1-4).

    Started by the `start` rule (`loss` below Tloss is the released code's, `epoch` after Tepoch the paper's),
    then every `f` epochs. The released code runs both its first-round and its every-f-epochs updates when the
    start epoch is also a multiple of f; here an epoch evolves at most once.
    """

    def __init__(self, start: StartRule | dict[str, Any] | None = None, Tb: float = 0.5, k: float = 0.5, f: int = 5,
                 r: float = 0.0015, window: int = 33, seed_box: int = 3, strict_false_alarm: bool = False,
                 batch_size: int | None = None, evolve_chunk: int = 16, panel_targets: int = 8,
                 output_dir: str | None = None):
        if not 0 <= Tb <= 1:
            raise ValueError(f"label_update.Tb must lie in [0, 1], got {Tb}")
        if r <= 0:
            raise ValueError(f"label_update.r must be positive, got {r}")
        super().__init__(start, f, batch_size, evolve_chunk, panel_targets, output_dir)
        self.evolution_args = dict(Tb=Tb, k=k, r=r, window=window, seed_box=seed_box,
                                   strict_false_alarm=strict_false_alarm)

    def update_labels(self, prob: torch.Tensor, label: torch.Tensor, valid_hw: torch.Tensor,
                      names: Sequence[str]) -> torch.Tensor:
        return evolve_labels(prob, label, valid_hw, **self.evolution_args)


class FixedLabelsCallback(pl.Callback):
    """`label_update=none`: the labels stay as round 0 made them; logs their quality (`labels/label_pa`,
    `labels/label_iou` against the masks, when the dataset has them) at the end of every training epoch."""

    def __init__(self, output_dir: str | None = None):
        super().__init__()
        self.output_dir = output_dir
        self.quality = LabelQuality()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.quality.log(trainer, pl_module)


def planned_epochs(trainer: pl.Trainer) -> int | None:
    """The epochs training will run: trainer.max_epochs, else max_steps counted in epochs of this training set."""
    if trainer.max_epochs is not None and trainer.max_epochs > 0:
        return trainer.max_epochs
    batches = trainer.num_training_batches
    if trainer.max_steps and trainer.max_steps > 0 and batches and math.isfinite(batches):
        return math.ceil(trainer.max_steps / batches)
    return None


class LabelQuality:
    """PA and IoU (labels >= 0.5) of the bank's current round against the masks, summed over every rank's shard of
    the training images; computed once per round, so epochs with unchanged labels cost nothing."""

    def __init__(self) -> None:
        self._round: int | None = None
        self._sums: torch.Tensor | None = None

    def log(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        datamodule: LabelSource = trainer.datamodule
        round_index = datamodule.bank.current_round()
        if self._round != round_index:
            self._round, self._sums = round_index, self._measure(trainer, datamodule, pl_module.device)
        sums = self._sums
        if sums[3] > 0:
            pl_module.log_dict({"labels/label_pa": float(sums[0] / sums[2]) if sums[2] > 0 else float("nan"),
                                "labels/label_iou": float(sums[0] / sums[1]) if sums[1] > 0 else float("nan"),
                                "labels/round": float(round_index)}, on_epoch=True)

    @staticmethod
    def _measure(trainer: pl.Trainer, datamodule: LabelSource, device: torch.device) -> torch.Tensor:
        sums = torch.zeros(4, dtype=torch.float64, device=device)
        for sample in datamodule.train_scan.samples[trainer.global_rank::trainer.world_size]:
            mask = sample.load_mask()
            if mask is None:
                continue
            label, truth = datamodule.bank.read(sample.name) >= 0.5, mask > 0
            sums += torch.tensor([(label & truth).sum(), (label | truth).sum(), truth.sum(), 1.0],
                                 dtype=torch.float64, device=device)
        return trainer.strategy.reduce(sums, reduce_op="sum")


class _RoundTotals:
    """What one round adds up on this rank: timings, losses before/after, label-quality sums."""

    def __init__(self, device: torch.device):
        self.forward_s = self.evolve_s = self.loss_before = self.loss_after = 0.0
        # per label set (after, before): intersection, union, correct, target pixels, labelled, images with masks
        self.quality = torch.zeros(2, 6, dtype=torch.float64, device=device)


def _broadcast_buffers(module: torch.nn.Module) -> None:
    for buffer in module.buffers():
        torch.distributed.broadcast(buffer, src=0)


def _synchronized_time(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def _valid(valid_hw: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    return valid_region(shape, valid_hw, valid_hw.device)


def _label_quality(label: torch.Tensor, mask: torch.Tensor, has_mask: torch.Tensor,
                   valid: torch.Tensor) -> torch.Tensor:
    """Sums for PA/IoU of labels >= 0.5 against masks (images with masks only) and the labelled pixels."""
    positive = (label >= 0.5) & valid
    with_mask = has_mask.view(-1, 1, 1, 1)
    truth = (mask > 0) & valid & with_mask
    scored = positive & with_mask
    return torch.stack([(scored & truth).sum(), (scored | truth).sum(), (scored & truth).sum(), truth.sum(),
                        positive.sum(), has_mask.sum()]).double()


def _pa_iou(sums: torch.Tensor) -> tuple[float, float]:
    """PA and IoU from the sums of `_label_quality` (NaN without masks)."""
    pa = float(sums[2] / sums[3]) if sums[3] > 0 else float("nan")
    iou = float(sums[0] / sums[1]) if sums[1] > 0 else float("nan")
    return pa, iou


def _pick_panel_spots(datamodule: LabelSource, count: int) -> list[tuple[str, int, int]]:
    """The first `count` round-0 targets of the training set (image name, centroid row, col)."""
    from irstd.data.points import target_stats

    spots: list[tuple[str, int, int]] = []
    round_zero = datamodule.bank.read_round(0)
    for sample in datamodule.train_scan.samples:
        for target in target_stats(round_zero[sample.name] > 0.5):
            spots.append((sample.name, int(target.centroid[0]), int(target.centroid[1])))
            if len(spots) == count:
                return spots
    return spots
