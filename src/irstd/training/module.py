"""The LightningModule: a backbone, a loss (the focal loss by default), Adam + MultiStepLR, evaluation metrics."""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torchmetrics import MetricCollection

from irstd.losses import FocalLoss
from irstd.metrics import metric_suite
from irstd.models import build_backbone, final_output, set_output_prior

# metric keys that count (summed over test sets) rather than measure a rate (averaged)
COUNT_KEYS = ("targets", "found", "false_targets")


class NonFiniteLossError(RuntimeError):
    """A training loss was NaN or infinite; the message names the step, the epoch and the likely cause."""


class IRSTDModule(pl.LightningModule):
    """Trains a backbone against the labels served by the DataModule.

    Args:
        backbone: `{"name": ..., **kwargs}` for `irstd.models.build_backbone`.
        optimizer: partial optimizer (`_partial_: true` in the config), bound to the parameters here;
            only training needs it (checkpoints are reloaded for evaluation without it).
        scheduler: partial LR scheduler or None; stepped every `scheduler_interval`.
        threshold: probability above which a pixel counts as target in the metrics.
        loss: the training loss on logits (the `loss` group); None: the paper's focal loss.
        weights: a released LESPS/BasicIRSTD `.pth.tar` (or a state dict of the backbone) loaded into the
            backbone with an exact key mapping; not stored in checkpoints, which carry the weights themselves.
        output_prior: the initial target probability of every pixel (the logit layers' bias); None: the
            layers' default init, as the released code.
        output_weight_std: with `output_prior`, the logit layers' weights drawn from N(0, this) (RetinaNet's
            fill); None: their default init.
        channels_last: hold the weights in channels-last memory format, so that every activation follows
            (single-channel images already are): faster convolutions on CPUs and tensor cores (0.77x the epoch
            time of ACM, 0.67x of U-Net on 2 CPU cores; docs/benchmarks.md). Set before the optimizer and DDP
            see the parameters; results differ from the default layout at float32 round-off.
    """

    def __init__(self, backbone: Mapping[str, Any], optimizer: Callable[..., torch.optim.Optimizer] | None = None,
                 scheduler: Callable[..., Any] | None = None, scheduler_interval: str = "epoch",
                 threshold: float = 0.5, loss: torch.nn.Module | None = None,
                 weights: str | None = None, output_prior: float | None = None, output_weight_std: float | None = None,
                 channels_last: bool = False):
        super().__init__()
        if scheduler_interval not in ("epoch", "step"):
            raise ValueError(f"model.scheduler_interval must be 'epoch' or 'step', got {scheduler_interval!r}")
        backbone = dict(backbone)
        self.save_hyperparameters(logger=False, ignore=["optimizer", "scheduler", "weights", "loss"])
        self.net = build_backbone(**backbone)
        if channels_last:
            self.net.to(memory_format=torch.channels_last)
        if output_prior is not None:
            set_output_prior(self.net, output_prior, output_weight_std)
        if weights:
            from irstd.models.weights import load_official_weights

            load_official_weights(self.net, weights)
        self.loss_fn = loss if loss is not None else FocalLoss()
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.val_metrics = metric_suite(threshold, "val/")
        self.test_metrics = metric_suite(threshold, "test/")
        # several test sets (data.evaluation.test_sets): one suite each, made when testing starts
        self.test_set_names: list[str] = []
        self.test_set_metrics = torch.nn.ModuleList()
        # the first training step with a non-finite loss, kept on the loss's device until read (`check_finite_loss`):
        # global step, epoch, batch images non-finite (0/1), batch labels non-finite (0/1); -1: none yet
        self._first_nonfinite: torch.Tensor | None = None

    def forward(self, image: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        """Backbone logits (a list of maps for deep-supervision backbones in training mode)."""
        return self.net(image)

    def final_logits(self, image: torch.Tensor) -> torch.Tensor:
        """The backbone's final map (the last deep-supervision head, which is its eval-mode output), in float32.

        Under trainer.precision=16-mixed/bf16-mixed the backbone runs under autocast and returns half-precision
        logits; the sigmoid, the metrics and label evolution compare probabilities against thresholds and
        window maxima, so they get float32 (a bf16 logit carries 3 significant digits)."""
        return final_output(self.net(image)).float()

    def probabilities(self, image: torch.Tensor) -> torch.Tensor:
        """Target probability per pixel: the one place where logits meet the sigmoid."""
        return torch.sigmoid(self.final_logits(image))

    def training_loss(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The loss of a training batch, computed in float32 whatever the trainer's precision."""
        logits = self(batch["image"])
        # Under mixed precision the logits arrive in half precision: the loss (logs of probabilities near 0 and 1,
        # sums over every pixel) runs on float32 copies, outside autocast, which would put a convolution inside a
        # loss (edge maps) back into half precision.
        with _without_autocast(batch["image"].device):
            return self.loss_fn(_as_float32(logits), batch["label"].float())

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self.training_loss(batch)
        self._watch_loss(loss, batch)
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True,
                 batch_size=batch["image"].shape[0])
        return loss

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        # the steps at which Lightning hands the logged step values to the loggers and the progress bar (which
        # waits for the device anyway), and the epoch's last step, before validation, the label-update round and
        # the epoch's checkpoints use the weights
        if self.global_step % max(self.trainer.log_every_n_steps, 1) == 0 or self.trainer.is_last_batch:
            self.check_finite_loss()

    def _watch_loss(self, loss: torch.Tensor, batch: Mapping[str, torch.Tensor]) -> None:
        """Stop on a NaN or infinite loss without waiting for the device every step.

        On the CPU reading the loss costs nothing, so a bad step stops before its update reaches the weights. On
        an accelerator `if not torch.isfinite(loss)` would wait for the forward pass to finish every step: the
        first bad step is recorded on the device instead and read by `check_finite_loss` where the host waits
        anyway (logging steps, the epoch's end, a checkpoint save)."""
        bad = ~torch.isfinite(loss.detach())
        if _reads_are_free(loss.device):
            if bad:
                raise NonFiniteLossError(self._nonfinite_message(
                    float(loss.detach()), self.global_step, self.current_epoch,
                    bool((~torch.isfinite(batch["image"])).any()), bool((~torch.isfinite(batch["label"])).any())))
            return
        device = loss.device
        if self._first_nonfinite is None:
            self._first_nonfinite = torch.full((4,), -1, dtype=torch.int64, device=device)
        # torch.full puts a Python number on the device without a host-to-device copy, which would synchronise
        here = torch.stack([torch.full((), self.global_step, dtype=torch.int64, device=device),
                            torch.full((), self.current_epoch, dtype=torch.int64, device=device),
                            (~torch.isfinite(batch["image"])).any().long(),
                            (~torch.isfinite(batch["label"])).any().long()])
        first_bad = bad & (self._first_nonfinite[0] < 0)
        self._first_nonfinite = torch.where(first_bad, here, self._first_nonfinite)

    def check_finite_loss(self) -> None:
        """Raise `NonFiniteLossError` if a training step so far had a NaN or infinite loss (one read of the device)."""
        if self._first_nonfinite is None:
            return
        step, epoch, image_bad, label_bad = self._first_nonfinite.tolist()
        if step >= 0:
            raise NonFiniteLossError(self._nonfinite_message(
                None, step, epoch, bool(image_bad), bool(label_bad),
                f" (noticed at global step {self.global_step})"))

    def _nonfinite_message(self, value: float | None, step: int, epoch: int, image_bad: bool, label_bad: bool,
                           noticed: str = "") -> str:
        if image_bad:
            cause = ("the batch's images hold NaN or inf values: check the dataset's image files and the "
                     "normalisation statistics (data.std must be > 0, see normalization.json)")
        elif label_bad:
            cause = ("the batch's labels hold NaN or inf values: a corrupt label round; roll the run's label bank "
                     "back (LabelBank.rollback, see label_bank/manifest.json) or restart from the point labels")
        else:
            rates = sorted({group["lr"] for optimizer in self.trainer.optimizers for group in optimizer.param_groups})
            cause = (f"the training diverged: lower model.optimizer.lr (now {', '.join(f'{lr:g}' for lr in rates)}),"
                     " set trainer.gradient_clip_val, or under trainer.precision=16-mixed use bf16-mixed or 32-true")
        shown = "NaN or inf" if value is None else str(value)
        return (f"training loss is {shown} at global step {step} (epoch {epoch}){noticed}: {cause}. Training "
                "stopped before these weights were saved; the run's checkpoints/last.ckpt, when an epoch finished, "
                "holds the last good ones (resume from it with ckpt_path=... after the fix).")

    def _evaluate(self, batch: dict[str, Any], metrics: MetricCollection) -> torch.Tensor:
        probs = self.probabilities(batch["image"])
        metrics.update(probs, batch["mask"], batch["valid_hw"])
        return probs

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._evaluate(batch, self.val_metrics)

    def on_validation_epoch_end(self) -> None:
        metrics = {k: v.float() for k, v in self.val_metrics.compute().items()}
        shown = ("val/iou", "val/pd")
        self.log_dict({k: v for k, v in metrics.items() if k in shown}, prog_bar=True)
        self.log_dict({k: v for k, v in metrics.items() if k not in shown})
        self.val_metrics.reset()

    def on_test_start(self) -> None:
        names = list(getattr(self.trainer.datamodule, "test_set_names", None) or [])
        self.test_set_names = names if len(names) > 1 else []
        self.test_set_metrics = torch.nn.ModuleList(
            metric_suite(self.hparams.threshold, f"test/{name}/") for name in self.test_set_names).to(self.device)

    def test_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> None:
        self._evaluate(batch, self.test_set_metrics[dataloader_idx] if self.test_set_names else self.test_metrics)

    def on_test_epoch_end(self) -> None:
        """`test/<key>`; with several test sets `test/<SET>/<key>` each, and `test/<key>` the mean over the
        sets (the paper's "Average" column) for rates, the total for counts."""
        if not self.test_set_names:
            self.log_dict({k: v.float() for k, v in self.test_metrics.compute().items()}, add_dataloader_idx=False)
            self.test_metrics.reset()
            return
        per_set = []
        for name, suite in zip(self.test_set_names, self.test_set_metrics, strict=True):
            values = {k.removeprefix(f"test/{name}/"): v.double() for k, v in suite.compute().items()}
            self.log_dict({f"test/{name}/{k}": v.float() for k, v in values.items()}, add_dataloader_idx=False)
            per_set.append(values)
            suite.reset()
        combined = {k: torch.stack([values[k] for values in per_set]) for k in per_set[0]}
        self.log_dict({f"test/{k}": (v.sum() if k in COUNT_KEYS else v.mean()).float() for k, v in combined.items()},
                      add_dataloader_idx=False)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # weights that a non-finite loss has reached must not replace the last good checkpoint
        self.check_finite_loss()
        # Lightning restores model, optimizer, scheduler and loops, not the random generators
        checkpoint["rng_states"] = rng_states()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if "rng_states" in checkpoint:
            set_rng_states(checkpoint["rng_states"])

    def configure_optimizers(self):
        if self.optimizer_factory is None:
            raise ValueError("model.optimizer is not set: training needs a partial optimizer config")
        optimizer = self.optimizer_factory(params=self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer=optimizer)
        return {"optimizer": optimizer,
                "lr_scheduler": {"scheduler": scheduler, "interval": self.hparams.scheduler_interval}}


def _as_float32(logits: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor | list[torch.Tensor]:
    """A backbone's output (one map, or a list of deep-supervision maps) in float32."""
    if isinstance(logits, (list, tuple)):
        return [head.float() for head in logits]
    return logits.float()


def _reads_are_free(device: torch.device) -> bool:
    """Whether reading a tensor's value on the host costs no wait for the device (CPU tensors)."""
    return device.type == "cpu"


def _without_autocast(device: torch.device) -> contextlib.AbstractContextManager:
    if torch.amp.is_autocast_available(device.type):
        return torch.autocast(device.type, enabled=False)
    return contextlib.nullcontext()


def rng_states() -> dict[str, Any]:
    """The global generators of torch, CUDA, NumPy and Python, in types `torch.load(weights_only=True)` accepts."""
    kind, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    states = {"torch": torch.get_rng_state(), "python": random.getstate(),
              "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "position": int(position),
                        "has_gauss": int(has_gauss), "cached_gaussian": float(cached_gaussian)}}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: Mapping[str, Any]) -> None:
    # `load_from_checkpoint(map_location="cuda")` moves these tensors too; the generators take CPU byte tensors
    torch.set_rng_state(states["torch"].cpu())
    version, internal, gauss_next = states["python"]
    random.setstate((version, tuple(internal), gauss_next))
    numpy = states["numpy"]
    np.random.set_state((numpy["kind"], numpy["keys"].cpu().numpy().astype(np.uint32), numpy["position"],
                         numpy["has_gauss"], numpy["cached_gaussian"]))
    if "cuda" in states and torch.cuda.is_available():
        # a checkpoint from a machine with more GPUs restores the generators of the GPUs this one has
        for index, state in enumerate(states["cuda"][:torch.cuda.device_count()]):
            torch.cuda.set_rng_state(state.cpu(), index)
