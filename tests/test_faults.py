"""Fault campaign: real training processes die at points drawn from every phase of training, or run out of disk
space, and a resume from the last checkpoint ends bit-equal to the uninterrupted run.

How a fault is injected: the training process (and its DDP ranks) starts with `tests/fault_hooks` first on
PYTHONPATH, whose `sitecustomize` wraps a few functions and, at the event the IRSTD_FAULT variable names, SIGKILLs
its own process or fills the simulated disk (see that module). The uninterrupted reference run records every event
it passes (IRSTD_FAULT_TRACE); the campaign draws its faults from those events with a seeded generator, so every
drawn fault is one the run reaches, and the same faults are drawn every time. The temporary folder (TMPDIR) is
simulated as another file system than the run directories' (as a tmpfs /tmp is), so a file staged there is copied
into place rather than renamed.

What must hold after each fault, before resuming: the last checkpoint (if any) is complete and readable, the label
bank's manifest and current round verify, and the checkpoint's round is still recorded in the bank; a full disk
stops training with an error that says so and how to resume. Then training resumes from `checkpoints/last.ckpt`
(in the same run directory or, as the docs describe, in a new one starting from a copy of the label bank; a run that
died before its first checkpoint starts over in its directory) and must end with the uninterrupted run's last
checkpoint in every entry (weights, optimizer, scheduler, loops, LESPS state, RNG states) and its label bank.

The fast test chains one fault of every kind through one training run; the slow ones draw SLOW_POINTS faults per
phase, each in a run of its own, and kill DDP ranks (`trainer=ddp_cpu`, 2 CPU processes) at barriers.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import (
    RESUME_EPOCHS,
    assert_ends_alike,
    clean_env,
    exact_resume_overrides,
    load_checkpoint,
    run_to_end,
    train_command,
)
from irstd.data.label_bank import LabelBank

HOOKS = Path(__file__).resolve().parent / "fault_hooks"
SEED = 19  # issue 19
KILL_PHASES = ("train_step", "evolve_forward", "manifest", "checkpoint")
SLOW_POINTS = 5
DDP_EPOCHS = 4
DDP_POINTS = 4
DDP = ("trainer=ddp_cpu",)


@dataclass(frozen=True)
class Fault:
    """One fault: a phase's `index`-th event of training epoch `epoch` on `rank` (see tests/fault_hooks)."""

    phase: str
    epoch: int
    index: int
    rank: int = 0
    bytes: int | None = None  # checkpoint: killed once this many bytes of the save are written
    file: str | None = None  # enospc: the run-directory file whose opening fills the disk ("checkpoints/...")

    def spec(self) -> str:
        return json.dumps({k: v for k, v in self.__dict__.items() if v is not None})

    def __str__(self) -> str:
        where = f"{self.phase} #{self.index} of epoch {self.epoch}" + (f" on rank {self.rank}" if self.rank else "")
        where += f" at {self.file}" if self.file is not None else ""
        return where + (f" after {self.bytes} bytes" if self.bytes is not None else "")


@dataclass(frozen=True)
class Sandbox:
    """Run directories on a simulated disk (`disk/`), TMPDIR (`tmp/`) simulated as another file system."""

    root: Path

    @property
    def disk(self) -> Path:
        return self.root / "disk"

    @property
    def tmp(self) -> Path:
        return self.root / "tmp"

    def make(self) -> Sandbox:
        self.disk.mkdir(parents=True, exist_ok=True)
        self.tmp.mkdir(parents=True, exist_ok=True)
        return self

    def env(self, **variables: str) -> dict[str, str]:
        """The hooks' environment: the simulated disk and TMPDIR, plus IRSTD_FAULT* `variables`."""
        path = os.pathsep.join([str(HOOKS), *filter(None, [os.environ.get("PYTHONPATH")])])
        return {"PYTHONPATH": path, "TMPDIR": str(self.tmp), "IRSTD_FAULT_DISK": str(self.disk),
                "IRSTD_FAULT_OTHER": str(self.tmp), **variables}


