"""What the benchmarks share: one measurement in a fresh interpreter, so its peak memory is its own, and wall-clock
times that wait for the GPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
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
