"""Test-only fault injection for `tests/test_faults.py`, loaded into `irstd-train` processes as `sitecustomize`.

The fault campaign puts this folder first on PYTHONPATH of the training processes it starts (DDP ranks inherit it),
so Python imports this module at start-up. It does nothing unless IRSTD_FAULT or IRSTD_FAULT_TRACE is set:

IRSTD_FAULT        one fault as a JSON object {"phase": P, "epoch": E, "index": I, "rank": R, ...}: the process of
                   rank R (default 0) SIGKILLs itself at the I-th event (1-based) of phase P during training epoch E
                   (-1: before the first training step). Phase "enospc" fills the simulated disk at the "write" event
                   instead; phase "checkpoint" kills once "bytes" bytes of that checkpoint save are written.
IRSTD_FAULT_MARK   where the fault is recorded (one JSON line) the moment it takes effect.
IRSTD_FAULT_TRACE  where every event is recorded, one JSON line each: the campaign runs its uninterrupted reference
                   runs with a trace and draws its faults from the events they recorded.
IRSTD_FAULT_DISK   the simulated disk: folders (os.pathsep-separated) on one file system that can fill up.
IRSTD_FAULT_OTHER  the temporary folder (TMPDIR), simulated as another file system: a rename from it onto the disk
                   fails with EXDEV, as from a tmpfs /tmp, so a file staged there is copied into place instead.

Events (the epoch is that of the latest training step this process ran):

train_step      inside a training step: after the forward pass and the loss, before the backward pass.
evolve_forward  inside a label-update round's prediction pass, after the I-th batch's forward.
manifest        a label-bank round is written and flushed, and so is its new manifest, which is about to be
                renamed over the old one (the last moment before the round is published).
checkpoint      a checkpoint save (Trainer.save_checkpoint); the trace records the bytes the save wrote into files
                (`checkpoint_bytes`), and the kill happens inside the write that reaches byte "bytes".
barrier         entering the I-th DDP barrier of the epoch (on rank R).
write           the I-th opening for writing, in epoch E, of the run-directory file "file" (relative to the run
                directory, a temporary name's random part as `*`: "label_bank/.round_0003.npz.*.tmp") on the
                simulated disk. With "enospc" the disk is full from then on: the open succeeds and every later write
                into the disk fails with ENOSPC, as on a full file system.
"""

from __future__ import annotations

import builtins
import errno
import json
import os
import re
import shutil
import signal
from pathlib import Path

_SPEC = json.loads(os.environ["IRSTD_FAULT"]) if os.environ.get("IRSTD_FAULT") else None
_TRACE = os.environ.get("IRSTD_FAULT_TRACE")
_MARK = os.environ.get("IRSTD_FAULT_MARK")


def _folders(name: str) -> list[str]:
    return [os.path.realpath(p) for p in os.environ.get(name, "").split(os.pathsep) if p]


_DISK = _folders("IRSTD_FAULT_DISK")
_OTHER = _folders("IRSTD_FAULT_OTHER")
_open, _fdopen, _replace, _rename = builtins.open, os.fdopen, os.replace, os.rename


class _State:
    epoch = -1
    in_round = False
    disk_full = False
    saving = False
    saved_bytes = 0
    kill_at_byte: int | None = None
    kill_event: dict | None = None
    counts: dict[tuple[str, int, str | None], int] = {}


def _rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))  # one node: the local rank is the global rank


def _record(path: str | None, event: dict) -> None:
    if path:
        with _open(path, "a") as handle:
            handle.write(json.dumps(event) + "\n")


def _event(phase: str, file: str | None = None, **detail) -> dict | None:
    """Count and trace an event (writes: counted per file); the event if it is the one the fault spec names."""
    key = (phase, _State.epoch, file)
    _State.counts[key] = index = _State.counts.get(key, 0) + 1
    event = {"phase": phase, "epoch": _State.epoch, "index": index, "rank": _rank(), **detail}
    if file is not None:
        event["file"] = file
    _record(_TRACE, event)
    if _SPEC is None or _State.disk_full:
        return None
    target = "write" if _SPEC["phase"] == "enospc" else _SPEC["phase"]
    named = (target, _SPEC["epoch"], _SPEC.get("file"), _SPEC["index"], _SPEC.get("rank", 0))
    return event if named == (phase, _State.epoch, file, index, _rank()) else None


def _fault(event: dict, **detail) -> None:
    """Record the fault; SIGKILL this process unless the fault is a full disk."""
    _record(_MARK, {**event, **detail, "fault": _SPEC["phase"], "pid": os.getpid()})
    if _SPEC["phase"] == "enospc":
        _State.disk_full = True
    else:
        os.kill(os.getpid(), signal.SIGKILL)


def _under(path, roots: list[str]) -> bool:
    try:
        real = os.path.realpath(os.fspath(path))
    except TypeError:
        return False
    return any(real == root or real.startswith(root + os.sep) for root in roots)


