"""`irstd-export`: write a checkpoint or released weights as an ONNX or TorchScript file (see `irstd.export`)."""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

from irstd.cli import config_dir
from irstd.cli.common import log, reject_classic_detector, save_resolved_config
from irstd.cli.eval import load_model
from irstd.export import FORMATS, check_format, export_metadata, export_model


def export(cfg: DictConfig) -> Path:
    """Export the model `cfg` names; returns the written file."""
    check_format(cfg.format)
    reject_classic_detector(cfg, "irstd-export")
    given = [key for key in ("ckpt_path", "model") if cfg.get(key)]
    if len(given) != 1:
        raise ValueError("irstd-export needs exactly one of ckpt_path=... or model=NAME model.weights=PATH; "
                         f"got {given or 'none'}")
    if (cfg.data.mean is None) != (cfg.data.std is None):
        raise ValueError("give data.mean and data.std together (native image units), or neither")
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    save_resolved_config(cfg, output_dir)
    name, module, normalization = load_model(cfg)
    mean, std = normalization.get("mean", cfg.data.mean), normalization.get("std", cfg.data.std)
    source = Path(cfg.ckpt_path or cfg.model.weights).name
    metadata = export_metadata(module.hparams.backbone, mean, std, module.hparams.threshold, source)
    output = Path(cfg.output) if cfg.output else output_dir / f"{name}{FORMATS[cfg.format]}"
    export_model(module.net, output, cfg.format, metadata, opset=cfg.opset)
    log.info("exported %s (%s, mean %s, std %s) to %s", source, cfg.format, metadata["mean"], metadata["std"], output)
    return output


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="export")
def main(cfg: DictConfig) -> None:
    print(export(cfg))


if __name__ == "__main__":
    main()
