"""`irstd-degeneration`: the mapping-degeneration study (Fig. 2 on a real dataset, Fig. 5 on synthetic targets)."""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from irstd.config import CONFIG_PATH
from irstd.degeneration.study import run_study
from irstd.training.run_dir import save_resolved_config
from irstd.utils.device import resolve_device

log = logging.getLogger("irstd")


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="degeneration")
def main(cfg: DictConfig) -> None:
    out_dir = Path(cfg.paths.output_dir)
    try:
        save_resolved_config(cfg, out_dir)
        summary = run_study(OmegaConf.to_container(cfg, resolve=True), out_dir, resolve_device(cfg.device))
        fig2 = summary.get("fig2", {})
        for scheme in ("single", "many"):
            if scheme in fig2:
                log.info("Fig. 2 %s-sample: %.1f %% of %d images reach IoU > 0.5 (mean max IoU %.3f)", scheme,
                         100 * fig2[scheme]["fraction_best_iou_above_0.5"], fig2["images"],
                         fig2[scheme]["mean_best_iou"])
    finally:
        log.info("run directory: %s", out_dir)


if __name__ == "__main__":
    main()
