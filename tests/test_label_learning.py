"""The label-learning layer end to end: label_init x label_update x start x loss compose and train, from points
alone, with round 0 cached in the run directory, PAL's admissions restricting training, and exact resume."""

from __future__ import annotations

import itertools
import shutil
import subprocess
import sys
from pathlib import Path

import hydra
import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from conftest import compose_config, tiny_train_overrides
from irstd.config import CONFIG_MODULE, config_root
from irstd.data.datasets import EpochSampler
from irstd.data.label_bank import LabelBank
from irstd.labels.init.initialisers import PointLabels
from irstd.lesps.callback import FixedLabelsCallback, LabelUpdateCallback
from irstd.lesps.progressive import PALCallback
from irstd.training.run import train

LOSS_CLASSES = {"focal": "FocalLoss", "softiou": "SoftIoULoss", "bce_dice": "BCEDiceLoss", "edge_bce": "EdgeBCELoss",
                "sls": "SLSLoss"}


def options(group: str) -> list[str]:
    return sorted(path.stem for path in (config_root() / group).glob("*.yaml"))


def test_the_groups_ship_the_documented_options():
    assert options("label_init") == ["clustering", "diffusion", "points", "pseudo"]
    assert options("label_update") == ["lesps", "none", "pal"]
    assert options("start") == ["epoch", "fraction", "loss", "plateau"]
    assert options("loss") == ["bce_dice", "edge_bce", "focal", "sls", "softiou"]


def combinations(every: bool) -> list[tuple[str, str, str, str]]:
    """(label_init, label_update, start, loss): all of them, or every (update, start) pair -- the groups that meet
    through an interpolation (`label_update.start: ${start}`) -- with the initialisers and losses cycled along."""
    inits, updates, starts, losses = (options(g) for g in ("label_init", "label_update", "start", "loss"))
    if every:
        return list(itertools.product(inits, updates, starts, losses))
    pairs = list(itertools.product(updates, starts))
    return [(inits[i % len(inits)], update, start, losses[i % len(losses)]) for i, (update, start) in enumerate(pairs)]


@pytest.mark.parametrize("every", [pytest.param(True, marks=pytest.mark.slow), False], ids=["all", "pairs"])
def test_every_combination_composes_and_builds(tiny_dataset, every):
    """The combinations compose; the initialiser, the callback (with its start rule) and the loss of each build."""
    GlobalHydra.instance().clear()
    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        for init, update, start, loss in combinations(every):
            cfg = compose(config_name="train", overrides=[
                f"data.root={tiny_dataset}", f"label_init={init}", f"label_update={update}", f"start={start}",
                f"loss={loss}", "paths.output_dir=/nonexistent"])
            assert hydra.utils.instantiate(cfg.data.label_init).name == init
            callback = hydra.utils.instantiate(cfg.label_update, _convert_="all")
            assert isinstance(callback, FixedLabelsCallback if update == "none" else LabelUpdateCallback)
            if update != "none":
                assert callback.start_rule.name == start
            assert hydra.utils.instantiate(cfg.model.loss)._get_name() == LOSS_CLASSES[loss]


def test_the_lesps_presets_mean_what_they_meant(tmp_path):
    on = compose_config("train", tmp_path, ["lesps=default"])
    assert (on.label_init._target_.endswith("PointLabels"), on.label_update._target_.endswith("LESPSCallback"),
            on.start.name) == (True, True, "loss")
    GlobalHydra.instance().clear()
    off = compose_config("train", tmp_path, ["lesps=off"])
    assert off.label_init._target_.endswith("PointLabels")
    assert off.label_update._target_.endswith("FixedLabelsCallback")
    GlobalHydra.instance().clear()


@pytest.mark.parametrize(("option", "override", "named"), [("diffusion", "label_init.window=4", "window"),
                                                         ("clustering", "label_init.trials=0", "trials"),
                                                         ("diffusion", "+label_init.windw=5", "windw")])
def test_bad_initialiser_settings_fail_at_startup_naming_the_key(tmp_path, option, override, named):
    cfg = compose_config("train", tmp_path, [f"label_init={option}", override])
    with pytest.raises(Exception, match=rf"label_init \({option}\).*{named}"):
        hydra.utils.instantiate(cfg.data.label_init)
    GlobalHydra.instance().clear()