class _File:
    """A file opened for writing on the simulated disk or in the temporary folder."""

    def __init__(self, handle, on_disk: bool):
        self._handle, self._on_disk = handle, on_disk

    def write(self, data):
        if self._on_disk and _State.disk_full and len(data):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        if _State.saving:
            if _State.kill_at_byte is not None and _State.saved_bytes + len(data) >= _State.kill_at_byte:
                self._handle.write(data[: _State.kill_at_byte - _State.saved_bytes])
                self._handle.flush()
                _fault(_State.kill_event, written=_State.kill_at_byte, written_to=str(self._handle.name))
            _State.saved_bytes += len(data)
        return self._handle.write(data)

    def writelines(self, lines):
        for line in lines:
            self.write(line)

    def __enter__(self):
        self._handle.__enter__()
        return self

    def __exit__(self, *exc):
        return self._handle.__exit__(*exc)

    def __iter__(self):
        return iter(self._handle)

    def __getattr__(self, name):
        return getattr(self._handle, name)


def _opened(handle, path, mode):
    if not (isinstance(mode, str) and any(flag in mode for flag in "wax+")):
        return handle
    on_disk = _under(path, _DISK)
    if not (on_disk or _under(path, _OTHER)):
        return handle
    if on_disk:
        event = _event("write", _file_key(path), path=os.fspath(path))
        if event is not None:
            _fault(event)
    return _File(handle, on_disk)


def _file_key(path) -> str:
    """Which file of a run directory `path` is, the same in every run: relative to the run directory (a folder of
    the disk), a temporary name's random part as `*` (`label_bank/.round_0001.npz.*.tmp`)."""
    real = os.path.realpath(os.fspath(path))
    root = next(root for root in _DISK if real == root or real.startswith(root + os.sep))
    parts = Path(os.path.relpath(real, root)).parts[1:]
    name = re.sub(r"^(\..+)\.[^.]+\.tmp$", r"\1.*.tmp", parts[-1]) if parts else ""
    return "/".join([*parts[:-1], name])


def _open_hook(file, mode="r", *args, **kwargs):
    return _opened(_open(file, mode, *args, **kwargs), None if isinstance(file, int) else file, mode)


def _fdopen_hook(fd, mode="r", *args, **kwargs):
    handle = _fdopen(fd, mode, *args, **kwargs)
    try:
        path = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return handle
    return _opened(handle, path, mode)


def _replace_hook(src, dst, *args, **kwargs):
    if Path(os.fspath(dst)).name == "manifest.json":
        event = _event("manifest")
        if event is not None:
            _fault(event)
    return _replace(src, dst, *args, **kwargs)


def _rename_hook(src, dst, *args, **kwargs):
    if _under(src, _OTHER) and not _under(dst, _OTHER):
        raise OSError(errno.EXDEV, os.strerror(errno.EXDEV), os.fspath(src), None, os.fspath(dst))
    return _rename(src, dst, *args, **kwargs)


def _install() -> None:
    from pytorch_lightning import Trainer
    from pytorch_lightning.strategies import DDPStrategy

    from irstd.lesps.callback import LabelUpdateCallback
    from irstd.training.module import IRSTDModule

    training_step = IRSTDModule.training_step

    def training_step_hook(self, batch, batch_idx):
        _State.epoch = self.current_epoch
        loss = training_step(self, batch, batch_idx)
        event = _event("train_step")
        if event is not None:
            _fault(event)
        return loss

    evolve_samples = LabelUpdateCallback.evolve_samples

    def evolve_samples_hook(self, *args, **kwargs):
        _State.in_round = True
        try:
            return evolve_samples(self, *args, **kwargs)
        finally:
            _State.in_round = False

    final_logits = IRSTDModule.final_logits

    def final_logits_hook(self, image):
        logits = final_logits(self, image)
        if _State.in_round:
            event = _event("evolve_forward")
            if event is not None:
                _fault(event)
        return logits

    save_checkpoint = Trainer.save_checkpoint

    def save_checkpoint_hook(self, *args, **kwargs):
        event = _event("checkpoint")
        _State.saving, _State.saved_bytes = True, 0
        _State.kill_at_byte = _SPEC["bytes"] if event is not None else None
        _State.kill_event = event
        try:
            return save_checkpoint(self, *args, **kwargs)
        finally:
            _State.saving = False
            _record(_TRACE, {"phase": "checkpoint_bytes", "epoch": _State.epoch,
                             "index": _State.counts[("checkpoint", _State.epoch, None)], "rank": _rank(),
                             "bytes": _State.saved_bytes})

    barrier = DDPStrategy.barrier

    def barrier_hook(self, *args, **kwargs):
        event = _event("barrier")
        if event is not None:
            _fault(event)
        return barrier(self, *args, **kwargs)

    IRSTDModule.training_step = training_step_hook
    LabelUpdateCallback.evolve_samples = evolve_samples_hook
    IRSTDModule.final_logits = final_logits_hook
    Trainer.save_checkpoint = save_checkpoint_hook
    DDPStrategy.barrier = barrier_hook
    os.replace = _replace_hook
    builtins.open = _open_hook
    os.fdopen = _fdopen_hook
    if _OTHER:
        os.rename = _rename_hook
        shutil._USE_CP_SENDFILE = False  # copies go through Python's writes, which the hooks see


if _SPEC is not None or _TRACE:
    _install()
