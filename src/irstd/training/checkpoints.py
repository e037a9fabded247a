"""Checkpoints: the one a run resumes from (written every epoch), and reading ours back with clear errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from fsspec.core import url_to_fs
from fsspec.implementations.local import LocalFileSystem
from lightning_fabric.plugins import TorchCheckpointIO
from pytorch_lightning.callbacks import ModelCheckpoint

from irstd.data.datamodule import IRSTDDataModule
from irstd.utils.files import atomic_write, load_torch_file


class LastCheckpoint(ModelCheckpoint):
    """`checkpoints/last.ckpt` after every training epoch, after that epoch's LESPS round.

    Lightning's `save_last` writes only when another checkpoint is saved (every 50 epochs here); this one writes
    every epoch, atomically (through `AtomicCheckpointIO`, which `irstd-train` installs), so a killed run always
    leaves a complete checkpoint. Its own class keeps its checkpoint state apart from the periodic snapshots' even
    when both run every epoch.
    """

    def __init__(self, dirpath: str, **kwargs: Any) -> None:
        super().__init__(dirpath=dirpath, filename="last", save_top_k=1, every_n_epochs=1,
                         save_on_train_epoch_end=True, enable_version_counter=False, **kwargs)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer, made atomic on any local file system: the checkpoint is written to a temporary
    file beside its path, flushed, then renamed over it (`irstd.utils.files.atomic_write`).

    Lightning's own writer stages the bytes in the system's temporary folder and moves them into place. When that
    folder is on another file system than the run (a tmpfs /tmp, a node-local disk), the move is a copy into the
    checkpoint's own path, so a run killed, or out of disk space, during the copy leaves a truncated `last.ckpt` in
    place of the last good one (tests/test_faults.py). Remote paths (s3://...) are written as Lightning writes them.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        fs, local_path = url_to_fs(str(path))
        if storage_options is not None or not isinstance(fs, LocalFileSystem):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        target = Path(local_path)
        for stale in target.parent.glob(f".{target.name}.*.tmp"):  # left by a writer that was killed
            stale.unlink(missing_ok=True)
        with atomic_write(target, "wb") as handle:
            torch.save(checkpoint, handle)


def use_atomic_checkpoints(trainer: pl.Trainer) -> None:
    """Save this trainer's checkpoints with `AtomicCheckpointIO`, unless the config chose a checkpoint writer."""
    if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:
        trainer.strategy.checkpoint_io = AtomicCheckpointIO()


def read_checkpoint(ckpt_path: str | Path) -> dict[str, Any]:
    """A checkpoint irstd-train wrote; any other file is a ValueError naming it and saying what to give instead."""
    ours = "give a checkpoint irstd-train wrote (RUN/checkpoints/last.ckpt)"
    try:
        checkpoint = load_torch_file(ckpt_path)
    except Exception as err:  # a foreign file fails in pickle, zip, EOF or runtime errors alike
        raise ValueError(f"ckpt_path={ckpt_path} is not a PyTorch checkpoint ({type(err).__name__}: {err}); "
                         f"{ours}") from err
    if not isinstance(checkpoint, dict) or "pytorch-lightning_version" not in checkpoint \
            or "backbone" not in checkpoint.get("hyper_parameters", {}):
        released = isinstance(checkpoint, dict) and "state_dict" in checkpoint
        hint = ("it holds bare weights (a released .pth.tar?): load them with model=NAME model.weights="
                f"{ckpt_path} data.mean=M data.std=S" if released else ours)
        raise ValueError(f"ckpt_path={ckpt_path} is not an irstd training checkpoint; {hint}")
    return checkpoint


def checkpoint_normalization(ckpt_path: str | Path) -> tuple[float, float]:
    """The training statistics a checkpoint of ours carries in its DataModule state."""
    checkpoint = read_checkpoint(ckpt_path)
    state = checkpoint.get(IRSTDDataModule.__qualname__)
    if not state or state.get("mean") is None:
        raise ValueError(f"checkpoint {ckpt_path} carries no normalisation statistics; "
                         "set data.mean and data.std (native image units)")
    return float(state["mean"]), float(state["std"])
