import json
import logging
import shutil
from dataclasses import fields

import hydra
import numpy as np
import pytest
import torch
from hydra.core.global_hydra import GlobalHydra
from PIL import Image

from conftest import compose_config, tiny_train_overrides
from irstd.data.datamodule import (
    EvaluationOptions,
    HoldoutOptions,
    IRSTDDataModule,
    LoadingOptions,
    PolicyOptions,
)
from irstd.data.datasets import EpochSampler, TrainDataset
from irstd.data.points import centroid_points, map_to_points
from irstd.data.protocols import LabelSource
from irstd.data.sources import DatasetError, decode_image


def make_dm(root, tmp_path, **kwargs):
    options = dict(root=str(root), split="synthetic", label="full", bank_dir=str(tmp_path / "bank"),
                   stats_file=str(tmp_path / "normalization.json"), patch_size=32, batch_size=3,
                   loading={"eval_batch_size": 2, "num_workers": 0}, progress=False)
    options.update(kwargs)
    return IRSTDDataModule(**options)


def names(root, stage):
    return (root / "img_idx" / f"{stage}_synthetic.txt").read_text().split()


def test_round_zero_holds_the_chosen_point_labels(tiny_dataset, tmp_path):
    dm = make_dm(tiny_dataset, tmp_path / "c", label="centroid")
    dm.setup("fit")
    for name in names(tiny_dataset, "train"):
        mask = decode_image(tiny_dataset / "masks" / f"{name}.png") > 0
        label = dm.bank.read(name)
        assert label.dtype == np.float32 and label.shape == mask.shape
        points = sorted(map(tuple, centroid_points(mask).tolist()))
        assert sorted(map(tuple, map_to_points(label).tolist())) == points and points
    full = make_dm(tiny_dataset, tmp_path / "f")
    full.setup("fit")
    name = names(tiny_dataset, "train")[0]
    assert np.array_equal(full.bank.read(name) > 0, decode_image(tiny_dataset / "masks" / f"{name}.png") > 0)


def test_normalisation_from_train_split_only_and_cached(tiny_dataset, tmp_path):
    dm = make_dm(tiny_dataset, tmp_path)
    dm.setup("fit")
    train = [decode_image(tiny_dataset / "images" / f"{n}.png") for n in names(tiny_dataset, "train")]
    assert dm.mean == pytest.approx(np.mean([im.mean() for im in train]), rel=1e-6)
    assert dm.std == pytest.approx(np.mean([im.std() for im in train]), rel=1e-6)
    cached = json.loads((tmp_path / "normalization.json").read_text())
    assert cached["mean"] == pytest.approx(dm.mean)
    (tmp_path / "normalization.json").write_text(json.dumps({"mean": 1.0, "std": 2.0}))
    again = make_dm(tiny_dataset, tmp_path)
    again.setup("fit")
    assert (again.mean, again.std) == (1.0, 2.0)


def test_coarse_points_follow_the_label_seed(tiny_dataset, tmp_path):
    def round_zero(seed, folder):
        dm = make_dm(tiny_dataset, tmp_path / folder, label="coarse", label_options={"kind": "coarse", "seed": seed})
        dm.setup("fit")
        return [map_to_points(label).tolist() for label in dm.bank.read_round(0).values()]

    first = round_zero(0, "a")
    assert round_zero(0, "b") == first
    assert round_zero(5, "c") != first


GROUPS = {"loading": LoadingOptions, "evaluation": EvaluationOptions, "policies": PolicyOptions,
          "holdout": HoldoutOptions}


def test_setting_groups_arrive_as_dicts_and_become_dataclasses(tiny_dataset, tmp_path):
    cfg = compose_config("train", tmp_path / "run", tiny_train_overrides(tiny_dataset) + [
        "data.holdout.fraction=0.34", "data.evaluation.test_sets=[synthetic]"])
    GlobalHydra.instance().clear()
    for key, kind in GROUPS.items():  # the config's groups and the dataclasses hold the same keys
        assert list(cfg.data[key]) == [field.name for field in fields(kind)], key
    dm = hydra.utils.instantiate(cfg.data, _convert_="all")
    assert dm.loading == LoadingOptions(num_workers=0, persistent_workers=True, eval_batch_size=2)
    assert dm.holdout == HoldoutOptions(split="test", fraction=0.34, seed=0)
    assert dm.evaluation.test_sets == ("synthetic",) and dm.test_set_names == ["synthetic"]
    assert dm.policies == PolicyOptions()
    # hyperparameters (and so checkpoints) hold plain dicts, not our classes
    assert dm.hparams.loading == {"num_workers": 0, "persistent_workers": True, "pin_memory": False,
                                  "eval_batch_size": 2, "cache_mb": 1024}
    assert all(type(dm.hparams[key]) is dict for key in GROUPS)
    same = make_dm(tiny_dataset, tmp_path, loading=LoadingOptions(eval_batch_size=2))
    assert same.loading == LoadingOptions(eval_batch_size=2) and same.hparams.loading["eval_batch_size"] == 2


