"""The paper's protocol: one training set, several test sets reported one by one and averaged; model selection
only against images held out of training; DDP evaluation that counts every image once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra.core.global_hydra import GlobalHydra
from pytorch_lightning.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DistributedSampler, SequentialSampler

from conftest import compose_config, tiny_train_overrides
from irstd.data.build import SourceSpec, build_dataset
from irstd.data.datamodule import IRSTDDataModule
from irstd.data.points import target_stats
from irstd.data.sources import DatasetError, decode_image
from irstd.data.synthetic import SyntheticSpec, generate_synthetic
from irstd.training.run import train

RATES = ("iou", "niou", "pixacc", "pd", "fa")
COUNTS = ("targets", "found", "false_targets")


@pytest.fixture(scope="module")
def merged(tmp_path_factory) -> Path:
    """Two tiny synthetic datasets merged as `M`: 6 training images, test sets A (2 images) and B (3)."""
    base = tmp_path_factory.mktemp("merge")
    first = generate_synthetic(base / "first", SyntheticSpec(num_train=3, num_test=2, height=64, width=64, seed=1))
    second = generate_synthetic(base / "second", SyntheticSpec(num_train=3, num_test=3, height=64, width=64, seed=2))
    return build_dataset(base / "M", [SourceSpec("A", first, "synthetic", "synthetic"),
                                      SourceSpec("B", second, "synthetic", "synthetic")]) and base / "M"


def merged_overrides(root: Path, *extra: str) -> list[str]:
    kept = [o for o in tiny_train_overrides(root) if not o.startswith("data.synthetic.")]
    return kept + ["data.synthetic=null", "data.split=M", *extra]


def datamodule(root: Path, tmp_path: Path, **kwargs) -> IRSTDDataModule:
    options = dict(root=str(root), split="synthetic", bank_dir=str(tmp_path / "bank"), stats_file=None,
                   patch_size=32, loading={"eval_batch_size": 2, "num_workers": 0}, progress=False)
    return IRSTDDataModule(**(options | kwargs))


def test_several_test_sets_are_reported_one_by_one_and_averaged(merged, tmp_path):
    # threshold 0: every pixel predicted, so IoU and PA are the target fractions, which differ between the sets
    cfg = compose_config("train", tmp_path / "run", merged_overrides(merged, "data.evaluation.test_sets=[A,B]",
                                                                     "model.threshold=0"))
    metrics, objects = train(cfg)
    GlobalHydra.instance().clear()
    assert 0 < metrics["test/A/iou"] != metrics["test/B/iou"] > 0
    for key in RATES:
        assert metrics[f"test/{key}"] == pytest.approx((metrics[f"test/A/{key}"] + metrics[f"test/B/{key}"]) / 2), key
    for key in COUNTS:
        assert metrics[f"test/{key}"] == metrics[f"test/A/{key}"] + metrics[f"test/B/{key}"], key
    assert metrics["test/A/targets"] > 0 and metrics["test/B/targets"] > 0
    assert not [k for k in metrics if "dataloader_idx" in k]
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["test/B/iou"] == pytest.approx(metrics["test/B/iou"]) and "test/iou" in saved
    assert saved["select/best"] == 0 and saved["select/epoch"] == 1  # the last of 2 epochs

    # each set's figures are those of testing that set alone, where the keys are the plain ones
    trainer, model = objects["trainer"], objects["model"]
    for name in ("A", "B"):
        single = datamodule(merged, tmp_path, split="M", evaluation={"test_sets": [name]},
                            mean=objects["datamodule"].mean, std=objects["datamodule"].std)
        [alone] = trainer.test(model, datamodule=single, verbose=False)
        assert sorted(alone) == sorted(f"test/{key}" for key in RATES + COUNTS)
        for key in RATES + COUNTS:
            assert alone[f"test/{key}"] == pytest.approx(metrics[f"test/{name}/{key}"]), (name, key)


def test_validation_monitors_all_test_sets_together(merged, tmp_path):
    dm = datamodule(merged, tmp_path, split="M", evaluation={"test_sets": ["A", "B"]})
    dm.setup("fit")
    assert [len(loader.dataset) for loader in dm.test_dataloader()] == [2, 3]
    assert sorted(dm.val_dataloader().dataset.samples, key=lambda s: s.name) == sorted(
        dm.test_scans["A"].samples + dm.test_scans["B"].samples, key=lambda s: s.name)
    with pytest.raises(Exception, match=r"data\.evaluation\.test_sets"):
        assert dm.test_scan  # irstd-eval scores one split


def test_val_fraction_holds_training_images_out(tiny_dataset, tmp_path):
    train_names = (tiny_dataset / "img_idx" / "train_synthetic.txt").read_text().split()
    dm = datamodule(tiny_dataset, tmp_path / "a", holdout={"fraction": 0.34, "seed": 3})
    dm.setup("fit")
    trained = [s.name for s in dm.train_scan.samples]
    held = [s.name for s in dm.val_scan.samples]
    assert len(held) == 2 and len(trained) == 4 and sorted(trained + held) == sorted(train_names)
    assert dm.bank.names() == trained  # the held-out images get no labels: not trained on, not evolved
    assert [s.name for s in dm.val_dataloader().dataset.samples] == held
    assert not dm.test_scans  # validation does not need the test split
    stats = [s.load_image() for s in dm.train_scan.samples]
    assert dm.mean == pytest.approx(sum(float(im.mean()) for im in stats) / 4, rel=1e-6)

    again = datamodule(tiny_dataset, tmp_path / "b", holdout={"fraction": 0.34, "seed": 3})
    again.setup("fit")
    assert [s.name for s in again.val_scan.samples] == held
    choices = set()
    for seed in range(6):
        other = datamodule(tiny_dataset, tmp_path / f"seed{seed}", holdout={"fraction": 0.34, "seed": seed})
        other.setup("fit")
        choices.add(tuple(sorted(s.name for s in other.val_scan.samples)))
    assert len(choices) > 1
    with pytest.raises(ValueError, match=r"data\.holdout\.fraction"):
        datamodule(tiny_dataset, tmp_path, holdout={"fraction": 1.0})


def test_select_best_needs_a_validation_split_carved_from_training(tiny_dataset, tmp_path):
    cfg = compose_config("train", tmp_path / "run", tiny_train_overrides(tiny_dataset) + ["select=best"])
    with pytest.raises(ValueError, match=r"select=best.*data\.holdout\.fraction"):
        train(cfg)
    assert not (tmp_path / "run" / "checkpoints").exists()
    GlobalHydra.instance().clear()


def test_select_best_tests_the_best_validation_checkpoint(tiny_dataset, tmp_path):
    # threshold 1: nothing is ever predicted, val/iou ties at 0, and a tie keeps the first epoch: the best
    # checkpoint is epoch 0's, not the last one
    cfg = compose_config("train", tmp_path / "run", tiny_train_overrides(tiny_dataset) + [
        "select=best", "data.holdout.fraction=0.34", "model.threshold=1"])
    metrics, objects = train(cfg)
    GlobalHydra.instance().clear()
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["select/best"] == 1 and saved["select/epoch"] == 0 and "test/iou" in saved
    held_out = objects["datamodule"].val_scan.samples
    assert saved["val/targets"] == sum(len(target_stats(s.load_mask())) for s in held_out) > 0
    checkpoints = tmp_path / "run" / "checkpoints"
    best = torch.load(checkpoints / "best_epoch_000.ckpt", map_location="cpu", weights_only=False)
    last = torch.load(checkpoints / "last.ckpt", map_location="cpu", weights_only=False)
    assert best["epoch"] == 0 and last["epoch"] == 1
    tested = objects["model"].state_dict()
    assert all(torch.equal(tested[k], v) for k, v in best["state_dict"].items())
    assert not all(torch.equal(tested[k], v) for k, v in last["state_dict"].items())


@pytest.mark.parametrize("world_size", [2, 3])
def test_ddp_eval_loaders_count_every_image_once(tiny_dataset, tmp_path, world_size):
    dm = datamodule(tiny_dataset, tmp_path, mean=0.0, std=1.0)
    dm.setup("test")
    samples = dm.test_scan.samples  # 3 images: uneven shards over 2 ranks
    seen = []
    for rank in range(world_size):
        loader = dm._eval_loader(samples, world_size=world_size, rank=rank)
        # a DistributedSampler subclass: Lightning keeps it instead of injecting a padding one
        assert isinstance(loader.sampler, UnrepeatedDistributedSampler)
        assert isinstance(loader.sampler, DistributedSampler)
        seen += [name for batch in loader for name in batch["name"]]
    assert sorted(seen) == sorted(s.name for s in samples)
    assert isinstance(dm.test_dataloader().sampler, SequentialSampler)  # no process group: one process
    with pytest.raises(DatasetError, match="3 evaluation images .* 4 DDP ranks"):
        dm._eval_loader(samples, world_size=4, rank=0)


def test_ddp_test_counts_every_image_once(merged, tmp_path):
    """2 CPU ranks over test sets of 2 and 3 images: a padding sampler would score one image of B twice."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("LOCAL_RANK", "WORLD_SIZE", "NODE_RANK", "MASTER_ADDR", "MASTER_PORT")}
    args = merged_overrides(merged, "data.evaluation.test_sets=[A,B]", "model.threshold=0", "trainer=ddp_cpu",
                            "trainer.max_epochs=1", f"hydra.run.dir={tmp_path / 'run'}")
    result = subprocess.run([sys.executable, "-m", "irstd.cli.train", *args], cwd=tmp_path, timeout=300,
                            env=env | {"IRSTD_ROOT": str(tmp_path)}, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-5000:]
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    for name, images in (("A", 2), ("B", 3)):
        names = (merged / "img_idx" / f"test_{name}.txt").read_text().split()
        targets = sum(len(target_stats(decode_image(merged / "masks" / f"{n}.png") > 0)) for n in names)
        assert saved[f"test/{name}/targets"] == targets
        # threshold 0 predicts each whole image as one component: one false target per image scored
        assert saved[f"test/{name}/false_targets"] + saved[f"test/{name}/found"] == images
