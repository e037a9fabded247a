"""`irstd-predict`: masks, probability maps, overlays and a detection table for new images."""

from __future__ import annotations

import logging

import hydra
from omegaconf import DictConfig

from irstd.config import CONFIG_PATH
from irstd.inference.tasks import predict

log = logging.getLogger("irstd")


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="predict")
def main(cfg: DictConfig) -> None:
    try:
        predict(cfg)
    finally:
        log.info("outputs: %s", cfg.output)


if __name__ == "__main__":
    main()
