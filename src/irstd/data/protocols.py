"""What label-learning code needs from a DataModule, written down as a `typing.Protocol`."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from irstd.data.label_bank import LabelBank
from irstd.data.sources import Sample, SplitScan


@runtime_checkable
class LabelSource(Protocol):
    """The DataModule as the LESPS callback sees it: the training images and the label bank they train on.

    `IRSTDDataModule` satisfies it once `setup("fit")` has run; a test checks that it does. The callback
    relies on these members, and on nothing else of the DataModule:

    - `bank`: the run's `LabelBank`. The callback reads round 0 (`read_round(0)`, to pick panel targets),
      commits each evolved round (`commit(labels, meta={"epoch": ...})`), reads `current_round()`, and under
      DDP writes each rank's shard into `bank.root / ".shards"` before rank 0 commits.
    - `train_scan`: the training images (after any held-out validation images are removed), a `SplitScan`
      whose `samples` are in the same order on every rank; rank r of w evolves `samples[r::w]`. It reads
      each sample's `name`, and `load_image()` for the panels.
    - `evolve_dataloader(samples, batch_size)`: whole images of `samples` in their order, normalised and
      padded, in batches of `batch_size` (None: the DataModule's evaluation batch size); each batch holds
      `image` (B,1,H,W), `name` (list), `valid_hw` (B,2; the unpadded size), `label` (the bank's current
      round), `mask` (zeros without masks) and `has_mask` (B,).
    """

    bank: LabelBank | None
    train_scan: SplitScan | None
    # the normalisation of the served images (native units = image * std + mean), for rules that need native units
    mean: float | None
    std: float | None
    # indices into train_scan.samples that training epochs draw from (None: all), set by rules such as PAL's
    train_subset: list[int] | None

    def evolve_dataloader(self, samples: Sequence[Sample] | None = None,
                          batch_size: int | None = None) -> Iterable[Mapping[str, Any]]:
        """Full training images (all, or `samples`) with their masks and current labels, in a fixed order."""
        ...
