"""The datasets, sampler and collate the DataModule serves: training crops, whole images, padded batches."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, DistributedSampler

from irstd.data.label_bank import LabelBank
from irstd.data.sources import DatasetError, Sample, bit_depth
from irstd.data.transforms import random_crop, random_dihedral
from irstd.ops.padding import pad_bottom_right, padded_size


class DecodedCache:
    """Decoded arrays held in this process's memory, up to `max_bytes` (`data.loading.cache_mb`).

    First come, first kept: a training epoch visits every image in a new order, so once the set does not fit,
    evicting would only trade one decode for another; what does not fit is decoded on every use, as without a
    cache. The arrays are shared with every caller: never write into one (the datasets below copy first).

    Filled before the loader's workers start (`fill_image_cache`), its arrays are shared with forked workers page
    by page, so images decoded once serve every worker; what a worker adds afterwards (labels) is its own.
    """

    def __init__(self, max_bytes: int):
        if max_bytes < 0:
            raise ValueError(f"data.loading.cache_mb must be >= 0, got {max_bytes / 2**20:g}")
        self.max_bytes = int(max_bytes)
        self.used = 0
        self._items: dict[Hashable, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._items

    def fits(self, nbytes: int) -> bool:
        return self.used + nbytes <= self.max_bytes

    def get(self, key: Hashable, load: Callable[[], np.ndarray]) -> np.ndarray:
        """The array kept under `key`, else `load()` (kept when it fits). Read-only for the caller."""
        array = self._items.get(key)
        if array is None:
            array = load()
            if self.fits(array.nbytes):
                self._items[key] = array
                self.used += array.nbytes
        return array

    def discard(self, keep: Callable[[Hashable], bool]) -> None:
        """Drop every entry whose key `keep` rejects."""
        for key in [key for key in self._items if not keep(key)]:
            self.used -= self._items.pop(key).nbytes


def load_image_compact(sample: Sample) -> np.ndarray:
    """`sample.load_image()` in the narrowest dtype that holds it exactly: uint8 for 8-bit images (a quarter of
    the float32 bytes), float32 otherwise; `.astype(np.float32)` gives back `load_image()` bit for bit."""
    image = sample.load_image()
    return image.astype(np.uint8) if bit_depth(sample.mode) == 8 else image


def _image_bytes(sample: Sample) -> int:
    return sample.image_hw[0] * sample.image_hw[1] * (1 if bit_depth(sample.mode) == 8 else 4)


def fill_image_cache(cache: DecodedCache, samples: Sequence[Sample]) -> int:
    """Decode `samples` into `cache` in order until the next one would not fit; returns how many it holds."""
    for sample in samples:
        if ("image", sample.name) in cache:
            continue
        if not cache.fits(_image_bytes(sample)):
            break
        cache.get(("image", sample.name), lambda sample=sample: load_image_compact(sample))
    return sum(("image", sample.name) in cache for sample in samples)


def _load_image(sample: Sample, cache: DecodedCache | None) -> np.ndarray:
    """The decoded image (float32, native units); a fresh array only when there is no cache."""
    if cache is None:
        return sample.load_image()
    return cache.get(("image", sample.name), lambda: load_image_compact(sample)).astype(np.float32, copy=False)


class TrainDataset(Dataset):
    """Random crops of the training images with their labels from the bank's current round.

    Items are addressed by `(epoch, index)` (see `EpochSampler`): the crop and the flip of a sample are
    drawn from a generator seeded by (seed, epoch, index), so they are the same whatever the number of
    workers or ranks, and a resumed run sees exactly what an uninterrupted one would have.
    The bank re-reads its manifest when it changes, so workers (persistent ones
    too) train on a newly committed round from the next sample on.

    With `positive_crops` > 0 that fraction of the crops is placed on a target of the current label
    (`random_crop`): on a target of the masks, the pseudo-masks or the points, whatever the bank holds.

    With a `cache` (`DecodedCache`) the decoded images, and the current round's labels, are kept in memory
    instead of being decoded for every sample; the items are the same bit for bit.
    """

    def __init__(self, samples: Sequence[Sample], bank: LabelBank, mean: float, std: float,
                 patch_size: int, augment: bool = True, seed: int = 0, cache: DecodedCache | None = None,
                 positive_crops: float = 0.0):
        self.samples = list(samples)
        self.bank = bank
        self.mean, self.std = mean, std
        self.patch_size = patch_size
        self.positive_crops = positive_crops
        self.augment = augment
        self.seed = seed
        self.cache = cache
        self._label_round: int | None = None

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: tuple[int, int] | int) -> dict[str, torch.Tensor]:
        epoch, index = key if isinstance(key, tuple) else (0, key)
        sample = self.samples[index]
        # the normalisation makes a new array: a cached image is never written
        image = torch.from_numpy((_load_image(sample, self.cache) - self.mean) / self.std)[None]
        label = torch.from_numpy(self._label(sample.name))[None]
        if label.shape != image.shape:
            raise DatasetError(f"label of {sample.name} in {self.bank.root} is {tuple(label.shape[1:])}, "
                               f"its image {sample.image} is {tuple(image.shape[1:])}")
        generator = torch.Generator().manual_seed(
            int(np.random.SeedSequence([self.seed, epoch, index]).generate_state(1)[0]))
        image, label = random_crop(image, label, self.patch_size, generator, positive=self.positive_crops)
        if self.augment:
            image, label = random_dihedral(image, label, generator)
        # a crop of a cached label may still share its memory: copy it out
        label = label.contiguous() if self.cache is None else label.clone(memory_format=torch.contiguous_format)
        return {"image": image.contiguous(), "label": label}

    def _label(self, name: str) -> np.ndarray:
        """The current round's label of `name`; with a cache, decoded once per round and process."""
        if self.cache is None:
            return self.bank.read(name)
        round_index = self.bank.current_round()
        if round_index != self._label_round:
            # a new round: the last round's labels are dead weight
            self.cache.discard(lambda key: key[0] != "label")
            self._label_round = round_index
        return self.cache.get(("label", name), lambda: self.bank.read(name, round=round_index))