@pytest.mark.parametrize("group", list(GROUPS))
def test_an_unknown_key_in_a_group_is_named(tiny_dataset, tmp_path, group):
    with pytest.raises(ValueError, match=rf"unknown key data\.{group}\.num_wokers: data\.{group} takes "):
        make_dm(tiny_dataset, tmp_path, **{group: {"num_wokers": 0}})


def test_an_unknown_key_from_the_command_line_is_named(tiny_dataset, tmp_path):
    cfg = compose_config("train", tmp_path / "run", tiny_train_overrides(tiny_dataset) + [
        "+data.loading.num_wokers=0"])
    GlobalHydra.instance().clear()
    with pytest.raises(Exception, match=r"data\.loading\.num_wokers"):
        hydra.utils.instantiate(cfg.data, _convert_="all")


@pytest.mark.parametrize(("options", "key"), [
    (dict(policies={"size_mismatch": "stretch"}), "data.policies.size_mismatch"),
    (dict(policies={"bad_files": "ignore"}), "data.policies.bad_files"),
    (dict(holdout={"split": "train"}), "data.holdout.split"),
    (dict(holdout={"fraction": 1.0}), "data.holdout.fraction"),
    (dict(evaluation={"test_sets": ["A", "A"]}), "data.evaluation.test_sets"),
    (dict(evaluation={"pad_multiple": 0}), "data.evaluation.pad_multiple"),
    (dict(loading={"eval_batch_size": 0}), "data.loading.eval_batch_size"),
    (dict(patch_size=48), "data.evaluation.pad_multiple"),
])
def test_bad_group_values_name_the_key(tiny_dataset, tmp_path, options, key):
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        make_dm(tiny_dataset, tmp_path, **options)


def test_the_datamodule_is_the_label_source_the_callback_needs(tiny_dataset, tmp_path):
    dm = make_dm(tiny_dataset, tmp_path)
    assert isinstance(dm, LabelSource)
    dm.setup("fit")
    assert isinstance(dm, LabelSource)
    batch = next(iter(dm.evolve_dataloader(dm.train_scan.samples[:2], batch_size=2)))
    assert {"image", "name", "valid_hw", "label", "mask", "has_mask"} <= set(batch)

    class WithoutLoader:
        bank = dm.bank
        train_scan = dm.train_scan

    class WithoutBank:
        train_scan = dm.train_scan

        def evolve_dataloader(self, samples=None, batch_size=None):
            return []

    assert not isinstance(WithoutLoader(), LabelSource)
    assert not isinstance(WithoutBank(), LabelSource)


def test_mean_without_std_is_a_config_error(tiny_dataset, tmp_path):
    with pytest.raises(ValueError, match="data.mean and data.std"):
        make_dm(tiny_dataset, tmp_path, mean=100.0)


def test_train_crops_keep_image_and_label_aligned(tiny_dataset, tmp_path):
    dm = make_dm(tiny_dataset, tmp_path, mean=0.0, std=1.0)
    dm.setup("fit")
    # a round whose labels are the raw images: every crop/flip/rotation must keep label == image
    dm.bank.commit({n: decode_image(tiny_dataset / "images" / f"{n}.png") for n in dm.bank.names()})
    torch.manual_seed(0)
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (3, 1, 32, 32)
    assert torch.equal(batch["image"], batch["label"])


