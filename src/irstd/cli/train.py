"""`irstd-train`: train a detector; every output goes into one Hydra run directory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
from omegaconf import DictConfig

from irstd.cli import config_dir
from irstd.cli.common import instantiate_group, log, save_resolved_config, seed, write_metrics
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

    trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    metrics = dict(trainer.callback_metrics)
    if cfg.get("test"):
        trainer.test(model, datamodule=datamodule)
        metrics.update(trainer.callback_metrics)
    metrics = write_metrics(metrics, output_dir / "metrics.json")
    return metrics, {"trainer": trainer, "model": model, "datamodule": datamodule}


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="train")
def main(cfg: DictConfig) -> None:
    try:
        metrics, _ = train(cfg)
        shown = ", ".join(f"{k}={v:.4f}" for k, v in metrics.items() if k.startswith(("test/", "val/")))
        log.info("metrics: %s", shown or "none")
    finally:
        log.info("run directory: %s", cfg.paths.output_dir)


if __name__ == "__main__":
    main()
