"""`irstd-export`: write a checkpoint or released weights as an ONNX or TorchScript file."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from irstd.config import CONFIG_PATH
from irstd.inference.tasks import export


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="export")
def main(cfg: DictConfig) -> None:
    print(export(cfg))


if __name__ == "__main__":
    main()