def test_positive_crops_put_a_target_in_every_training_crop(tiny_dataset, tmp_path):
    def empty_crops(**kwargs):
        dm = make_dm(tiny_dataset, tmp_path / str(kwargs), mean=0.0, std=1.0, **kwargs)
        dm.setup("fit")
        loader = dm.train_dataloader()
        crops = [crop for epoch in range(4) for batch in epoch_batches(loader, epoch) for crop in batch]
        return sum(int(crop[1].sum() == 0) for crop in crops)

    assert empty_crops() > 0  # 32 x 32 crops of the 64 x 64 tiny images often miss the targets
    assert empty_crops(positive_crops=1.0) == 0


@pytest.mark.parametrize("fraction", [-0.1, 1.5])
def test_positive_crop_fraction_is_checked(tiny_dataset, tmp_path, fraction):
    with pytest.raises(ValueError, match="data.positive_crops"):
        make_dm(tiny_dataset, tmp_path, positive_crops=fraction)


def test_eval_batches_are_padded_and_carry_sizes(tmp_path):
    root = tmp_path / "odd"
    for folder in ("images", "masks", "img_idx"):
        (root / folder).mkdir(parents=True)
    sizes = {"a": (40, 50), "b": (33, 70)}
    for name, (h, w) in sizes.items():
        Image.fromarray(np.full((h, w), 90, np.uint8)).save(root / "images" / f"{name}.png")
        mask = np.zeros((h, w), np.uint8)
        mask[h - 1, w - 1] = 255
        Image.fromarray(mask).save(root / "masks" / f"{name}.png")
    (root / "img_idx" / "train_odd.txt").write_text("a\r\nb\r\n")
    (root / "img_idx" / "test_odd.txt").write_text("a\n\nb  \n")
    dm = IRSTDDataModule(root=str(root), split="odd", mean=0.0, std=1.0,
                         loading={"eval_batch_size": 2, "num_workers": 0}, progress=False)
    dm.setup("test")
    batch = next(iter(dm.test_dataloader()))
    assert batch["image"].shape == (2, 1, 64, 96)
    assert batch["valid_hw"].tolist() == [[40, 50], [33, 70]]
    assert batch["name"] == ["a", "b"]
    for i, (h, w) in enumerate(sizes.values()):
        assert batch["mask"][i, 0, h - 1, w - 1] == 1 and batch["mask"][i].sum() == 1
        assert batch["image"][i, 0, h:, :].abs().sum() == 0


def test_persistent_workers_see_a_new_round(tiny_dataset, tmp_path):
    dm = make_dm(tiny_dataset, tmp_path, loading={"num_workers": 1, "persistent_workers": True}, augment=False)
    dm.setup("fit")
    loader = dm.train_dataloader()
    first = torch.cat([b["label"] for b in loader])
    assert set(first.unique().tolist()) <= {0.0, 1.0}
    dm.bank.commit({n: np.full_like(dm.bank.read(n), 0.25) for n in dm.bank.names()})
    second = torch.cat([b["label"] for b in loader])
    assert torch.all(second == 0.25)
    assert loader._iterator is not None and loader._iterator._persistent_workers


def test_state_dict_restores_the_recorded_round(tiny_dataset, tmp_path):
    dm = make_dm(tiny_dataset, tmp_path)
    dm.setup("fit")
    state = dm.state_dict()
    assert state["label_round"] == 0 and state["mean"] == dm.mean
    dm.bank.commit({n: np.zeros_like(dm.bank.read(n)) for n in dm.bank.names()})
    assert dm.bank.current_round() == 1
    dm.load_state_dict(state)
    assert dm.bank.current_round() == 0


def test_corrupt_image_is_reported_at_setup(tiny_dataset, tmp_path):
    root = tmp_path / "broken"
    shutil.copytree(tiny_dataset, root)
    name = names(root, "train")[1]
    path = root / "images" / f"{name}.png"
    path.write_bytes(path.read_bytes()[:60])
    dm = make_dm(root, tmp_path)
    with pytest.raises(DatasetError) as info:
        dm.setup("fit")
    assert str(path) in str(info.value) and str(root) in str(info.value)
    skipping = make_dm(root, tmp_path / "skip", policies={"bad_files": "skip"})
    skipping.setup("fit")
    assert name not in skipping.bank.names() and len(skipping.bank.names()) == len(names(root, "train")) - 1