@pytest.mark.parametrize("option", ["pseudo", "diffusion", "clustering"])
def test_with_full_labels_the_masks_are_round_0_and_point_grown_initialisers_are_not_run(tmp_path, tiny_dataset,
                                                                                         option, caplog):
    cfg = compose_config("train", tmp_path, [*tiny_train_overrides(tiny_dataset, label="full"), f"label_init={option}"])
    with caplog.at_level("INFO", logger="irstd.data.datamodule"):
        datamodule = hydra.utils.instantiate(cfg.data, _convert_="all")
    assert datamodule.label_init is None
    assert f"label_init={option}, which grows masks from points, is not run" in caplog.text
    datamodule.setup("fit")
    for sample in datamodule.train_scan.samples:
        np.testing.assert_array_equal(datamodule.bank.read(sample.name) > 0.5, sample.load_mask())
    GlobalHydra.instance().clear()


def test_bad_label_learning_values_name_their_key(tmp_path, tiny_dataset):
    for override, key in [("label_update.Tb=2", "label_update.Tb"), ("label_update.decay=1.5", "label_update.decay"),
                          ("start.fraction=1.5", "start.fraction")]:
        update = "pal" if "decay" in override else "lesps"
        cfg = compose_config("train", tmp_path, [f"label_update={update}", "start=fraction", override])
        with pytest.raises(Exception, match=key.replace(".", r"\.")):
            hydra.utils.instantiate(cfg.label_update, _convert_="all")
        GlobalHydra.instance().clear()


class CountingPoints(PointLabels):
    """PointLabels that counts its calls, to see whether round 0 is computed again."""

    calls = 0

    def initialise(self, images, points):
        CountingPoints.calls += 1
        return super().initialise(images, points)


def test_round_zero_is_cached_in_the_run_directory_and_reused_on_resume(tiny_dataset, tmp_path):
    overrides = [*tiny_train_overrides(tiny_dataset, label="centroid"), "label_init=diffusion", "test=false",
                 "trainer.max_epochs=1"]
    cfg = compose_config("train", tmp_path / "run", overrides)
    train(cfg)
    bank = LabelBank(Path(cfg.paths.output_dir) / "label_bank")
    assert bank.round_meta(0)["label_init"] == "diffusion"
    round0 = bank.read_round(0)
    # diffusion masks are more than the points they grew from
    assert sum(float(label.sum()) for label in round0.values()) > 2 * len(round0)
    GlobalHydra.instance().clear()

    CountingPoints.calls = 0
    resumed = compose_config("train", tmp_path / "run", [
        *overrides, f"ckpt_path={Path(cfg.paths.output_dir) / 'checkpoints' / 'last.ckpt'}", "trainer.max_epochs=2",
        "label_init=points", f"label_init._target_={__name__}.CountingPoints"])
    train(resumed)
    assert CountingPoints.calls == 0  # the bank existed: round 0 was read back, not recomputed
    after = LabelBank(Path(cfg.paths.output_dir) / "label_bank").read_round(0)
    assert all(np.array_equal(after[name], round0[name]) for name in round0)
    GlobalHydra.instance().clear()


def test_the_sampler_draws_only_the_admitted_images_in_equal_shards():
    dataset = list(range(10))
    admitted = [1, 3, 4, 8]
    shards = [list(EpochSampler(dataset, seed=0, num_replicas=2, rank=rank, subset=lambda: admitted, batch_size=4))
              for rank in (0, 1)]
    assert len(shards[0]) == len(shards[1]) == 2
    assert {index for shard in shards for _, index in shard} == set(admitted)
    # one rank, three admitted images, batches of two: a lone last batch would follow, so one image repeats
    alone = list(EpochSampler(dataset, seed=0, subset=lambda: [2, 5, 7], batch_size=2))
    assert len(alone) == 4 and {index for _, index in alone} == {2, 5, 7}
    full = EpochSampler(dataset, seed=0, subset=lambda: None)
    assert sorted(index for _, index in full) == dataset


def points_only_dataset(tiny_dataset: Path, target: Path) -> Path:
    """The tiny dataset with its centroid points as PNGs and its masks removed: nothing but points."""
    shutil.copytree(tiny_dataset, target)
    subprocess.run([sys.executable, "-m", "irstd.cli.data", "points", str(target), "--type", "centroid"],
                   check=True, capture_output=True)
    shutil.rmtree(target / "masks")
    return target


