"""Training as a task: fit, select weights without the test split, test, write metrics; every output goes into
one run directory. The `irstd-train` entry point composes the config and calls `train`."""

from __future__ import annotations

import errno
import logging
import math
import os
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
from lightning_fabric.utilities.rank_zero import rank_zero_only
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import ModelCheckpoint

from irstd.data.datamodule import IRSTDDataModule
from irstd.models import input_side_multiple
from irstd.training.checkpoints import use_atomic_checkpoints
from irstd.training.ddp import release_distributed
from irstd.training.loggers import finish_loggers, instantiate_group, instantiate_loggers
from irstd.training.run_dir import save_resolved_config, seed_from_config, write_metrics
from irstd.utils.files import load_torch_file
from irstd.utils.run_layout import METRICS_FILE

log = logging.getLogger("irstd")


def train(cfg: DictConfig) -> tuple[dict[str, float], dict[str, Any]]:
    """Fit, then (unless `test=false`) evaluate the selected weights (`select`, by default the last epoch's) on
    the test split(s).

    Kept apart from the Hydra entry point so tests and scripts call it with a composed config. A full disk (or
    quota) stops it with an OSError that names the run directory and the checkpoint to resume from.
    """
    try:
        return _train(cfg)
    except Exception as err:
        full = _disk_full(err)
        if full is None:
            raise
        raise OSError(full.errno, disk_full_message(Path(cfg.paths.output_dir), full)) from err


def check_input_sides(model: pl.LightningModule, datamodule: IRSTDDataModule) -> None:
    """Training crops and evaluation padding must suit the backbone's input sides (ValueError naming the keys):
    a backbone that halves the resolution four times needs sides that are multiples of 16."""
    multiple = input_side_multiple(model.net)
    pad = datamodule.evaluation.pad_multiple
    if pad % multiple:
        raise ValueError(f"model.backbone={type(model.net).__name__} needs input sides that are multiples of "
                         f"{multiple}: set data.evaluation.pad_multiple (now {pad}) to a multiple of {multiple}, "
                         f"and data.patch_size (now {datamodule.hparams.patch_size}) to a multiple of that")


def _train(cfg: DictConfig) -> tuple[dict[str, float], dict[str, Any]]:
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    if rank_zero_only.rank == 0:
        save_resolved_config(cfg, output_dir)
    seed_from_config(cfg)
    best = best_checkpoint(cfg)

    datamodule: IRSTDDataModule = hydra.utils.instantiate(cfg.data, _convert_="all")
    if cfg.get("ckpt_path"):
        datamodule.adopt_label_bank(cfg.ckpt_path)
    model: pl.LightningModule = hydra.utils.instantiate(cfg.model, _convert_="partial")
    check_input_sides(model, datamodule)
    callbacks = instantiate_group(cfg.get("callbacks"), "callbacks")
    # the label-update callback (label_update=none|lesps|pal), started by its `start` rule
    callbacks.append(hydra.utils.instantiate(cfg.label_update, _convert_="all"))
    loggers, logger_callbacks = instantiate_loggers(cfg)
    callbacks.extend(logger_callbacks + ([best] if best else []))
    trainer: pl.Trainer = hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    use_atomic_checkpoints(trainer)

    # loggers and DDP ranks are released even when training fails, so the next job of a multirun starts clean
    failed = True
    try:
        trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
        metrics = dict(trainer.callback_metrics)
        # without masks there is nothing to test against (the data module warned at setup)
        if cfg.get("test") and datamodule.has_masks:
            metrics |= load_selected(model, best, trainer)
            trainer.test(model, datamodule=datamodule)
            metrics.update(trainer.callback_metrics)
        if trainer.is_global_zero:
            metrics = write_metrics(metrics, output_dir / METRICS_FILE)
        failed = False
    finally:
        if rank_zero_only.rank == 0 and datamodule.label_kind not in (None, OmegaConf.select(cfg, "label.kind")):
            # label=auto resolved at setup: the run directory records the kind trained from
            save_resolved_config(cfg, output_dir, datamodule.label_kind)
        finish_loggers(loggers, failed)
        release_distributed(trainer, failed)
    return metrics, {"trainer": trainer, "model": model, "datamodule": datamodule}


