"""data.loading.cache_mb: decoded images and current labels held in memory give the same batches, within the cap."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from irstd.data.datamodule import IRSTDDataModule
from irstd.data.datasets import DecodedCache, fill_image_cache, load_image_compact


def make_dm(root, tmp_path, cache_mb, **loading):
    return IRSTDDataModule(root=str(root), split="synthetic", label="full", bank_dir=str(tmp_path / "bank"),
                           stats_file=str(tmp_path / "normalization.json"), patch_size=32, batch_size=4, seed=3,
                           loading={"num_workers": 0, "cache_mb": cache_mb, **loading}, progress=False)


def epoch(loader, index: int) -> list[torch.Tensor]:
    loader.sampler.set_epoch(index)
    return [torch.cat([b["image"], b["label"]], dim=1) for b in loader]


@pytest.mark.parametrize("workers", [0, 1])
def test_cached_batches_equal_uncached_ones_across_a_new_round(tiny_dataset, tmp_path, workers):
    plain = make_dm(tiny_dataset, tmp_path / "plain", 0)
    cached = make_dm(tiny_dataset, tmp_path / "cached", 64, num_workers=workers, persistent_workers=workers > 0)
    for dm in (plain, cached):
        dm.setup("fit")
    assert plain.cache is None and cached.cache is not None
    loaders = plain.train_dataloader(), cached.train_dataloader()
    assert len(cached.cache) == len(cached.train_scan.samples), "the images are decoded before the workers start"
    for index in (0, 1):  # the second epoch reads the labels from the cache
        for mine, theirs in zip(*(epoch(loader, index) for loader in loaders), strict=True):
            assert torch.equal(mine, theirs)
    # a new round reaches the cached dataset (persistent workers too) from the next sample on
    rng = np.random.default_rng(0)
    soft = {n: rng.random(plain.bank.read(n).shape).astype(np.float32) for n in plain.bank.names()}
    for dm in (plain, cached):
        dm.bank.commit(soft)
    new_round = [epoch(loader, 2) for loader in loaders]
    for mine, theirs in zip(*new_round, strict=True):
        assert torch.equal(mine, theirs)
    assert not all(set(batch[:, 1].unique().tolist()) <= {0.0, 1.0} for batch in new_round[1])
    # the whole images of a round are the same too
    for mine, theirs in zip(plain.evolve_dataloader(), cached.evolve_dataloader(), strict=True):
        assert torch.equal(mine["image"], theirs["image"]) and torch.equal(mine["label"], theirs["label"])


def test_the_cap_is_respected(tiny_dataset, tmp_path):
    dm = make_dm(tiny_dataset, tmp_path, 0)
    dm.setup("fit")
    samples = dm.train_scan.samples
    one = load_image_compact(samples[0])
    assert one.dtype == np.uint8 and np.array_equal(one.astype(np.float32), samples[0].load_image())
    cap = 2 * one.nbytes + one.nbytes // 2  # room for two 8-bit images
    cache = DecodedCache(cap)
    assert fill_image_cache(cache, samples) == 2 and cache.used == 2 * one.nbytes <= cap
    # what does not fit is loaded and returned, not kept
    label = cache.get(("label", samples[0].name), lambda: np.zeros((64, 64), np.float32))
    assert label.shape == (64, 64) and len(cache) == 2 and cache.used <= cap
    cache.discard(lambda key: key[1] != samples[0].name)
    assert len(cache) == 1 and cache.used == one.nbytes


def test_a_small_cap_still_gives_the_same_batches(tiny_dataset, tmp_path):
    plain = make_dm(tiny_dataset, tmp_path / "plain", 0)
    # 64 x 64 8-bit images: 4 KiB each, so 10 KiB holds two images and no 16 KiB float32 label
    small = make_dm(tiny_dataset, tmp_path / "small", 10 / 1024)
    for dm in (plain, small):
        dm.setup("fit")
    loaders = plain.train_dataloader(), small.train_dataloader()
    assert len(small.cache) == 2 and small.cache.used <= 10 * 1024
    for mine, theirs in zip(*(epoch(loader, 0) for loader in loaders), strict=True):
        assert torch.equal(mine, theirs)
    assert small.cache.used <= 10 * 1024


def test_a_negative_cap_names_the_key(tiny_dataset, tmp_path):
    with pytest.raises(ValueError, match=r"data\.loading\.cache_mb"):
        make_dm(tiny_dataset, tmp_path, -1)
