"""What the benchmarks share: one measurement in a fresh interpreter, so its peak memory is its own."""

from __future__ import annotations

import json
import os
import subprocess
import sys


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