def test_the_issue_command_trains_end_to_end_from_points_alone(tiny_dataset, tmp_path):
    root = points_only_dataset(tiny_dataset, tmp_path / "points_only")
    # the folder as any dataset of the user's: not (re)generated, and without masks
    overrides = [*(o for o in tiny_train_overrides(root, label="centroid_png") if not o.startswith("data.synthetic")),
                 "data.synthetic=null"]
    result = subprocess.run([sys.executable, "-m", "irstd.cli.train", *overrides, "label_init=diffusion",
                             "label_update=pal", "start=plateau", "start.window=1", "start.min_epochs=1",
                             "label_update.f=1", "loss=softiou", "trainer.max_epochs=4",
                             f"hydra.run.dir={tmp_path / 'run'}"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    bank = LabelBank(tmp_path / "run" / "label_bank")
    assert bank.round_meta(0)["label_init"] == "diffusion"
    # round 1 is PAL's easy set (before the first epoch); the plateau rule started updates within 4 epochs
    assert bank.round_meta(1)["epoch"] == -1 and len(bank.rounds()) >= 3
    assert "PAL: training on" in result.stderr + result.stdout


def alternate_easy_set(image, points, valid_hw, **_):
    """Every other image easy (by its first pixel's parity, so the same image always gets the same answer)."""
    easy = (image.flatten(1)[:, 0].round().long() % 2 == 0) | (torch.arange(image.shape[0]) == 0)
    return points.clone(), easy


def pal_overrides(tiny_dataset):
    return [*tiny_train_overrides(tiny_dataset, label="centroid"), "label_update=pal", "start=epoch", "start.Tepoch=1",
            "label_update.f=1", "label_update.initial_tolerance=1.0", "test=false",
            "callbacks.model_checkpoint.every_n_epochs=1"]


def test_pal_trains_on_its_admitted_images_and_resumes_its_admissions(tiny_dataset, tmp_path, monkeypatch):
    monkeypatch.setattr("irstd.lesps.progressive.easy_set_labels", alternate_easy_set)
    cfg = compose_config("train", tmp_path / "run", [*pal_overrides(tiny_dataset), "trainer.max_epochs=3"])
    _, objects = train(cfg)
    callback = next(c for c in objects["trainer"].callbacks if isinstance(c, PALCallback))
    admitted_at = callback.schedule.admitted_at.clone()
    easy = admitted_at == 0
    assert 0 < int(easy.sum()) < len(admitted_at)  # the easy set came first, the rest was outside at the start
    # tolerance 1: at the first round (end of epoch 1, the 2nd epoch) every hard image without false alarms joins
    assert set(admitted_at[~easy].tolist()) <= {-1, 2}
    assert objects["datamodule"].train_subset == callback.schedule.admitted.nonzero().flatten().tolist()
    GlobalHydra.instance().clear()

    checkpoint = Path(cfg.paths.output_dir) / "checkpoints" / "epoch_000.ckpt"
    resumed = compose_config("train", tmp_path / "resumed", [*pal_overrides(tiny_dataset), "trainer.max_epochs=3",
                                                             f"ckpt_path={checkpoint}"])
    _, objects = train(resumed)
    again = next(c for c in objects["trainer"].callbacks if isinstance(c, PALCallback))
    assert torch.equal(again.schedule.admitted_at, admitted_at)  # same admissions as the uninterrupted run
    GlobalHydra.instance().clear()


def test_pal_with_no_easy_image_trains_on_all_of_them(tiny_dataset, tmp_path, monkeypatch, caplog):
    monkeypatch.setattr("irstd.lesps.progressive.easy_set_labels",
                        lambda image, points, valid_hw, **_: (points.clone(), torch.zeros(image.shape[0], dtype=bool)))
    cfg = compose_config("train", tmp_path / "run", [*pal_overrides(tiny_dataset), "trainer.max_epochs=1"])
    _, objects = train(cfg)
    assert "no training image passed the easy-set test" in caplog.text
    assert objects["datamodule"].train_subset == list(range(len(objects["datamodule"].train_scan.samples)))
    GlobalHydra.instance().clear()


def test_shipped_pal_config_is_pals_schedule(tmp_path):
    cfg = compose_config("train", tmp_path, ["label_update=pal", "start=fraction"])
    pal = OmegaConf.to_container(cfg.label_update, resolve=True)
    assert (pal["f"], pal["stop"], pal["initial_tolerance"], pal["decay"], pal["start"]["fraction"]) == (
        5, 0.8, 0.2, 0.97, 0.2)
    GlobalHydra.instance().clear()


def test_pal_scales_wide_images_to_eight_bits_by_their_valid_region_only():
    from irstd.lesps.progressive import _eight_bit

    image = torch.zeros(2, 1, 4, 6)
    image[0, 0, :2, :3] = torch.tensor([[1000.0, 2000.0, 3000.0], [1500.0, 2500.0, 1000.0]])  # 16-bit, padded
    image[1, 0] = torch.arange(24.0).view(4, 6)  # 8-bit: left as it is
    scaled = _eight_bit(image, torch.tensor([[2, 3], [4, 6]]))
    assert scaled[0, 0, :2, :3].min() == 0 and scaled[0, 0, :2, :3].max() == 255  # the padding (0) set no bound
    assert torch.equal(scaled[1], image[1])
