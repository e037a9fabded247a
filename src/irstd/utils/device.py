"""Picking the device a task runs on."""

from __future__ import annotations

import torch


def resolve_device(name: str) -> torch.device:
    """`auto` (CUDA when present, else CPU), `cpu` or `cuda`; asking for a missing CUDA device is an error."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={name}: no CUDA device is available")
    return torch.device(name)
