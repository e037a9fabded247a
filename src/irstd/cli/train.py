"""`irstd-train`: train a detector; every output goes into one Hydra run directory (see irstd.training.run)."""

from __future__ import annotations

import logging

import hydra
from omegaconf import DictConfig

from irstd.config import CONFIG_PATH
from irstd.training.run import optimized_value, train

log = logging.getLogger("irstd")


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="train")
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
