"""Exact resume: a real training process is killed mid-run, resumed from its last checkpoint, and ends where an
uninterrupted run ends (weights, optimizer, LESPS state, label bank)."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import tiny_train_overrides
from irstd.data.label_bank import LabelBank

MAX_EPOCHS = 10


def overrides(data_root: Path, run_dir: Path) -> list[str]:
    """LESPS rounds at epochs 1, 3, 5, 7, 9; the LR drops at epochs 4 and 8; deterministic kernels."""
    return [*tiny_train_overrides(data_root, label="centroid", lesps="default"),
            "start=epoch", "start.Tepoch=1", "label_update.f=2", f"trainer.max_epochs={MAX_EPOCHS}",
            "trainer.check_val_every_n_epoch=5", "trainer.deterministic=true", "model.scheduler.milestones=[4,8]",
            f"hydra.run.dir={run_dir}"]


def train_command(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "irstd.cli.train", *args]


def clean_env(cwd: Path) -> dict[str, str]:
    env = {**os.environ, "IRSTD_ROOT": str(cwd)}
    for name in ("LOCAL_RANK", "WORLD_SIZE", "NODE_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    return env


def run_to_end(args: list[str], cwd: Path) -> None:
    result = subprocess.run(train_command(args), cwd=cwd, env=clean_env(cwd), capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-5000:]


def load(path: Path) -> dict | None:
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception:  # being written right now: look again
        return None


def kill_after_round_and_more_training(args: list[str], run_dir: Path, cwd: Path) -> dict:
    """Start training, SIGKILL it once its last checkpoint is past the first LESPS round; that checkpoint."""
    process = subprocess.Popen(train_command(args), cwd=cwd, env=clean_env(cwd), stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    last = run_dir / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline:
            checkpoint = load(last) if last.is_file() else None
            if checkpoint is not None and checkpoint["epoch"] >= 2:
                os.kill(process.pid, signal.SIGKILL)
                break
            assert process.poll() is None, f"training ended before it could be killed: {process.stderr.read()[-3000:]}"
            time.sleep(0.02)
        else:
            pytest.fail("no checkpoint past the first round within 240 s")
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()
        process.stderr.close()
    assert process.returncode == -signal.SIGKILL
    return checkpoint


def lesps_state(checkpoint: dict) -> dict:
    return next(state for key, state in checkpoint["callbacks"].items() if key.startswith("LESPSCallback"))


def test_a_killed_run_resumes_exactly(tiny_dataset, tmp_path):
    uninterrupted, killed, resumed = tmp_path / "uninterrupted", tmp_path / "killed", tmp_path / "resumed"
    run_to_end(overrides(tiny_dataset, uninterrupted), tmp_path)
    kill_after_round_and_more_training(overrides(tiny_dataset, killed), killed, tmp_path)

    # What the resume starts from: the last checkpoint the killed process completed.
    start = torch.load(killed / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert MAX_EPOCHS - 1 > start["epoch"] >= 2
    start_lesps = lesps_state(start)
    assert start_lesps["started"] and start_lesps["start_epoch"] == 1
    start_round = start["IRSTDDataModule"]["label_round"]
    assert start_round == start_lesps["rounds_done"] == 1 + (start["epoch"] - 1) // 2

    run_to_end([*overrides(tiny_dataset, resumed), f"ckpt_path={killed / 'checkpoints' / 'last.ckpt'}"], tmp_path)

    # The resumed run continued from the checkpoint's epoch and round: its own rounds are the later ones.
    rounds = [line.split(",")[:2] for line in (resumed / "lesps_rounds.csv").read_text().splitlines()[1:]]
    assert [int(r) for r, _ in rounds] == list(range(start_round + 1, 6))
    assert all(int(epoch) > start["epoch"] for _, epoch in rounds)
    with open(resumed / "csv" / "metrics.csv") as handle:
        epochs = sorted({int(row["epoch"]) for row in csv.DictReader(handle) if row["train/loss_epoch"]})
    assert epochs[0] == start["epoch"] + 1 and epochs[-1] == MAX_EPOCHS - 1

    reference = torch.load(uninterrupted / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    final = torch.load(resumed / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert final["epoch"] == reference["epoch"] == MAX_EPOCHS - 1
    assert final["global_step"] == reference["global_step"]
    for name, tensor in reference["state_dict"].items():
        assert torch.equal(final["state_dict"][name], tensor), name
    reference_adam = reference["optimizer_states"][0]["state"]
    final_adam = final["optimizer_states"][0]["state"]
    for index, state in reference_adam.items():
        for key, value in state.items():
            assert torch.equal(final_adam[index][key], value), (index, key)
    assert final["lr_schedulers"][0]["last_epoch"] == reference["lr_schedulers"][0]["last_epoch"]
    assert final["lr_schedulers"][0]["_last_lr"] == reference["lr_schedulers"][0]["_last_lr"]
    assert lesps_state(final) == lesps_state(reference)

    reference_bank, final_bank = LabelBank(uninterrupted / "label_bank"), LabelBank(resumed / "label_bank")
    assert final_bank.current_round() == reference_bank.current_round() == 5
    expected, got = reference_bank.read_round(), final_bank.read_round()
    assert sorted(expected) == sorted(got)
    for name in expected:
        assert np.array_equal(expected[name], got[name]), name
