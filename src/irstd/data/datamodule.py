"""LightningDataModule: images from a dataset folder, labels from the run's label bank."""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from irstd.data.label_bank import LabelBank
from irstd.data.sources import DatasetError, Sample, SplitScan, normalization_stats, scan_split
from irstd.data.transforms import pad_bottom_right, padded_size, random_crop, random_dihedral
from irstd.fsutil import write_text_atomic

log = logging.getLogger(__name__)


class TrainDataset(Dataset):
    """Random crops of the training images with their labels from the bank's current round.

    The bank re-reads its manifest when it changes, so workers (persistent ones
    too) train on a newly committed round from the next sample on.
    """

    def __init__(self, samples: Sequence[Sample], bank: LabelBank, mean: float, std: float,
                 patch_size: int, augment: bool = True):
        self.samples = list(samples)
        self.bank = bank
        self.mean, self.std = mean, std
        self.patch_size = patch_size
        self.augment = augment

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        sample = self.samples[index]
        image = torch.from_numpy((sample.load_image() - self.mean) / self.std)[None]
        label = torch.from_numpy(self.bank.read(sample.name))[None]
        if label.shape != image.shape:
            raise DatasetError(f"label of {sample.name} in {self.bank.root} is {tuple(label.shape[1:])}, "
                               f"its image {sample.image} is {tuple(image.shape[1:])}")
        image, label = random_crop(image, label, self.patch_size)
        if self.augment:
            image, label = random_dihedral(image, label)
        return {"image": image.contiguous(), "label": label.contiguous()}


class FullImageDataset(Dataset):
    """Whole images (normalised) with their masks and, optionally, their current labels."""

    def __init__(self, samples: Sequence[Sample], mean: float, std: float, bank: LabelBank | None = None):
        self.samples = list(samples)
        self.mean, self.std = mean, std
        self.bank = bank

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = self.samples[index]
        image = torch.from_numpy((sample.load_image() - self.mean) / self.std)[None]
        mask = sample.load_mask()
        item = {
            "index": index,
            "name": sample.name,
            "image": image,
            "mask": torch.from_numpy(mask.astype(np.float32))[None] if mask is not None
            else torch.zeros_like(image),
            "has_mask": mask is not None,
            "valid_hw": torch.tensor(image.shape[1:], dtype=torch.long),
        }
        if self.bank is not None:
            item["label"] = torch.from_numpy(self.bank.read(sample.name))[None]
        return item


