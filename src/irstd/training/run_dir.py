"""What every task writes into its Hydra run directory, and how it seeds itself."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf

from irstd.utils.files import write_text_atomic
from irstd.utils.run_layout import RESOLVED_CONFIG_FILE


def save_resolved_config(cfg: DictConfig, output_dir: Path) -> Path:
    path = output_dir / RESOLVED_CONFIG_FILE
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


def seed_from_config(cfg: DictConfig) -> None:
    if cfg.get("seed") is not None:
        pl.seed_everything(cfg.seed, workers=True)