def _disk_full(err: BaseException | None) -> OSError | None:
    """The "no space left" / "quota exceeded" error behind `err` (itself, or what it was raised from or during)."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


def disk_full_message(output_dir: Path, err: OSError) -> str:
    """What a run that ran out of disk space tells its user: where, what is intact, how to go on."""
    last = output_dir / "checkpoints" / "last.ckpt"
    if last.is_file():
        hint = (f"the last complete checkpoint, {last}, and the label-bank round it trained against are intact: free "
                f"some space, then resume with the same overrides and ckpt_path={last}")
    else:
        hint = "no checkpoint was completed yet: free some space, then start the run again"
    return f"{os.strerror(err.errno)} while training into the run directory {output_dir}; {hint}"


def best_checkpoint(cfg: DictConfig) -> ModelCheckpoint | None:
    """`select=best`: keep the checkpoint of the best val/iou, measured on images held out of training.

    `select=last` (the default, the paper's protocol) tests the last epoch. A checkpoint is never chosen on
    the test split, so `best` needs `data.holdout.fraction > 0`.
    """
    select = cfg.get("select", "last")
    if select not in ("last", "best"):
        raise ValueError(f"select must be 'last' or 'best', got {select!r}")
    if select == "last":
        return None
    holdout = cfg.data.get("holdout") or {}
    fraction, split = holdout.get("fraction"), holdout.get("split")
    if not fraction or split is None:
        raise ValueError("select=best chooses the checkpoint by val/iou, which must not be measured on the test "
                         "split: set data.holdout.fraction > 0 (e.g. 0.1) to validate on images held out of "
                         f"training, with data.holdout.split=test (got data.holdout.fraction={fraction}, "
                         f"data.holdout.split={split})")
    # saved after validation only: without masks no validation runs, and nothing is saved or warned about
    return ModelCheckpoint(dirpath=Path(cfg.paths.output_dir) / "checkpoints", filename="best_epoch_{epoch:03d}",
                           monitor="val/iou", mode="max", save_top_k=1, auto_insert_metric_name=False,
                           save_on_train_epoch_end=False)


def load_selected(model: pl.LightningModule, best: ModelCheckpoint | None, trainer: pl.Trainer) -> dict[str, int]:
    """Put the selected weights into `model` for testing; returns `select/epoch` and `select/best` for metrics.json."""
    if best is None:
        return {"select/epoch": trainer.current_epoch - 1, "select/best": 0}
    if not best.best_model_path:
        raise ValueError("select=best: no validation epoch ran, so there is no best checkpoint "
                         "(see trainer.check_val_every_n_epoch)")
    checkpoint = load_torch_file(best.best_model_path, model.device)
    # the weights only: restoring the DataModule too would roll the label bank back to that epoch's round
    model.load_state_dict(checkpoint["state_dict"])
    log.info("testing %s (epoch %d, val/iou %.4f)", best.best_model_path, checkpoint["epoch"], best.best_model_score)
    return {"select/epoch": checkpoint["epoch"], "select/best": 1}


def optimized_value(metrics: dict[str, float], name: str | None) -> float | None:
    """The metric a sweeper (Optuna) optimises, `optimized_metric` in the config.

    A metric the run did not log, or logged as NaN, is an error: the sweeper records a failed trial, never a value
    that could become the best one."""
    if not name:
        return None
    value = float(metrics[name]) if name in metrics else math.nan
    if not math.isfinite(value):
        why = " (LESPS never evolved the labels, or the data has no masks)" if name.startswith("lesps/") else ""
        raise KeyError(f"optimized_metric={name!r} has no finite value in this run{why}; "
                       f"logged: {', '.join(sorted(metrics))}")
    return value
