"""scripts/bench_train.py and scripts/gpu_check.sh run end to end on a tiny synthetic set (the CPU path)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def cpu_only_environment() -> dict[str, str]:
    """No GPU visible (the CPU path also on a machine with one), one thread per process."""
    return {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1", "PY": sys.executable}


def bench_train(dataset: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "scripts/bench_train.py", "--data-root", str(dataset), "--patch-size", "32", "--batch", "4",
         "--threads", "1", "--workers", "0", "--backbones", "acm", "--json", str(out), *extra],
        cwd=REPO, env=cpu_only_environment(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def test_bench_train_times_irstd_against_the_plain_loop(tiny_dataset, tmp_path):
    out = tmp_path / "train.json"
    result = bench_train(tiny_dataset, out, "--epochs", "2", "--warmup", "1")
    assert "| acm | 2 |" in result.stdout and "irstd / plain" in result.stdout
    row = json.loads(out.read_text())["results"][0]
    for run in ("plain", "base"):
        assert len(row[run]["seconds"]) == 2 and all(s > 0 for s in row[run]["seconds"]), run
    assert row["base"]["checkpoints"] == [], "no checkpoint is written in the timed epochs"
    assert row["plain"]["steps"] == row["base"]["steps"] == 2  # 6 images, batches of 4 and 2


@pytest.mark.slow
def test_bench_train_lesps_levers_and_repeats(tiny_dataset, tmp_path):
    out = tmp_path / "train.json"
    levers = ("no_cache", "last_ckpt")
    result = bench_train(tiny_dataset, out, "--epochs", "3", "--warmup", "1", "--repeats", "2", "--lesps",
                         "--lesps-f", "2", "--levers", *levers)
    assert "epochs / hour" in result.stdout and "irstd, cached" in result.stdout
    data = json.loads(out.read_text())
    row = data["results"][0]
    # rounds at the ends of epochs 0 (warm-up) and 1 (f=2), in each of the 2 runs
    assert row["lesps_on"]["timed_rounds"] == [1, 0, 1, 0] and sum(row["lesps_off"]["timed_rounds"]) == 0
    assert all(len(row[run]["timed_seconds"]) == 2 * 2 and len(row[run]["repeats"]) == 2
               for run in ("plain", "base", *levers))
    assert row["last_ckpt"]["checkpoints"] == ["last.ckpt"]
    assert data["loading"]["images"] == 6


@pytest.mark.slow
def test_gpu_check_without_a_gpu_checks_the_cpu_halves_and_skips_cuda(tiny_dataset, tmp_path):
    env = {**cpu_only_environment(), "GPU_CHECK_LOGS": str(tmp_path / "logs")}
    result = subprocess.run(["bash", "scripts/gpu_check.sh", "--data-root", str(tiny_dataset), "--threads", "1"],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    rows = [line.split("|")[1:-1] for line in result.stdout.splitlines() if line.startswith("| ") and "---" not in line]
    table = {(cells[0].strip(), cells[1].strip()): cells[2].strip() for cells in rows[1:]}
    checks = ("components", "lesps_round", "bf16", "ddp", "bench_evolution", "bench_models", "bench_train")
    assert {check for check, _ in table} == set(checks)
    assert all(table[check, "cuda"] == "SKIPPED (no GPU)" for check in checks)
    assert all(table[check, "cpu"] == "PASS" for check in ("components", "lesps_round", "bf16", "ddp"))