def test_dataset_without_masks_trains_on_point_pngs(tiny_dataset, tmp_path, caplog):
    root = tmp_path / "points_only"
    shutil.copytree(tiny_dataset, root)
    (root / "masks_centroid").mkdir()
    for name in names(root, "train") + names(root, "test"):
        mask = decode_image(root / "masks" / f"{name}.png") > 0
        point_map = np.zeros(mask.shape, np.uint8)
        for r, c in centroid_points(mask):
            point_map[r, c] = 255
        Image.fromarray(point_map).save(root / "masks_centroid" / f"{name}.png")
    shutil.rmtree(root / "masks")
    dm = make_dm(root, tmp_path, label="centroid_png")
    with caplog.at_level(logging.WARNING):
        dm.setup("fit")
    assert dm.val_dataloader() == []
    assert "no masks" in caplog.text
    batch = next(iter(dm.train_dataloader()))
    assert batch["label"].shape == (3, 1, 32, 32)
    with pytest.raises(DatasetError, match="masks"):
        make_dm(root, tmp_path / "full", label="full").setup("fit")


def test_training_dataset_rejects_a_label_of_the_wrong_size(tiny_dataset, tmp_path):
    dm = make_dm(tiny_dataset, tmp_path)
    dm.setup("fit")

    class ShrunkBank:
        root = dm.bank.root

        def read(self, name):
            return np.zeros((5, 5), np.float32)

    dataset = TrainDataset(dm.train_scan.samples, ShrunkBank(), 0.0, 1.0, 32)
    with pytest.raises(DatasetError, match=dm.train_scan.samples[0].name):
        dataset[0]


def test_a_lone_last_training_image_is_dropped(tiny_dataset, tmp_path):
    five = make_dm(tiny_dataset, tmp_path / "five", batch_size=5)  # 6 images: batches of 5 and 1
    five.setup("fit")
    assert [len(b["image"]) for b in five.train_dataloader()] == [5]
    four = make_dm(tiny_dataset, tmp_path / "four", batch_size=4)  # 6 images: batches of 4 and 2 kept
    four.setup("fit")
    assert sorted(len(b["image"]) for b in four.train_dataloader()) == [2, 4]


def epoch_batches(loader, epoch: int) -> list[torch.Tensor]:
    loader.sampler.set_epoch(epoch)
    return [torch.cat([b["image"], b["label"]], dim=1) for b in loader]


def test_training_batches_depend_on_seed_and_epoch_only(tiny_dataset, tmp_path):
    """Same crops and flips with or without workers, and when an epoch is revisited (a resume)."""
    in_process = make_dm(tiny_dataset, tmp_path / "a", seed=7)
    in_process.setup("fit")
    with_workers = make_dm(tiny_dataset, tmp_path / "b", seed=7, loading={"num_workers": 2})
    with_workers.setup("fit")
    loader_a, loader_b = in_process.train_dataloader(), with_workers.train_dataloader()
    epoch3 = epoch_batches(loader_a, 3)
    for mine, theirs in zip(epoch3, epoch_batches(loader_b, 3), strict=True):
        assert torch.equal(mine, theirs)
    assert not all(torch.equal(x, y) for x, y in zip(epoch3, epoch_batches(loader_a, 4), strict=True))
    for mine, again in zip(epoch3, epoch_batches(loader_a, 3), strict=True):
        assert torch.equal(mine, again)
    other_seed = make_dm(tiny_dataset, tmp_path / "c", seed=8)
    other_seed.setup("fit")
    assert not all(torch.equal(x, y) for x, y in zip(epoch3, epoch_batches(other_seed.train_dataloader(), 3),
                                                     strict=True))


def test_rank_shards_cover_the_training_set(tiny_dataset, tmp_path):
    dm = make_dm(tiny_dataset, tmp_path)
    dm.setup("fit")
    dataset = TrainDataset(dm.train_scan.samples, dm.bank, dm.mean, dm.std, 32)
    for world in (2, 4):  # 6 images: even shards, then shards padded by repetition
        keys = []
        for rank in range(world):
            sampler = EpochSampler(dataset, seed=1, num_replicas=world, rank=rank)
            sampler.set_epoch(2)
            keys.append(list(sampler))
        assert len({len(k) for k in keys}) == 1, "every rank runs the same number of steps"
        indices = [index for shard in keys for epoch, index in shard]
        assert {epoch for shard in keys for epoch, _ in shard} == {2}
        assert set(indices) == set(range(len(dataset)))
        assert len(indices) == -(-len(dataset) // world) * world
