"""What every Hydra task does around its body: seeding, instantiation, the run directory."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf

from irstd.fsutil import write_text_atomic

log = logging.getLogger("irstd")


def instantiate_group(cfg: DictConfig | None, kind: str) -> list[Any]:
    """Instantiate every `_target_` entry of a config group such as `callbacks` or `logger`."""
    objects: list[Any] = []
    if not cfg:
        return objects
    if not isinstance(cfg, DictConfig):
        raise TypeError(f"config group {kind!r} must be a mapping of name -> {{_target_: ...}}")
    for name, entry in cfg.items():
        if isinstance(entry, DictConfig) and "_target_" in entry:
            objects.append(hydra.utils.instantiate(entry))
        elif entry is not None:
            raise TypeError(f"{kind}.{name} has no _target_; every entry of {kind} must name a class")
    return objects


def reject_classic_detector(cfg: DictConfig, tool: str) -> None:
    """Training-free detectors (`model=tophat` ...) only go through irstd-eval; say so instead of failing later."""
    model = cfg.get("model")
    if isinstance(model, DictConfig) and model.get("classic"):
        raise ValueError(f"model={model.classic.name} is a training-free detector: score it with irstd-eval "
                         f"(irstd-eval model={model.classic.name} data=...); {tool} works with networks only")


def finish_loggers(loggers: list[Any], failed: bool = False) -> None:
    """Close every logger's run (a wandb run per job of a multirun, not one swallowing the sweep); a failed job's
    wandb run is marked failed, not finished."""
    for logger in loggers:
        logger.finalize("failed" if failed else "success")
        if type(logger).__name__ == "WandbLogger":
            import wandb

            wandb.finish(exit_code=1 if failed else 0)


def save_resolved_config(cfg: DictConfig, output_dir: Path) -> Path:
    path = output_dir / "config_resolved.yaml"
    write_text_atomic(path, OmegaConf.to_yaml(cfg, resolve=True))
    return path


def to_number(value: Any) -> float | int | None:
    if isinstance(value, torch.Tensor):
        value = value.item()
    if isinstance(value, (int, float)) and (isinstance(value, int) or math.isfinite(value)):
        return value
    return None


def write_metrics(metrics: Mapping[str, Any], path: Path) -> dict[str, float]:
    clean = {key: number for key, value in sorted(metrics.items())
             if (number := to_number(value)) is not None}
    write_text_atomic(path, json.dumps(clean, indent=2) + "\n")
    return clean


def seed(cfg: DictConfig) -> None:
    if cfg.get("seed") is not None:
        pl.seed_everything(cfg.seed, workers=True)


def resolve_device(name: str) -> torch.device:
    """`auto` (CUDA when present, else CPU), `cpu` or `cuda`; asking for a missing CUDA device is an error."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={name}: no CUDA device is available")
    return torch.device(name)
