"""LightningDataModule: images from a dataset folder, labels from the run's label bank."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader, Dataset, Sampler

from irstd.data.datasets import (
    DecodedCache,
    EpochSampler,
    FullImageDataset,
    PadCollate,
    TrainDataset,
    fill_image_cache,
)
from irstd.data.label_bank import LabelBank
from irstd.data.sources import (
    AUTO_LABEL,
    BAD_FILE_POLICIES,
    MISMATCH_POLICIES,
    DatasetError,
    Sample,
    SplitScan,
    normalization_stats,
    resolve_label_kind,
    scan_split,
)
from irstd.utils.files import load_torch_file, write_text_atomic

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadingOptions:
    """`data.loading`: how batches are loaded.

    Args:
        num_workers: loader worker processes (0: load in the main process).
        persistent_workers: keep the workers alive between epochs (only with num_workers > 0).
        pin_memory: page-locked batches, for faster copies to a GPU.
        eval_batch_size: full images per batch when validating, testing and evolving labels.
        cache_mb: MiB of decoded training images and current labels held in memory per process, instead of
            decoding the PNG and the label bank's compressed round for every sample (0: no cache). The images are
            decoded once before the workers start, which share them; batches are the same bit for bit.
    """

    num_workers: int = 0
    persistent_workers: bool = False
    pin_memory: bool = False
    eval_batch_size: int = 1
    cache_mb: float = 1024

    def __post_init__(self):
        if self.num_workers < 0:
            raise ValueError(f"data.loading.num_workers must be >= 0, got {self.num_workers}")
        if self.eval_batch_size < 1:
            raise ValueError(f"data.loading.eval_batch_size must be >= 1, got {self.eval_batch_size}")
        if not self.cache_mb >= 0:
            raise ValueError(f"data.loading.cache_mb must be >= 0 (0: no cache), got {self.cache_mb}")


@dataclass(frozen=True)
class EvaluationOptions:
    """`data.evaluation`: how whole images are padded and which test splits are reported.

    Args:
        pad_multiple: full images are zero-padded at the bottom/right to a multiple of this.
        pad_always: pad a full block even when a side already is a multiple (the official evaluation's
            rule, for bit-compatible numbers).
        test_sets: test split names of this root, each tested and reported on its own (one test
            dataloader each); None tests the `split` test split only.
    """

    pad_multiple: int = 32
    pad_always: bool = False
    test_sets: tuple[str, ...] | None = None

    def __post_init__(self):
        if self.pad_multiple < 1:
            raise ValueError(f"data.evaluation.pad_multiple must be >= 1, got {self.pad_multiple}")
        test_sets = [self.test_sets] if isinstance(self.test_sets, str) else self.test_sets
        if test_sets is not None:
            if not test_sets or len(set(test_sets)) != len(test_sets):
                raise ValueError("data.evaluation.test_sets must be null or a list of distinct split names, "
                                 f"got {list(test_sets)}")
            object.__setattr__(self, "test_sets", tuple(test_sets))


@dataclass(frozen=True)
class PolicyOptions:
    """`data.policies`: what to do with a dataset's flaws, reported at setup, never mid-epoch.

    Args:
        size_mismatch: an image and its mask of different sizes: resize (nearest, when the aspect ratios
            agree within `aspect_tolerance`) | crop | skip | error.
        aspect_tolerance: the relative aspect-ratio difference `resize` accepts.
        bad_files: missing, empty or undecodable files: error (list them all) | skip.
    """

    size_mismatch: str = "resize"
    aspect_tolerance: float = 0.01
    bad_files: str = "error"

    def __post_init__(self):
        if self.size_mismatch not in MISMATCH_POLICIES:
            raise ValueError(f"data.policies.size_mismatch must be one of {MISMATCH_POLICIES}, "
                             f"got {self.size_mismatch!r}")
        if self.bad_files not in BAD_FILE_POLICIES:
            raise ValueError(f"data.policies.bad_files must be one of {BAD_FILE_POLICIES}, got {self.bad_files!r}")
        if self.aspect_tolerance < 0:
            raise ValueError(f"data.policies.aspect_tolerance must be >= 0, got {self.aspect_tolerance}")


@dataclass(frozen=True)
class HoldoutOptions:
    """`data.holdout`: what validation runs on.

    Args:
        split: 'test' validates on the test split(s), for monitoring only, as the paper does; None: no
            validation.
        fraction: when > 0, this fraction of the training split is held out (not trained on, not evolved)
            and validation runs on it instead of the test split, so a checkpoint can be selected without
            looking at the test split (`select=best`); 0 keeps the paper's protocol.
        seed: which training images are held out (chosen by a hash of seed and name).
    """

    split: str | None = "test"
    fraction: float = 0.0
    seed: int = 0

    def __post_init__(self):
        if self.split not in ("test", None):
            raise ValueError(f"data.holdout.split must be 'test' or null, got {self.split!r}")
        if not 0 <= self.fraction < 1:
            raise ValueError(f"data.holdout.fraction must be in [0, 1), got {self.fraction}")


Options = TypeVar("Options", LoadingOptions, EvaluationOptions, PolicyOptions, HoldoutOptions)


def options_group(kind: type[Options], value: Options | Mapping[str, Any] | None, key: str) -> Options:
    """One settings group of the DataModule from its config (a dict, as Hydra passes it), checked key by key.

    `key` is the group's config key (`data.loading`): an unknown entry is an error that names it in full.
    """
    if value is None:
        return kind()
    if isinstance(value, kind):
        return value
    if not isinstance(value, Mapping):
        raise TypeError(f"{key} must be a mapping of settings, got {type(value).__name__}: {value!r}")
    known = [field.name for field in fields(kind)]
    unknown = [name for name in value if name not in known]
    if unknown:
        named = ", ".join(f"{key}.{name}" for name in unknown)
        raise ValueError(f"unknown key{'s' if len(unknown) > 1 else ''} {named}: {key} takes {', '.join(known)}")
    return kind(**value)



class IRSTDDataModule(pl.LightningDataModule):
    """Serves a dataset in the standard layout with a mutable on-disk label bank.

    The common settings are arguments; the rest come in four groups, each a dataclass or a dict of its
    fields (as Hydra passes `data.loading` etc.): `loading` (`LoadingOptions`), `evaluation`
    (`EvaluationOptions`), `policies` (`PolicyOptions`), `holdout` (`HoldoutOptions`).

    Args:
        root: dataset folder (`images/`, `masks/`, `img_idx/`).
        split: the `X` of `img_idx/train_X.txt` / `img_idx/test_X.txt`.
        label: the labels read from the dataset: full | centroid | coarse | xml | centroid_png | coarse_png | clicks,
            or auto: centroid when the dataset has masks/, else clicks when it has clicks.json (resolved once, at
            setup, into `label_kind`; a resumed run keeps the kind its label bank was made from).
        label_options: the whole `label` config; its `seed` seeds the coarse-point draw (same seed, same
            points; default 0).
        label_init: the round-0 initialiser (the `label_init` group: `irstd.labels.init.initialisers`, or any
            object with `name` and `initialise(images, points) -> labels`); None: round 0 = the labels read.
            It runs once, when the run's label bank is created; a resumed run reads round 0 from the bank.
        bank_dir: where the label bank lives (inside the run directory).
        bank_keep: label-bank rounds kept on disk (None = all).
        stats_file: where computed statistics are cached (inside the run directory).
        patch_size: side of the square training crops (a multiple of `evaluation.pad_multiple`).
        batch_size: training crops per batch.
        mean, std: normalisation in the images' native units; None = from the train split.
        augment: random flips and rotations of the training crops.
        positive_crops: the fraction of training crops placed to hold a target of the current label (0: every
            crop uniform; `transforms.random_crop`).
        seed: seed of the training order, crops and flips (None: 0, so that DDP ranks agree on the order).
        progress: progress bars while scanning and making round-0 labels.
        synthetic: generation parameters when the dataset is the built-in synthetic one.
    """

    def __init__(self, root: str, split: str, label: str = "full", label_options: dict | None = None,
                 label_init: Any = None,
                 bank_dir: str | None = None, bank_keep: int | None = None, stats_file: str | None = None,
                 patch_size: int = 256, batch_size: int = 16, mean: float | None = None, std: float | None = None,
                 augment: bool = True, positive_crops: float = 0.0, seed: int | None = 0, progress: bool = True,
                 synthetic: dict | None = None,
                 loading: LoadingOptions | Mapping[str, Any] | None = None,
                 evaluation: EvaluationOptions | Mapping[str, Any] | None = None,
                 policies: PolicyOptions | Mapping[str, Any] | None = None,
                 holdout: HoldoutOptions | Mapping[str, Any] | None = None):
        super().__init__()
        self.loading = options_group(LoadingOptions, loading, "data.loading")
        self.evaluation = options_group(EvaluationOptions, evaluation, "data.evaluation")
        self.policies = options_group(PolicyOptions, policies, "data.policies")
        self.holdout = options_group(HoldoutOptions, holdout, "data.holdout")
        if (mean is None) != (std is None):
            raise ValueError("set both data.mean and data.std, or neither (then they are computed "
                             "from the training split)")
        if std is not None and std <= 0:
            raise ValueError(f"data.std must be positive, got {std}")
        if patch_size % self.evaluation.pad_multiple:
            raise ValueError(f"data.patch_size={patch_size} must be a multiple of "
                             f"data.evaluation.pad_multiple={self.evaluation.pad_multiple}")
        if not 0.0 <= positive_crops <= 1.0:
            raise ValueError(f"data.positive_crops must be a fraction in [0, 1], got {positive_crops}")
        if seed is None:
            seed = 0
        # the hyperparameters (and checkpoints) hold plain values: the groups as dicts
        loading, evaluation, policies, holdout = (
            asdict(group) for group in (self.loading, self.evaluation, self.policies, self.holdout))
        # the initialiser is an object: the resolved config records it, checkpoints need not
        self.save_hyperparameters(logger=False, ignore=["label_init"])
        if label == "full" and getattr(label_init, "grows_from_points", False):
            # full supervision trains on the masks themselves: there are no points to grow
            log.info("label=full: the masks are round 0; label_init=%s, which grows masks from points, is not run",
                     label_init.name)
            label_init = None
        self.label_init = label_init
        self.root = Path(root)
        self.mean, self.std = mean, std
        self.bank: LabelBank | None = None
        # the label kind trained from: `label`, with auto resolved at setup
        self.label_kind: str | None = None if label == AUTO_LABEL else label
        # whether the dataset has masks/ to score predictions and labels against; known after setup
        self.has_masks: bool | None = None
        # indices into train_scan.samples that training epochs draw from (None: all); set by label-update rules
        # that train on part of the set (PAL), read by the sampler at the start of every epoch
        self.train_subset: list[int] | None = None
        self.train_scan: SplitScan | None = None
        self.val_scan: SplitScan | None = None
        self.test_scans: dict[str, SplitScan] = {}
        # decoded training images and current labels (data.loading.cache_mb); None: decoded per sample
        self.cache: DecodedCache | None = (DecodedCache(int(self.loading.cache_mb * 2**20))
                                           if self.loading.cache_mb > 0 else None)

    # ---- preparation -------------------------------------------------------------------------
    def prepare_data(self) -> None:
        if self.hparams.synthetic is not None:
            from irstd.data.synthetic import SyntheticSpec, generate_synthetic

            spec = SyntheticSpec(split_name=self.hparams.split, **self.hparams.synthetic)
            generate_synthetic(self.root, spec, progress=self.hparams.progress)

    def _scan(self, stage: str, label: str | None, need_masks: bool, split: str | None = None) -> SplitScan:
        scan = scan_split(self.root, stage, split or self.hparams.split, label=label, need_masks=need_masks,
                          size_mismatch=self.policies.size_mismatch,
                          aspect_tolerance=self.policies.aspect_tolerance,
                          bad_files=self.policies.bad_files, progress=self.hparams.progress)
        scan.raise_if_fatal()
        for problem in scan.problems:
            log.warning("%s", problem)
        return scan

    def setup(self, stage: str | None = None) -> None:
        if stage in ("fit", None) and self.train_scan is None:
            self.label_kind = self._resolve_label()
            scan = self._scan("train", self.label_kind, need_masks=False)
            self.has_masks = scan.masks_available
            if not scan.masks_available:
                self._skip_scoring()
            self.train_scan, self.val_scan = self._hold_out(scan)
            self._setup_normalization()
            self._setup_bank()
        validates_on_test = (stage in ("fit", "validate") and self.holdout.split == "test"
                             and not self.holdout.fraction and self.has_masks is not False)
        if (stage in ("test", None) or validates_on_test) and not self.test_scans:
            self.test_scans = {name: self._scan("test", None, need_masks=False, split=name)
                               for name in self.test_set_names}
            self.has_masks = next(iter(self.test_scans.values())).masks_available
        if self.mean is None:
            raise DatasetError("normalisation statistics are unknown: set data.mean and data.std "
                               "(the training statistics of the checkpoint's run)")

    def _resolve_label(self) -> str:
        """`label`, or what `label=auto` stands for: on resume, the kind the label bank was made from."""
        if self.label_kind is not None:
            return self.label_kind
        if self.hparams.bank_dir is not None:
            bank = LabelBank(self.hparams.bank_dir, keep=self.hparams.bank_keep)
            recorded = bank.round_meta(0).get("label") if bank.exists() else None
            if recorded is not None:
                log.info("label=auto: label=%s, as the label bank %s was made from", recorded, bank.root)
                return recorded
        kind = resolve_label_kind(self.root, AUTO_LABEL)
        why = "it has masks/" if kind == "centroid" else "it has clicks.json and no masks/"
        log.info("label=auto: training from label=%s: %s in %s", kind, why, self.root)
        return kind

    def _skip_scoring(self) -> None:
        """Turn validation off for a training set without masks, with one warning: what is skipped, why, and what
        to run instead."""
        trainer = getattr(self, "trainer", None)
        if trainer is not None:
            # Lightning's way to turn validation off: an empty loader would also work, with a warning of its own
            trainer.limit_val_batches = 0
        log.warning("dataset %s has no masks/, so nothing can score predictions or labels: validation and testing "
                    "are skipped (a held-out part of the training split could not be scored either: "
                    "data.holdout.fraction holds nothing out, select=best has nothing to choose by), and label-quality "
                    "metrics are left out. See what the model finds with irstd-predict "
                    "ckpt_path=RUN/checkpoints/last.ckpt input=FOLDER output=OUT", self.root)

    @property
    def test_set_names(self) -> list[str]:
        """The test splits reported, one test dataloader each: `data.evaluation.test_sets`, else `data.split`."""
        return list(self.evaluation.test_sets or [self.hparams.split])

    @property
    def test_scan(self) -> SplitScan | None:
        """The scan of the one test split (irstd-eval scores a single split)."""
        if len(self.test_scans) > 1:
            raise DatasetError(f"data.evaluation.test_sets lists {len(self.test_scans)} test splits; score them one at "
                               "a time with data.evaluation.test_sets=null data.split=NAME")
        return next(iter(self.test_scans.values()), None)

    def _hold_out(self, scan: SplitScan) -> tuple[SplitScan, SplitScan | None]:
        """(training part, validation part) of the training split: `holdout.fraction` of it held out.

        The held-out images are those whose sha256 of (holdout.seed, name) ranks lowest: the choice depends on
        the seed and the names, not on the order of the split file. The training part alone then sets the
        normalisation and fills the label bank.
        """
        fraction = self.holdout.fraction
        if not fraction or not scan.masks_available:
            return scan, None
        count = len(scan.samples)
        if count < 2:
            raise DatasetError(f"data.holdout.fraction={fraction} needs at least 2 training images, {scan.split_file} "
                               f"has {count}")
        held = min(count - 1, max(1, round(fraction * count)))
        seed = self.holdout.seed
        ranked = sorted(range(count), key=lambda i: hashlib.sha256(f"{seed}:{scan.samples[i].name}".encode()).digest())
        chosen = set(ranked[:held])

        def part(keep: bool) -> SplitScan:
            kept = [i for i in range(count) if (i in chosen) != keep]
            return replace(scan, samples=[scan.samples[i] for i in kept],
                           image_means=[scan.image_means[i] for i in kept],
                           image_stds=[scan.image_stds[i] for i in kept])

        log.info("validating on %d of the %d training images (data.holdout.fraction=%s); training on the other %d",
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
            self.bank.initialize(self._round0_labels(), meta={
                "label": self.label_kind, "label_init": getattr(self.label_init, "name", None),
                "root": str(self.root), "split": self.hparams.split, "epoch": 0})
        self._barrier()
        recorded = self.bank.round_meta(0).get("label")
        if recorded not in (None, self.label_kind):
            raise DatasetError(f"label bank {self.bank.root} was made from label={recorded}, but this run trains "
                               f"from label={self.label_kind}: resume with label={recorded} (or label=auto), or "
                               "start a new run directory")
        if self.bank.names() != names:
            raise DatasetError(f"label bank {self.bank.root} was made for another training set "
                               f"({len(self.bank.names())} images vs {len(names)} now); "
                               "start a new run directory")

    def _round0_labels(self, chunk: int = 64) -> dict[str, np.ndarray]:
        """The labels read from the dataset, passed through the round-0 initialiser a chunk of images at a time."""
        seed = (self.hparams.label_options or {}).get("seed", 0)
        labels: dict[str, np.ndarray] = {}
        samples = self.train_scan.samples
        for start in self._progress(range(0, len(samples), chunk), "round-0 labels"):
            part = samples[start:start + chunk]
            read = [sample.load_label(self.label_kind, seed) for sample in part]
            if self.label_init is not None:
                # only initialisers that grow the points read the images: round 0 = points decodes none
                grows = getattr(self.label_init, "grows_from_points", False)
                read = self.label_init.initialise([sample.load_image() for sample in part] if grows else None, read)
            labels.update({sample.name: label for sample, label in zip(part, read, strict=True)})
        return labels

    # ---- loaders -----------------------------------------------------------------------------
    def _loader(self, dataset: Dataset, batch_size: int, shuffle: bool, collate=None,
                drop_last: bool = False, sampler: Sampler | None = None) -> DataLoader:
        workers = self.loading.num_workers
        return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, sampler=sampler, num_workers=workers,
                          persistent_workers=self.loading.persistent_workers and workers > 0,
                          pin_memory=self.loading.pin_memory, collate_fn=collate, drop_last=drop_last)

    def train_dataloader(self) -> DataLoader:
        self._fill_cache()
        dataset = TrainDataset(self.train_scan.samples, self.bank, self.mean, self.std,
                               self.hparams.patch_size, self.hparams.augment, self.hparams.seed, cache=self.cache,
                               positive_crops=self.hparams.positive_crops)
        trainer = getattr(self, "trainer", None)
        world, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
        sampler = EpochSampler(dataset, self.hparams.seed, num_replicas=world, rank=rank,
                               subset=lambda: self.train_subset, batch_size=self.hparams.batch_size)
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
        return self._loader(dataset, self.loading.eval_batch_size, shuffle=False, sampler=sampler,
                            collate=PadCollate(self.evaluation.pad_multiple, self.evaluation.pad_always))

    def val_dataloader(self):
        if self.holdout.split is None:
            return []
        # the images held out of training; without them (monitoring only) the test sets together
        scans = [self.val_scan] if self.val_scan is not None else list(self.test_scans.values())
        if not scans or not scans[0].masks_available:
            return []
        return self._eval_loader(list({s.name: s for scan in scans for s in scan.samples}.values()))

    def test_dataloader(self):
        """One loader, or one per test set (`data.evaluation.test_sets`), in the order of `test_set_names`."""
        scans = list(self.test_scans.values())
        if not scans or not scans[0].masks_available:
            return []
        loaders = [self._eval_loader(scan.samples) for scan in scans]
        return loaders[0] if len(loaders) == 1 else loaders

    def evolve_dataloader(self, samples: Sequence[Sample] | None = None, batch_size: int | None = None) -> DataLoader:
        """Full training images (all, or `samples`) with their masks and current labels, in a fixed order."""
        dataset = FullImageDataset(samples if samples is not None else self.train_scan.samples,
                                   self.mean, self.std, bank=self.bank, cache=self.cache)
        return self._loader(dataset, batch_size or self.loading.eval_batch_size, shuffle=False,
                            collate=PadCollate(self.evaluation.pad_multiple, self.evaluation.pad_always))

    def _fill_cache(self) -> None:
        """Decode the training images into the cache here, before the loader's workers start and share them."""
        if self.cache is None:
            return
        samples = self.train_scan.samples
        held = fill_image_cache(self.cache, samples)
        if held < len(samples):
            log.info("data.loading.cache_mb=%g holds %d of the %d training images (%.0f MiB); the others are "
                     "decoded for every sample", self.loading.cache_mb, held, len(samples), self.cache.used / 2**20)

    # ---- checkpoint state: the round trained against and the statistics --------------------
    def state_dict(self) -> dict[str, Any]:
        state = {"mean": self.mean, "std": self.std, "label": self.label_kind}
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
        checkpoint = load_torch_file(ckpt_path)
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
        recorded = state.get("label")
        if recorded is not None and self.label_kind is not None and recorded != self.label_kind:
            raise DatasetError(f"the checkpoint trained from label={recorded}, this run from label={self.label_kind}: "
                               f"resume with label={recorded} (or label=auto)")
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
