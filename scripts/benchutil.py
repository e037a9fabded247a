"""What the benchmarks share: one measurement in a fresh interpreter, so its peak memory is its own, and wall-clock
times that wait for the GPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch


def run_measurement(command: list[str], label: str) -> dict | None:
    """Run a worker command that prints its result as JSON on its last line; None (stderr shown) when it fails."""
    load_before = os.getloadavg()[0]
    proc = subprocess.run(command, capture_output=True, text=True)
    if proc.returncode != 0:
        print(f"# {label}: worker failed (exit {proc.returncode}): {proc.stderr.strip()[-500:]}", file=sys.stderr)
        return None
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    # other processes on the cores skew the times (and oversubscribed torch threads skew them a lot): record it
    result["load_1m"] = [load_before, os.getloadavg()[0]]
    return result


def wall_times(fn: Callable[[], Any], repeats: int, device: torch.device) -> tuple[list[float], Any]:
    """Seconds of each of `repeats` calls of `fn` (CUDA work waited for), and the last call's result."""
    times, result = [], None
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        result = fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return times, result


def best_time(fn: Callable[[], Any], repeats: int, device: torch.device) -> float:
    """The fastest of `repeats` calls of `fn`, in seconds."""
    return min(wall_times(fn, repeats, device)[0])


def compose_config(name: str, output_dir: str | Path, overrides: list[str]):
    """Compose a shipped entry config as `irstd-train` composes it (the Hydra config included), rooted in
    `output_dir`, as tests/conftest.py does; the caller clears Hydra's global state when done."""
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from irstd.config import CONFIG_MODULE

    GlobalHydra.instance().clear()
    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        cfg = compose(config_name=name, return_hydra_config=True, overrides=overrides)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(output_dir)
        cfg.hydra.job.num = 0
    HydraConfig().set_config(cfg)
    return cfg
