"""`irstd-eval`: score a checkpoint, released weights, saved predictions or a training-free detector on a test split."""

from __future__ import annotations

import logging

import hydra
from omegaconf import DictConfig

from irstd.config import CONFIG_PATH
from irstd.inference.tasks import evaluate

log = logging.getLogger("irstd")


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="eval")
def main(cfg: DictConfig) -> None:
    try:
        evaluate(cfg)
    finally:
        log.info("run directory: %s", cfg.paths.output_dir)


if __name__ == "__main__":
    main()
