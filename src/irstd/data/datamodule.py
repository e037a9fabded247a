"""LightningDataModule: images from a dataset folder, labels from the run's label bank."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from irstd.data.label_bank import LabelBank
from irstd.data.pseudo_labels import PseudoLabeler, pseudo_source
from irstd.data.sources import DatasetError, Sample, SplitScan, normalization_stats, scan_split
from irstd.data.transforms import pad_bottom_right, padded_size, random_crop, random_dihedral
from irstd.fsutil import write_text_atomic

log = logging.getLogger(__name__)


class TrainDataset(Dataset):
    """Random crops of the training images with their labels from the bank's current round.

    Items are addressed by `(epoch, index)` (see `EpochSampler`): the crop and the flip of a sample are
    drawn from a generator seeded by (seed, epoch, index), so they are the same whatever the number of
    workers or ranks, and a resumed run sees exactly what an uninterrupted one would have.
    The bank re-reads its manifest when it changes, so workers (persistent ones
    too) train on a newly committed round from the next sample on.
    """

    def __init__(self, samples: Sequence[Sample], bank: LabelBank, mean: float, std: float,
                 patch_size: int, augment: bool = True, seed: int = 0):
        self.samples = list(samples)
        self.bank = bank
        self.mean, self.std = mean, std
        self.patch_size = patch_size
        self.augment = augment
        self.seed = seed

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: tuple[int, int] | int) -> dict[str, torch.Tensor]:
        epoch, index = key if isinstance(key, tuple) else (0, key)
        sample = self.samples[index]
        image = torch.from_numpy((sample.load_image() - self.mean) / self.std)[None]
        label = torch.from_numpy(self.bank.read(sample.name))[None]
        if label.shape != image.shape:
            raise DatasetError(f"label of {sample.name} in {self.bank.root} is {tuple(label.shape[1:])}, "
                               f"its image {sample.image} is {tuple(image.shape[1:])}")
        generator = torch.Generator().manual_seed(
            int(np.random.SeedSequence([self.seed, epoch, index]).generate_state(1)[0]))
        image, label = random_crop(image, label, self.patch_size, generator)
        if self.augment:
            image, label = random_dihedral(image, label, generator)
        return {"image": image.contiguous(), "label": label.contiguous()}


class EpochSampler(DistributedSampler):
    """This rank's share of a (seed, epoch)-shuffled order, as `(epoch, index)` keys for `TrainDataset`.

    A DistributedSampler (so Lightning keeps it under DDP) that also works in one process; Lightning calls
    `set_epoch` every epoch, from the restored epoch after a resume. Shards are padded to equal length by
    repeating images, as DistributedSampler does, so every rank runs the same number of steps.
    """

    def __init__(self, dataset: Dataset, seed: int, num_replicas: int = 1, rank: int = 0, shuffle: bool = True):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch = self.epoch
        return ((epoch, index) for index in super().__iter__())


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
        label: round-0 labels: full | centroid | coarse | xml | centroid_png | coarse_png | pseudo.
        label_options: the whole `label` config; `pseudo` reads its source, method, threshold and window there.
        label_seed: seed of the coarse-point draw (same seed, same points).
        bank_dir: where the label bank lives (inside the run directory).
        bank_keep: label-bank rounds kept on disk (None = all).
        mean, std: normalisation in the images' native units; None = from the train split.
        stats_file: where computed statistics are cached (inside the run directory).
        val_split: 'test' validates on the test split as the paper does; None disables validation.
        val_fraction: when > 0, this fraction of the training split is held out (not trained on, not
            evolved) and validation runs on it instead of the test split, so a checkpoint can be selected
            without looking at the test split; 0 keeps the paper's protocol.
        val_seed: which training images are held out (chosen by a hash of seed and name).
        test_sets: test split names of this root, each tested and reported on its own (one test
            dataloader each); None tests the `split` test split only.
        pad_multiple, pad_always: full images are zero-padded at the bottom/right to a multiple of
            `pad_multiple`; `pad_always` pads a full block even when the size already is one (the
            official evaluation's rule, for bit-compatible numbers).
        size_mismatch: image/mask size mismatch policy: resize | crop | skip | error.
        bad_files: unreadable or missing files: error | skip.
        synthetic: generation parameters when the dataset is the built-in synthetic one.
        seed: seed of the training order, crops and flips (None: 0, so that DDP ranks agree on the order).
    """

    def __init__(self, root: str, split: str, label: str = "full", label_seed: int = 0,
                 label_options: dict | None = None, bank_dir: str | None = None, bank_keep: int | None = None,
                 patch_size: int = 256, batch_size: int = 16, eval_batch_size: int = 1,
                 num_workers: int = 0, persistent_workers: bool = False, pin_memory: bool = False,
                 mean: float | None = None, std: float | None = None, stats_file: str | None = None,
                 val_split: str | None = "test", pad_multiple: int = 32, pad_always: bool = False,
                 val_fraction: float = 0.0, val_seed: int = 0, test_sets: Sequence[str] | None = None,
                 size_mismatch: str = "resize", aspect_tolerance: float = 0.01, bad_files: str = "error",
                 synthetic: dict | None = None, augment: bool = True, progress: bool = True, seed: int | None = 0):
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
        if not 0 <= val_fraction < 1:
            raise ValueError(f"data.val_fraction must be in [0, 1), got {val_fraction}")
        if isinstance(test_sets, str):
            test_sets = [test_sets]
        if test_sets is not None and (not test_sets or len(set(test_sets)) != len(test_sets)):
            raise ValueError(f"data.test_sets must be null or a list of distinct split names, got {test_sets}")
        if seed is None:
            seed = 0
        self.save_hyperparameters(logger=False)
        self.root = Path(root)
        self.mean, self.std = mean, std
        self.bank: LabelBank | None = None
        self.train_scan: SplitScan | None = None
        self.val_scan: SplitScan | None = None
        self.test_scans: dict[str, SplitScan] = {}

    # ---- preparation -------------------------------------------------------------------------
    def prepare_data(self) -> None:
        if self.hparams.synthetic is not None:
            from irstd.data.synthetic import SyntheticSpec, generate_synthetic

            spec = SyntheticSpec(split_name=self.hparams.split, **self.hparams.synthetic)
            generate_synthetic(self.root, spec, progress=self.hparams.progress)

    def _scan(self, stage: str, label: str | None, need_masks: bool, split: str | None = None) -> SplitScan:
        scan = scan_split(self.root, stage, split or self.hparams.split, label=label, need_masks=need_masks,
                          size_mismatch=self.hparams.size_mismatch,
                          aspect_tolerance=self.hparams.aspect_tolerance,
                          bad_files=self.hparams.bad_files, progress=self.hparams.progress)
        scan.raise_if_fatal()
        for problem in scan.problems:
            log.warning("%s", problem)
        return scan

    def setup(self, stage: str | None = None) -> None:
        if stage in ("fit", None) and self.train_scan is None:
            self.train_scan, self.val_scan = self._hold_out(self._scan("train", self._point_kind, need_masks=False))
            self._setup_normalization()
            self._setup_bank()
        validates_on_test = (stage in ("fit", "validate") and self.hparams.val_split == "test"
                             and not self.hparams.val_fraction)
        if (stage in ("test", None) or validates_on_test) and not self.test_scans:
            self.test_scans = {name: self._scan("test", None, need_masks=False, split=name)
                               for name in self.test_set_names}
            if not next(iter(self.test_scans.values())).masks_available:
                log.warning("dataset %s has no masks/: evaluation and label-quality metrics are "
                            "skipped", self.root)
        if self.mean is None:
            raise DatasetError("normalisation statistics are unknown: set data.mean and data.std "
                               "(the training statistics of the checkpoint's run)")

    @property
    def test_set_names(self) -> list[str]:
        """The test splits reported, one test dataloader each: `data.test_sets`, else `data.split`."""
        return list(self.hparams.test_sets or [self.hparams.split])

    @property
    def test_scan(self) -> SplitScan | None:
        """The scan of the one test split (irstd-eval scores a single split)."""
        if len(self.test_scans) > 1:
            raise DatasetError(f"data.test_sets lists {len(self.test_scans)} test splits; score them one at a time "
                               "with data.test_sets=null data.split=NAME")
        return next(iter(self.test_scans.values()), None)

    def _hold_out(self, scan: SplitScan) -> tuple[SplitScan, SplitScan | None]:
        """(training part, validation part) of the training split: `val_fraction` of it held out.

        The held-out images are those whose sha256 of (val_seed, name) ranks lowest: the choice depends on
        the seed and the names, not on the order of the split file. The training part alone then sets the
        normalisation and fills the label bank.
        """
        fraction = self.hparams.val_fraction
        if not fraction:
            return scan, None
        if not scan.masks_available:
            raise DatasetError(f"data.val_fraction={fraction} needs masks/ in {self.root} to validate against")
        count = len(scan.samples)
        if count < 2:
            raise DatasetError(f"data.val_fraction={fraction} needs at least 2 training images, {scan.split_file} "
                               f"has {count}")
        held = min(count - 1, max(1, round(fraction * count)))
        seed = self.hparams.val_seed
        ranked = sorted(range(count), key=lambda i: hashlib.sha256(f"{seed}:{scan.samples[i].name}".encode()).digest())
        chosen = set(ranked[:held])

        def part(keep: bool) -> SplitScan:
            kept = [i for i in range(count) if (i in chosen) != keep]
            return replace(scan, samples=[scan.samples[i] for i in kept],
                           image_means=[scan.image_means[i] for i in kept],
                           image_stds=[scan.image_stds[i] for i in kept])

        log.info("validating on %d of the %d training images (data.val_fraction=%s); training on the other %d",
                 held, count, fraction, count - held)
        return part(True), part(False)

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
            labeler = PseudoLabeler.from_options(self.hparams.label_options) if self.hparams.label == "pseudo" else None
            labels = {s.name: self._round0_label(s, labeler)
                      for s in self._progress(self.train_scan.samples, "round-0 labels")}
            self.bank.initialize(labels, meta={"label": self.hparams.label, "root": str(self.root),
                                               "split": self.hparams.split, "epoch": 0})
        self._barrier()
        if self.bank.names() != names:
            raise DatasetError(f"label bank {self.bank.root} was made for another training set "
                               f"({len(self.bank.names())} images vs {len(names)} now); "
                               "start a new run directory")

    @property
    def _point_kind(self) -> str:
        """The label kind read from the dataset: for `pseudo`, the point labels the pseudo labels grow from."""
        if self.hparams.label != "pseudo":
            return self.hparams.label
        return pseudo_source(self.hparams.label_options)

    def _round0_label(self, sample: Sample, labeler: PseudoLabeler | None) -> np.ndarray:
        label = sample.load_label(self._point_kind, self.hparams.label_seed)
        return label if labeler is None else labeler(sample.load_image(), label)

    # ---- loaders -----------------------------------------------------------------------------
    def _loader(self, dataset: Dataset, batch_size: int, shuffle: bool, collate=None,
                drop_last: bool = False, sampler: Sampler | None = None) -> DataLoader:
        workers = self.hparams.num_workers
        return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, sampler=sampler, num_workers=workers,
                          persistent_workers=self.hparams.persistent_workers and workers > 0,
                          pin_memory=self.hparams.pin_memory, collate_fn=collate, drop_last=drop_last)

    def train_dataloader(self) -> DataLoader:
        dataset = TrainDataset(self.train_scan.samples, self.bank, self.mean, self.std,
                               self.hparams.patch_size, self.hparams.augment, self.hparams.seed)
        trainer = getattr(self, "trainer", None)
        world, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
        sampler = EpochSampler(dataset, self.hparams.seed, num_replicas=world, rank=rank)
        # A last batch of one image breaks batch norm after global pooling (ACM, ALCNet): drop only that one.
        lone_last = sampler.num_samples % self.hparams.batch_size == 1 and sampler.num_samples > 1
        return self._loader(dataset, self.hparams.batch_size, shuffle=False, drop_last=lone_last, sampler=sampler)

    def _eval_loader(self, samples: Sequence[Sample], world_size: int | None = None,
                     rank: int | None = None) -> DataLoader:
        """Whole images in a fixed order; across `world_size` DDP ranks (default: the initialised process
        group's), each rank takes every world_size-th image with no padding.

        Lightning would otherwise substitute a DistributedSampler, which repeats images to even out the
        shards, and the sum-reduced metric states would count those images twice.
        """
        if world_size is None:
            distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
            world_size = torch.distributed.get_world_size() if distributed else 1
            rank = torch.distributed.get_rank() if distributed else 0
        if 1 < world_size and len(samples) < world_size:
            # a rank without a batch would skip the epoch-end metric reduction the others wait in
            raise DatasetError(f"{len(samples)} evaluation images of {self.root} cannot be shared by {world_size} "
                               "DDP ranks (each needs one): evaluate with fewer processes, or with irstd-eval")
        dataset = FullImageDataset(samples, self.mean, self.std)
        sampler = (UnrepeatedDistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=False)
                   if world_size > 1 else None)
        return self._loader(dataset, self.hparams.eval_batch_size, shuffle=False, sampler=sampler,
                            collate=_PadCollate(self.hparams.pad_multiple, self.hparams.pad_always))

    def val_dataloader(self):
        if self.hparams.val_split is None:
            return []
        # the images held out of training; without them (monitoring only) the test sets together
        scans = [self.val_scan] if self.val_scan is not None else list(self.test_scans.values())
        if not scans or not scans[0].masks_available:
            return []
        return self._eval_loader(list({s.name: s for scan in scans for s in scan.samples}.values()))

    def test_dataloader(self):
        """One loader, or one per test set (`data.test_sets`), in the order of `test_set_names`."""
        scans = list(self.test_scans.values())
        if not scans or not scans[0].masks_available:
            return []
        loaders = [self._eval_loader(scan.samples) for scan in scans]
        return loaders[0] if len(loaders) == 1 else loaders

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
