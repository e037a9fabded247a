"""The checkpoint a run resumes from."""

from __future__ import annotations

from typing import Any

from pytorch_lightning.callbacks import ModelCheckpoint


class LastCheckpoint(ModelCheckpoint):
    """`checkpoints/last.ckpt` after every training epoch, after that epoch's LESPS round.

    Lightning's `save_last` writes only when another checkpoint is saved (every 50 epochs here); this one writes
    every epoch, atomically (Lightning saves through a file-system transaction), so a killed run always leaves a
    complete checkpoint. Its own class keeps its checkpoint state apart from the periodic snapshots' even when
    both run every epoch.
    """

    def __init__(self, dirpath: str, **kwargs: Any) -> None:
        super().__init__(dirpath=dirpath, filename="last", save_top_k=1, every_n_epochs=1,
                         save_on_train_epoch_end=True, enable_version_counter=False, **kwargs)
