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


def save_resolved_config(cfg: DictConfig, output_dir: Path, label_kind: str | None = None) -> Path:
    """Write the resolved config; `label_kind`: the kind the data module trains from (what `label=auto` became)."""
    path = output_dir / RESOLVED_CONFIG_FILE
    config = with_label_kind(OmegaConf.to_container(cfg, resolve=True), label_kind)
    write_text_atomic(path, OmegaConf.to_yaml(config))
    return path


def with_label_kind(config: dict[str, Any], kind: str | None) -> dict[str, Any]:
    """A resolved config (a dict) with the label kind trained from in `label.kind` and `data.label`, and the kind
    asked for (`auto`) in `label.requested`; unchanged when they agree or `kind` is None (not resolved yet)."""
    label = config.get("label")
    if kind is None or not isinstance(label, dict) or label.get("kind") == kind:
        return config
    label = {**label, "kind": kind, "requested": label.get("kind")}
    data = config.get("data")
    if isinstance(data, dict):
        # data.label_options is the whole label node
        options = {"label_options": label} if isinstance(data.get("label_options"), dict) else {}
        data = {**data, "label": kind, **options}
    return {**config, "label": label, "data": data}


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