def pad_collate(items: list[dict[str, Any]], multiple: int = 32, always: bool = False) -> dict[str, Any]:
    """Batch full images of any sizes: pad bottom/right to the batch's largest size rounded up to
    `multiple`; `valid_hw` keeps each original size for cropping predictions back.

    `always` adds a block even to a size that already is a multiple (`(h // 32 + 1) * 32`), as the
    official test code does; its predictions near the bottom/right border differ slightly.
    """
    def target(size: int) -> int:
        return (size // multiple + 1) * multiple if always else padded_size(size, multiple)

    height = max(target(item["image"].shape[-2]) for item in items)
    width = max(target(item["image"].shape[-1]) for item in items)
    batch: dict[str, Any] = {}
    for key in items[0]:
        values = [item[key] for item in items]
        if key in ("image", "mask", "label"):
            batch[key] = torch.stack([pad_bottom_right(v, height, width) for v in values])
        elif key == "valid_hw":
            batch[key] = torch.stack(values)
        elif key == "index":
            batch[key] = torch.tensor(values, dtype=torch.long)
        elif key == "has_mask":
            batch[key] = torch.tensor(values, dtype=torch.bool)
        else:
            batch[key] = values
    return batch


class _PadCollate:
    """Picklable collate function for worker processes."""

    def __init__(self, multiple: int, always: bool):
        self.multiple = multiple
        self.always = always

    def __call__(self, items):
        return pad_collate(items, self.multiple, self.always)


class IRSTDDataModule(pl.LightningDataModule):
    """Serves a dataset in the standard layout with a mutable on-disk label bank.

    Args:
        root: dataset folder (`images/`, `masks/`, `img_idx/`).
        split: the `X` of `img_idx/train_X.txt` / `img_idx/test_X.txt`.
        label: round-0 labels: full | centroid | coarse | xml | centroid_png | coarse_png.
        label_seed: seed of the coarse-point draw (same seed, same points).
        bank_dir: where the label bank lives (inside the run directory).
        bank_keep: label-bank rounds kept on disk (None = all).
        mean, std: normalisation in the images' native units; None = from the train split.
        stats_file: where computed statistics are cached (inside the run directory).
        val_split: 'test' validates on the test split as the paper does; None disables validation.
        pad_multiple, pad_always: full images are zero-padded at the bottom/right to a multiple of
            `pad_multiple`; `pad_always` pads a full block even when the size already is one (the
            official evaluation's rule, for bit-compatible numbers).
        size_mismatch: image/mask size mismatch policy: resize | crop | skip | error.
        bad_files: unreadable or missing files: error | skip.
        synthetic: generation parameters when the dataset is the built-in synthetic one.
    """

    def __init__(self, root: str, split: str, label: str = "full", label_seed: int = 0,
                 bank_dir: str | None = None, bank_keep: int | None = None,
                 patch_size: int = 256, batch_size: int = 16, eval_batch_size: int = 1,
                 num_workers: int = 0, persistent_workers: bool = False, pin_memory: bool = False,
                 mean: float | None = None, std: float | None = None, stats_file: str | None = None,
                 val_split: str | None = "test", pad_multiple: int = 32, pad_always: bool = False,
                 size_mismatch: str = "resize", aspect_tolerance: float = 0.01, bad_files: str = "error",
                 synthetic: dict | None = None, augment: bool = True, progress: bool = True):
        super().__init__()
        if (mean is None) != (std is None):
            raise ValueError("set both data.mean and data.std, or neither (then they are computed "
                             "from the training split)")
        if std is not None and std <= 0:
            raise ValueError(f"data.std must be positive, got {std}")
        if patch_size % pad_multiple:
            raise ValueError(f"data.patch_size={patch_size} must be a multiple of data.pad_multiple={pad_multiple}")
        if val_split not in ("test", None):
            raise ValueError(f"data.val_split must be 'test' or null, got {val_split!r}")
        self.save_hyperparameters(logger=False)
        self.root = Path(root)
        self.mean, self.std = mean, std
        self.bank: LabelBank | None = None
        self.train_scan: SplitScan | None = None
        self.test_scan: SplitScan | None = None

    # ---- preparation -------------------------------------------------------------------------
    def prepare_data(self) -> None:
        if self.hparams.synthetic is not None:
            from irstd.data.synthetic import SyntheticSpec, generate_synthetic

            spec = SyntheticSpec(split_name=self.hparams.split, **self.hparams.synthetic)
            generate_synthetic(self.root, spec, progress=self.hparams.progress)

    def _scan(self, stage: str, label: str | None, need_masks: bool) -> SplitScan:
        scan = scan_split(self.root, stage, self.hparams.split, label=label, need_masks=need_masks,
                          size_mismatch=self.hparams.size_mismatch,
                          aspect_tolerance=self.hparams.aspect_tolerance,
                          bad_files=self.hparams.bad_files, progress=self.hparams.progress)
        scan.raise_if_fatal()
        for problem in scan.problems:
            log.warning("%s", problem)
        return scan

    def setup(self, stage: str | None = None) -> None:
        if stage in ("fit", None) and self.train_scan is None:
            self.train_scan = self._scan("train", self.hparams.label, need_masks=False)
            self._setup_normalization()
            self._setup_bank()
        if stage in ("fit", "validate", "test", None) and self.test_scan is None:
            need_test = stage in ("test", "validate") or self.hparams.val_split == "test"
            if need_test:
                self.test_scan = self._scan("test", None, need_masks=False)
                if not self.test_scan.masks_available:
                    log.warning("dataset %s has no masks/: evaluation and label-quality metrics are "
                                "skipped", self.root)
        if self.mean is None:
            raise DatasetError("normalisation statistics are unknown: set data.mean and data.std "
                               "(the training statistics of the checkpoint's run)")

    def _setup_normalization(self) -> None:
        if self.mean is not None:
            return
        stats_file = Path(self.hparams.stats_file) if self.hparams.stats_file else None
        if stats_file is not None and stats_file.is_file():
            cached = json.loads(stats_file.read_text())
            self.mean, self.std = float(cached["mean"]), float(cached["std"])
            return
        self.mean, self.std = normalization_stats(self.train_scan)
        log.info("normalisation from %d training images: mean %.3f, std %.3f",
                 len(self.train_scan.samples), self.mean, self.std)
        if stats_file is not None and self._is_global_zero():
            write_text_atomic(stats_file, json.dumps(
                {"mean": self.mean, "std": self.std, "root": str(self.root), "split": self.hparams.split,
                 "images": len(self.train_scan.samples),
                 "rule": "mean of per-image means and stds over the training split"}, indent=2))

    def _setup_bank(self) -> None:
        if self.hparams.bank_dir is None:
            raise ValueError("data.bank_dir is not set: training needs a label bank directory")
        self.bank = LabelBank(self.hparams.bank_dir, keep=self.hparams.bank_keep)
        names = [s.name for s in self.train_scan.samples]
        if self._is_global_zero() and not self.bank.exists():
            labels = {s.name: s.load_label(self.hparams.label, self.hparams.label_seed)
                      for s in self._progress(self.train_scan.samples, "point labels")}
            self.bank.initialize(labels, meta={"label": self.hparams.label, "root": str(self.root),
                                               "split": self.hparams.split, "epoch": 0})
        self._barrier()
        if self.bank.names() != names:
            raise DatasetError(f"label bank {self.bank.root} was made for another training set "
                               f"({len(self.bank.names())} images vs {len(names)} now); "
                               "start a new run directory")

    # ---- loaders -----------------------------------------------------------------------------
    def _loader(self, dataset: Dataset, batch_size: int, shuffle: bool, collate=None,
                drop_last: bool = False) -> DataLoader:
        workers = self.hparams.num_workers
        return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, num_workers=workers,
                          persistent_workers=self.hparams.persistent_workers and workers > 0,
                          pin_memory=self.hparams.pin_memory, collate_fn=collate, drop_last=drop_last)

    def train_dataloader(self) -> DataLoader:
        dataset = TrainDataset(self.train_scan.samples, self.bank, self.mean, self.std,
                               self.hparams.patch_size, self.hparams.augment)
        # A last batch of one image breaks batch norm after global pooling (ACM, ALCNet): drop only that one.
        lone_last = len(dataset) % self.hparams.batch_size == 1 and len(dataset) > 1
        return self._loader(dataset, self.hparams.batch_size, shuffle=True, drop_last=lone_last)

    def _eval_loader(self) -> DataLoader | list:
        if self.test_scan is None or not self.test_scan.masks_available:
            return []
        dataset = FullImageDataset(self.test_scan.samples, self.mean, self.std)
        return self._loader(dataset, self.hparams.eval_batch_size, shuffle=False,
                            collate=_PadCollate(self.hparams.pad_multiple, self.hparams.pad_always))

    def val_dataloader(self):
        return self._eval_loader() if self.hparams.val_split == "test" else []

    def test_dataloader(self):
        return self._eval_loader()

    def evolve_dataloader(self, samples: Sequence[Sample] | None = None, batch_size: int | None = None) -> DataLoader:
        """Full training images (all, or `samples`) with their masks and current labels, in a fixed order."""
        dataset = FullImageDataset(samples if samples is not None else self.train_scan.samples,
                                   self.mean, self.std, bank=self.bank)
        return self._loader(dataset, batch_size or self.hparams.eval_batch_size, shuffle=False,
                            collate=_PadCollate(self.hparams.pad_multiple, self.hparams.pad_always))

    # ---- checkpoint state: the round trained against and the statistics --------------------
    def state_dict(self) -> dict[str, Any]:
        state = {"mean": self.mean, "std": self.std}
        if self.bank is not None and self.bank.exists():
            state["label_round"] = self.bank.current_round()
            state["bank_dir"] = str(self.bank.root.resolve())
        return state

    def adopt_label_bank(self, ckpt_path: str | Path) -> None:
        """Before resuming in a new run directory, copy the label bank the checkpoint trained against.

        The original run directory is only read, so an interrupted resume cannot damage it;
        `load_state_dict` then rolls the copy back to the checkpoint's round.
        """
        target = Path(self.hparams.bank_dir)
        if target.exists() or not self._is_global_zero():
            return
        checkpoint = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        source = checkpoint.get(type(self).__qualname__, {}).get("bank_dir")
        if source is None:
            return
        if not (Path(source) / "manifest.json").is_file():
            raise DatasetError(f"checkpoint {ckpt_path} trained against the label bank {source}, which is "
                               "gone; resume inside that run directory or restore the folder")
        staging = target.with_name(f".{target.name}.partial")
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(source, staging, ignore=shutil.ignore_patterns("*.tmp", "*.lock"))
        staging.rename(target)
        log.info("resuming with a copy of the label bank %s", source)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.mean, self.std = state["mean"], state["std"]
        if "label_round" in state and self.bank is not None:
            if self._is_global_zero() and self.bank.current_round() != state["label_round"]:
                log.info("restoring label bank %s to round %d", self.bank.root, state["label_round"])
                self.bank.rollback(state["label_round"])
            self._barrier()

    # ---- helpers -----------------------------------------------------------------------------
    def _is_global_zero(self) -> bool:
        trainer = getattr(self, "trainer", None)
        return trainer is None or trainer.is_global_zero

    def _barrier(self) -> None:
        trainer = getattr(self, "trainer", None)
        if trainer is not None and trainer.world_size > 1:
            trainer.strategy.barrier("irstd-label-bank")

    def _progress(self, items, desc: str):
        if not self.hparams.progress:
            return items
        from tqdm.auto import tqdm

        return tqdm(items, desc=desc, leave=False)
