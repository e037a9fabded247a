"""Exact resume: a real training process is killed mid-run, resumed from its last checkpoint, and ends where an
uninterrupted run ends (weights, optimizer, LESPS state, label bank)."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import RESUME_EPOCHS as MAX_EPOCHS
from conftest import assert_ends_alike, clean_env, lesps_state, load_checkpoint, run_to_end, train_command
from conftest import exact_resume_overrides as overrides
from irstd.data.label_bank import LabelBank


def load(path: Path) -> dict | None:
    try:
        return load_checkpoint(path)
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


def test_a_killed_run_resumes_exactly(tiny_dataset, tmp_path):
    uninterrupted, killed, resumed = tmp_path / "uninterrupted", tmp_path / "killed", tmp_path / "resumed"
    run_to_end(overrides(tiny_dataset, uninterrupted), tmp_path)
    kill_after_round_and_more_training(overrides(tiny_dataset, killed), killed, tmp_path)

    # What the resume starts from: the last checkpoint the killed process completed.
    start = load_checkpoint(killed / "checkpoints" / "last.ckpt")
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

    # Every entry of the last checkpoint (weights, optimizer, scheduler, loops, LESPS state, RNG states) and the
    # label bank's current round are bit-equal to the uninterrupted run's.
    assert load_checkpoint(resumed / "checkpoints" / "last.ckpt")["epoch"] == MAX_EPOCHS - 1
    assert LabelBank(resumed / "label_bank").current_round() == 5
    assert_ends_alike(uninterrupted, resumed)


def test_generator_states_survive_a_checkpoint_file(tmp_path):
    """The states saved in a checkpoint restore the same draws of torch, NumPy and Python after torch.load with
    weights_only (what Lightning uses); on a GPU machine `make gpu-check`'s DDP row also loads them to CUDA."""
    import random

    import numpy as np
    import torch

    from irstd.training.module import rng_states, set_rng_states

    torch.save({"rng_states": rng_states()}, tmp_path / "states.pt")
    expected = (torch.rand(3), np.random.rand(3), random.random())
    set_rng_states(torch.load(tmp_path / "states.pt", weights_only=True)["rng_states"])
    again = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(expected[0], again[0])
    assert np.array_equal(expected[1], again[1])
    assert expected[2] == again[2]
