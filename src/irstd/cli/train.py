"""`irstd-train`: train a detector; every output goes into one Hydra run directory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
from omegaconf import DictConfig

from irstd.cli import config_dir
from irstd.cli.common import finish_loggers, instantiate_group, log, save_resolved_config, seed, write_metrics
from irstd.data.datamodule import IRSTDDataModule


def train(cfg: DictConfig) -> tuple[dict[str, float], dict[str, Any]]:
    """Fit, then (unless `test=false`) evaluate the final weights on the test split.

    Kept apart from the Hydra entry point so tests and scripts call it with a composed config.
    """
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    save_resolved_config(cfg, output_dir)
    seed(cfg)

    datamodule: IRSTDDataModule = hydra.utils.instantiate(cfg.data, _convert_="all")
    if cfg.get("ckpt_path"):
        datamodule.adopt_label_bank(cfg.ckpt_path)
    model: pl.LightningModule = hydra.utils.instantiate(cfg.model, _convert_="partial")
    callbacks = instantiate_group(cfg.get("callbacks"), "callbacks")
    if cfg.get("lesps") and cfg.lesps.get("_target_"):
        callbacks.append(hydra.utils.instantiate(cfg.lesps))
    loggers = instantiate_group(cfg.get("logger"), "logger")
    trainer: pl.Trainer = hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)

    # loggers and DDP workers are released even when training fails, so the next job of a multirun starts clean
    try:
        trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
        metrics = dict(trainer.callback_metrics)
        if cfg.get("test"):
            trainer.test(model, datamodule=datamodule)
            metrics.update(trainer.callback_metrics)
        if trainer.is_global_zero:
            metrics = write_metrics(metrics, output_dir / "metrics.json")
    finally:
        finish_loggers(loggers)
    return metrics, {"trainer": trainer, "model": model, "datamodule": datamodule}


def optimized_value(metrics: dict[str, float], name: str | None) -> float | None:
    """The metric a sweeper (Optuna) optimises, `optimized_metric` in the config; an unknown name is an error."""
    if not name:
        return None
    if name not in metrics:
        raise KeyError(f"optimized_metric={name!r} was not logged by this run; logged: {', '.join(sorted(metrics))}")
    return float(metrics[name])


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="train")
def main(cfg: DictConfig) -> float | None:
    try:
        metrics, _ = train(cfg)
        shown = ", ".join(f"{k}={v:.4f}" for k, v in metrics.items() if k.startswith(("test/", "val/")))
        log.info("metrics: %s", shown or "none")
        return optimized_value(metrics, cfg.get("optimized_metric"))
    finally:
        log.info("run directory: %s", cfg.paths.output_dir)


if __name__ == "__main__":
    main()