class EpochSampler(DistributedSampler):
    """This rank's share of a (seed, epoch)-shuffled order, as `(epoch, index)` keys for `TrainDataset`.

    A DistributedSampler (so Lightning keeps it under DDP) that also works in one process; Lightning calls
    `set_epoch` every epoch, from the restored epoch after a resume. Shards are padded to equal length by
    repeating images, as DistributedSampler does, so every rank runs the same number of steps.

    `subset` (called at the start of every epoch) may restrict the epoch to some images (PAL trains on the
    images it has admitted so far): the same shuffled order is filtered, so each rank still gets an equal
    share, and one more image is repeated where a shard would end in a batch of one (`batch_size`), which
    batch norm after global pooling cannot train on.
    """

    def __init__(self, dataset: Dataset, seed: int, num_replicas: int = 1, rank: int = 0, shuffle: bool = True,
                 subset: Callable[[], Sequence[int] | None] | None = None, batch_size: int = 1):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed)
        self.subset = subset
        self.batch_size = batch_size

    def _active(self) -> set[int] | None:
        chosen = self.subset() if self.subset is not None else None
        return None if chosen is None else set(chosen)

    def __len__(self) -> int:
        active = self._active()
        return super().__len__() if active is None else self._shard_length(len(active))

    def _shard_length(self, count: int) -> int:
        length = -(-count // self.num_replicas)
        return length + 1 if length % self.batch_size == 1 and length > 1 else length

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch = self.epoch
        active = self._active()
        if active is None:
            return ((epoch, index) for index in super().__iter__())
        order = (torch.randperm(len(self.dataset), generator=torch.Generator().manual_seed(self.seed + epoch)).tolist()
                 if self.shuffle else list(range(len(self.dataset))))
        order = [index for index in order if index in active]
        if not order:
            return iter(())
        total = self._shard_length(len(order)) * self.num_replicas
        order = (order * (total // len(order) + 1))[:total]
        return ((epoch, index) for index in order[self.rank:total:self.num_replicas])


class FullImageDataset(Dataset):
    """Whole images (normalised) with their masks and, optionally, their current labels; images are taken from
    `cache` (a `DecodedCache`) when given."""

    def __init__(self, samples: Sequence[Sample], mean: float, std: float, bank: LabelBank | None = None,
                 cache: DecodedCache | None = None):
        self.samples = list(samples)
        self.mean, self.std = mean, std
        self.bank = bank
        self.cache = cache

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = self.samples[index]
        image = torch.from_numpy((_load_image(sample, self.cache) - self.mean) / self.std)[None]
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


class PadCollate:
    """`pad_collate` with fixed settings, picklable for worker processes."""

    def __init__(self, multiple: int, always: bool):
        self.multiple = multiple
        self.always = always

    def __call__(self, items):
        return pad_collate(items, self.multiple, self.always)
