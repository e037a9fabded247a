"""`irstd-eval`: evaluate a checkpoint on a dataset's test split."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig

from irstd.cli import config_dir
from irstd.cli.common import log, save_resolved_config, seed, write_metrics
from irstd.data.datamodule import IRSTDDataModule
from irstd.module import IRSTDModule


def checkpoint_normalization(ckpt_path: str | Path) -> tuple[float, float]:
    """The training statistics a checkpoint of ours carries in its DataModule state."""
    checkpoint = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    state = checkpoint.get(IRSTDDataModule.__qualname__)
    if not state or state.get("mean") is None:
        raise ValueError(f"checkpoint {ckpt_path} carries no normalisation statistics; "
                         "set data.mean and data.std (native image units)")
    return float(state["mean"]), float(state["std"])


def evaluate(cfg: DictConfig) -> tuple[dict[str, float], dict[str, Any]]:
    ckpt_path = Path(cfg.ckpt_path)
    if not ckpt_path.is_file():
        raise FileNotFoundError(f"ckpt_path={ckpt_path} does not exist")
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    save_resolved_config(cfg, output_dir)
    seed(cfg)

    overrides = {}
    if cfg.data.get("mean") is None:
        overrides["mean"], overrides["std"] = checkpoint_normalization(ckpt_path)
    datamodule: pl.LightningDataModule = hydra.utils.instantiate(cfg.data, _convert_="all", **overrides)
    model = IRSTDModule.load_from_checkpoint(ckpt_path, map_location="cpu")
    trainer: pl.Trainer = hydra.utils.instantiate(cfg.trainer, logger=False, callbacks=[])
    trainer.test(model, datamodule=datamodule)
    metrics = write_metrics(trainer.callback_metrics, output_dir / "metrics.json")
    return metrics, {"trainer": trainer, "model": model, "datamodule": datamodule}


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="eval")
def main(cfg: DictConfig) -> None:
    try:
        metrics, _ = evaluate(cfg)
        log.info("metrics: %s", ", ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
    finally:
        log.info("run directory: %s", cfg.paths.output_dir)


if __name__ == "__main__":
    main()
