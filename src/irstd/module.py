"""The LightningModule: a backbone, the focal loss, Adam + MultiStepLR, evaluation metrics."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import pytorch_lightning as pl
import torch
from torchmetrics import MetricCollection

from irstd.losses import FocalLoss
from irstd.metrics import metric_suite
from irstd.models import build_backbone


class IRSTDModule(pl.LightningModule):
    """Trains a backbone against the labels served by the DataModule.

    Args:
        backbone: `{"name": ..., **kwargs}` for `irstd.models.build_backbone`.
        optimizer: partial optimizer (`_partial_: true` in the config), bound to the parameters here;
            only training needs it (checkpoints are reloaded for evaluation without it).
        scheduler: partial LR scheduler or None; stepped every `scheduler_interval`.
        threshold: probability above which a pixel counts as target in the metrics.
        focal_alpha, focal_gamma: exponents of the focal loss.
        weights: a released LESPS/BasicIRSTD `.pth.tar` (or a state dict of the backbone) loaded into the
            backbone with an exact key mapping; not stored in checkpoints, which carry the weights themselves.
    """

    def __init__(self, backbone: Mapping[str, Any], optimizer: Callable[..., torch.optim.Optimizer] | None = None,
                 scheduler: Callable[..., Any] | None = None, scheduler_interval: str = "epoch",
                 threshold: float = 0.5, focal_alpha: float = 2.0, focal_gamma: float = 4.0,
                 weights: str | None = None):
        super().__init__()
        if scheduler_interval not in ("epoch", "step"):
            raise ValueError(f"model.scheduler_interval must be 'epoch' or 'step', got {scheduler_interval!r}")
        backbone = dict(backbone)
        self.save_hyperparameters(logger=False, ignore=["optimizer", "scheduler", "weights"])
        self.net = build_backbone(**backbone)
        if weights:
            from irstd.models.weights import load_official_weights

            load_official_weights(self.net, weights)
        self.loss_fn = FocalLoss(focal_alpha, focal_gamma)
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.val_metrics = metric_suite(threshold, "val/")
        self.test_metrics = metric_suite(threshold, "test/")

    def forward(self, image: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        """Backbone logits (a list of maps for deep-supervision backbones in training mode)."""
        return self.net(image)

    def final_logits(self, image: torch.Tensor) -> torch.Tensor:
        """The backbone's final map (the last deep-supervision head, which is its eval-mode output)."""
        logits = self.net(image)
        return logits[-1] if isinstance(logits, (list, tuple)) else logits

    def probabilities(self, image: torch.Tensor) -> torch.Tensor:
        """Target probability per pixel: the one place where logits meet the sigmoid."""
        return torch.sigmoid(self.final_logits(image))

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self.loss_fn(self(batch["image"]), batch["label"])
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True,
                 batch_size=batch["image"].shape[0])
        return loss

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

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._evaluate(batch, self.test_metrics)

    def on_test_epoch_end(self) -> None:
        self.log_dict({k: v.float() for k, v in self.test_metrics.compute().items()})
        self.test_metrics.reset()

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        return self.probabilities(batch["image"])

    def configure_optimizers(self):
        if self.optimizer_factory is None:
            raise ValueError("model.optimizer is not set: training needs a partial optimizer config")
        optimizer = self.optimizer_factory(params=self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer=optimizer)
        return {"optimizer": optimizer,
                "lr_scheduler": {"scheduler": scheduler, "interval": self.hparams.scheduler_interval}}