@dataclass
class Outcome:
    fault: Fault
    returncode: int
    stderr: str
    marks: list[dict]
    group_exited: bool  # every process of the job (DDP ranks too) ended by itself


def run_with_fault(args: list[str], sandbox: Sandbox, fault: Fault, cwd: Path, timeout: float = 300) -> Outcome:
    """Train in a fresh process group with `fault` armed; wait for the job's processes, kill what outlives it."""
    name = f"{fault.phase}_{fault.epoch}_{fault.index}_{fault.rank}_{time.monotonic_ns()}"
    mark, log = sandbox.root / f"{name}.mark", sandbox.root / f"{name}.stderr"
    env = clean_env(cwd, **sandbox.env(IRSTD_FAULT=fault.spec(), IRSTD_FAULT_MARK=str(mark)))
    with open(log, "w") as stderr:
        process = subprocess.Popen(train_command(args), cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=stderr,
                                   start_new_session=True)
    try:
        process.wait(timeout=timeout)
    finally:
        group_exited = _reap(process)
    marks = [json.loads(line) for line in mark.read_text().splitlines()] if mark.is_file() else []
    return Outcome(fault, process.returncode, log.read_text(), marks, group_exited)


def _reap(process: subprocess.Popen, grace_s: float = 60) -> bool:
    """Wait up to `grace_s` for the rest of the job's process group (DDP ranks) to exit, then SIGKILL it."""
    if process.poll() is None:
        process.kill()
        process.wait()
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        try:
            os.killpg(process.pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    os.killpg(process.pid, signal.SIGKILL)
    return False


def trace_reference(args: list[str], sandbox: Sandbox, cwd: Path) -> list[dict]:
    """Run to the end with the hooks tracing every event; the events."""
    trace = sandbox.root / "reference.trace"
    run_to_end(args, cwd, **sandbox.env(IRSTD_FAULT_TRACE=str(trace)))
    return [json.loads(line) for line in trace.read_text().splitlines()]


@pytest.fixture(scope="module")
def reference(tiny_dataset, tmp_path_factory) -> tuple[Path, list[dict]]:
    """The uninterrupted single-process run and the events it passed."""
    sandbox = Sandbox(tmp_path_factory.mktemp("faults_reference")).make()
    run_dir = sandbox.disk / "run"
    return run_dir, trace_reference(exact_resume_overrides(tiny_dataset, run_dir), sandbox, sandbox.root)


@pytest.fixture(scope="module")
def ddp_reference(tiny_dataset, tmp_path_factory) -> tuple[Path, list[dict]]:
    """The uninterrupted `trainer=ddp_cpu` run (2 processes) and the events its ranks passed."""
    sandbox = Sandbox(tmp_path_factory.mktemp("faults_ddp_reference")).make()
    run_dir = sandbox.disk / "run"
    args = [*exact_resume_overrides(tiny_dataset, run_dir, DDP_EPOCHS), *DDP]
    return run_dir, trace_reference(args, sandbox, sandbox.root)


def candidates(events: list[dict], phase: str, epochs: range | None = None, folders: tuple[str, ...] = ()
               ) -> list[Fault]:
    """Every fault of `phase` the traced run reaches (in `epochs`; writes into `folders` of the run directory);
    checkpoints: one per save, the bytes to be drawn."""
    traced = {"enospc": "write", "checkpoint": "checkpoint_bytes"}.get(phase, phase)
    faults = []
    for event in events:
        if event["phase"] != traced or (epochs is not None and event["epoch"] not in epochs):
            continue
        if folders and event["file"].split("/")[0] not in folders:
            continue
        if phase != "barrier" and event["rank"] != 0:
            continue
        if phase == "checkpoint" and not event["bytes"]:
            continue  # a rank that does not write
        faults.append(Fault(phase, event["epoch"], event["index"], event["rank"],
                            event["bytes"] if phase == "checkpoint" else None, event.get("file")))
    assert faults, f"the reference run passed no {phase} event in epochs {epochs}"
    return faults


def draw(rng: random.Random, events: list[dict], phase: str, count: int, epochs: range | None = None,
         folders: tuple[str, ...] = ()) -> list[Fault]:
    faults = rng.sample(candidates(events, phase, epochs, folders), count)
    # a checkpoint save is cut after a uniformly drawn number of its bytes (1 .. all of them)
    return [Fault(f.phase, f.epoch, f.index, f.rank, rng.randint(1, f.bytes)) if f.bytes else f for f in faults]


def check_after_fault(outcome: Outcome, run_dir: Path) -> dict | None:
    """The fault happened as drawn and left a consistent run directory; its last checkpoint, if any."""
    fault, log = outcome.fault, outcome.stderr[-4000:]
    assert outcome.marks, f"{fault}: the fault was never injected (rc {outcome.returncode}):\n{log}"
    assert outcome.marks[0].get("file") == fault.file, (str(fault), outcome.marks)
    assert outcome.group_exited, f"{fault}: processes of the job outlived it by a minute"
    if fault.phase == "enospc":
        assert outcome.returncode not in (0, -signal.SIGKILL), f"{fault}: rc {outcome.returncode}\n{log}"
    elif fault.rank == 0:
        assert outcome.returncode == -signal.SIGKILL, f"{fault}: rc {outcome.returncode}\n{log}"
    else:
        assert outcome.returncode != 0, f"{fault}: rank 0 ended well although rank {fault.rank} was killed"

    last = run_dir / "checkpoints" / "last.ckpt"
    checkpoint = None
    if last.exists():
        try:
            checkpoint = load_checkpoint(last)
        except Exception as err:  # noqa: BLE001 - any failure to read it is the finding
            pytest.fail(f"{fault}: {last} is not a complete checkpoint ({type(err).__name__}: {err}); a half-written "
                        f"checkpoint replaced the last good one")
        assert checkpoint["epoch"] <= max(fault.epoch, 0), f"{fault}: a checkpoint from after the fault"
    bank = LabelBank(run_dir / "label_bank")
    if bank.exists():
        bank.read_round()  # the manifest parses and the current round's file matches its checksum
        if checkpoint is not None:
            recorded = checkpoint["IRSTDDataModule"]["label_round"]
            assert recorded in bank.rounds() and recorded <= bank.current_round(), (fault, recorded, bank.rounds())
            bank.read_round(recorded)
    return checkpoint


def resume_args(data_root: Path, killed_dir: Path, resumed_dir: Path, extra: tuple[str, ...], epochs: int
                ) -> list[str]:
    """Resume from the killed run's last checkpoint into `resumed_dir`; without one, start over where it died."""
    last = killed_dir / "checkpoints" / "last.ckpt"
    if not last.exists():
        return [*exact_resume_overrides(data_root, killed_dir, epochs), *extra]
    return [*exact_resume_overrides(data_root, resumed_dir, epochs), *extra, f"ckpt_path={last}"]


def check_disk_full_error(outcome: Outcome, run_dir: Path) -> None:
    """A full disk stops training with an error that says so, names the run directory and how to go on."""
    message, full = outcome.stderr, Path(outcome.marks[0]["path"])
    if full.name == "train.log" or full.parent.name == ".hydra":
        # Hydra writes these before irstd's task starts, and reports a failure there itself
        assert "No space left on device" in message, message[-3000:]
        return
    assert f"No space left on device while training into the run directory {run_dir};" in message, message[-3000:]
    last = run_dir / "checkpoints" / "last.ckpt"
    hint = (f"free some space, then resume with the same overrides and ckpt_path={last}" if last.exists() else
            "no checkpoint was completed yet: free some space, then start the run again")
    assert hint in message, message[-3000:]


def fault_then_resume(fault: Fault, data_root: Path, reference_dir: Path, root: Path, in_place: bool,
                      extra: tuple[str, ...] = (), epochs: int = RESUME_EPOCHS) -> str:
    """A fresh run hit by `fault`, checked, resumed without faults, compared with the reference; what happened."""
    sandbox = Sandbox(root).make()
    killed = sandbox.disk / "killed"
    outcome = run_with_fault([*exact_resume_overrides(data_root, killed, epochs), *extra], sandbox, fault, root)
    checkpoint = check_after_fault(outcome, killed)
    if fault.phase == "enospc":
        check_disk_full_error(outcome, killed)
    finished = checkpoint is not None and checkpoint["epoch"] == epochs - 1  # a new directory would get no checkpoint
    resumed = killed if in_place or checkpoint is None or finished else sandbox.disk / "resumed"
    run_to_end(resume_args(data_root, killed, resumed, extra, epochs), root, TMPDIR=str(sandbox.tmp))
    assert_ends_alike(reference_dir, resumed)
    start = "start over" if checkpoint is None else f"resumed from epoch {checkpoint['epoch']}"
    return f"{fault}: rc {outcome.returncode}, {start} {'in place' if resumed == killed else 'in a new directory'}"


# ---- fast: one fault of every kind, chained through one training run -----------------------------------------------
def test_a_run_hit_by_every_kind_of_fault_in_turn_resumes_exactly(reference, tiny_dataset, tmp_path):
    """Epochs 0-1: killed in a training step; 2-3: in a round's prediction pass; 4-5: between a round's files and
    its manifest; 6-7: inside a checkpoint write; 8-9: the disk fills up while a checkpoint or a label-bank round is
    written. Each time the next process resumes from the last checkpoint (alternately in a new directory and in
    place), armed with the next fault; the last one runs to the end and must equal the uninterrupted run."""
    reference_dir, events = reference
    rng = random.Random(f"{SEED}-chain")
    sandbox = Sandbox(tmp_path).make()
    run_dir, args = sandbox.disk / "run0", exact_resume_overrides(tiny_dataset, sandbox.disk / "run0")
    for link, phase in enumerate((*KILL_PHASES, "enospc")):
        # the disk fills up while the state a resume needs is written: a checkpoint or a label-bank round
        folders = ("checkpoints", "label_bank") if phase == "enospc" else ()
        (fault,) = draw(rng, events, phase, 1, range(2 * link, 2 * link + 2), folders)
        outcome = run_with_fault(args, sandbox, fault, tmp_path)
        checkpoint = check_after_fault(outcome, run_dir)
        if phase == "enospc":
            check_disk_full_error(outcome, run_dir)
        last_epoch = -1 if checkpoint is None else checkpoint["epoch"]
        assert last_epoch < 2 * link + 2, (str(fault), last_epoch)
        print(f"{fault}: rc {outcome.returncode}, last checkpoint's epoch {last_epoch}")
        finished = last_epoch == RESUME_EPOCHS - 1  # a new directory would get no checkpoint at all
        resumed = run_dir if link % 2 or checkpoint is None or finished else sandbox.disk / f"run{link + 1}"
        args = resume_args(tiny_dataset, run_dir, resumed, (), RESUME_EPOCHS)
        run_dir = resumed
    run_to_end(args, tmp_path, TMPDIR=str(sandbox.tmp))
    assert_ends_alike(reference_dir, run_dir)


# ---- slow: many faults per phase, each in a run of its own -------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("point", range(SLOW_POINTS))
@pytest.mark.parametrize("phase", [*KILL_PHASES, "enospc"])
def test_faults_at_random_points_resume_exactly(phase, point, reference, tiny_dataset, tmp_path):
    reference_dir, events = reference
    rng = random.Random(f"{SEED}-{phase}")
    fault = draw(rng, events, phase, SLOW_POINTS)[point]
    print(fault_then_resume(fault, tiny_dataset, reference_dir, tmp_path, in_place=point % 2 == 0))


@pytest.mark.slow
@pytest.mark.parametrize("point", range(DDP_POINTS))
def test_ddp_ranks_killed_at_barriers_resume_exactly(point, ddp_reference, tiny_dataset, tmp_path):
    """Either rank SIGKILLed on entering a barrier: the other rank fails on the broken process group and the job
    ends (as a launcher would end it); the resumed 2-process run equals the uninterrupted one."""
    reference_dir, events = ddp_reference
    fault = draw(random.Random(f"{SEED}-barrier"), events, "barrier", DDP_POINTS)[point]
    print(fault_then_resume(fault, tiny_dataset, reference_dir, tmp_path, point % 2 == 0, DDP, DDP_EPOCHS))
