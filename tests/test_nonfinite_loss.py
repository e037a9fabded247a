"""A NaN or infinite loss stops training with the step and the likely cause; a non-finite label round is never
committed; the last checkpoint and the label bank stay readable."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.core.global_hydra import GlobalHydra

import irstd.training.module
from conftest import compose_config, tiny_train_overrides
from irstd.data.datamodule import IRSTDDataModule
from irstd.data.label_bank import LabelBank, LabelBankError
from irstd.lesps.callback import LESPSCallback
from irstd.training.checkpoints import read_checkpoint
from irstd.training.module import IRSTDModule, NonFiniteLossError
from irstd.training.run import train

# 6 images / batch 4: global steps 0 and 1 are epoch 0, steps 2 and 3 epoch 1
FIRST_BAD_STEP = 2


def lesps_run(dataset, run_dir, *extra, start=("start.Tloss=1e9",)):
    """Three epochs with a LESPS round at the end of every epoch (from the first, by default); no testing."""
    return compose_config("train", run_dir, tiny_train_overrides(dataset, label="centroid", lesps="default") + [
        "test=false", "trainer.max_epochs=3", *start, "label_update.f=1", *extra])


def poison_the_loss_from(monkeypatch, step):
    original = IRSTDModule.training_loss

    def poisoned(self, batch):
        loss = original(self, batch)
        # multiplied rather than replaced: the NaN flows back into the gradients, as a real divergence's does
        return loss * math.nan if self.global_step >= step else loss

    monkeypatch.setattr(IRSTDModule, "training_loss", poisoned)


def poison_the_images_from(monkeypatch, step):
    def poisoned(self, batch, dataloader_idx):
        if self.trainer.training and self.trainer.global_step >= step:
            batch["image"][0, 0, 0, 0] = math.nan
        return batch

    monkeypatch.setattr(IRSTDDataModule, "on_after_batch_transfer", poisoned, raising=False)


def assert_left_readable(run: Path, epoch: int, label_round: int):
    checkpoint = read_checkpoint(run / "checkpoints" / "last.ckpt")
    assert checkpoint["epoch"] == epoch
    assert checkpoint["IRSTDDataModule"]["label_round"] == label_round
    assert all(torch.isfinite(value).all() for value in checkpoint["state_dict"].values() if value.is_floating_point())
    bank = LabelBank(run / "label_bank")
    assert bank.current_round() == label_round
    assert all(np.isfinite(label).all() for label in bank.read_round().values())


@pytest.mark.parametrize(("poison", "cause"), [
    (poison_the_loss_from, r"lower model\.optimizer\.lr \(now 0\.0005\)"),
    (poison_the_images_from, r"the batch's images hold NaN or inf values"),
], ids=["diverged", "nan-image"])
def test_a_nonfinite_loss_stops_at_once_naming_the_step_and_the_cause(poison, cause, tiny_dataset, tmp_path,
                                                                      monkeypatch):
    poison(monkeypatch, FIRST_BAD_STEP)
    cfg = lesps_run(tiny_dataset, tmp_path / "run")
    with pytest.raises(NonFiniteLossError, match=rf"loss is nan at global step {FIRST_BAD_STEP} \(epoch 1\): "
                                                 rf".*{cause}.*checkpoints/last\.ckpt"):
        train(cfg)
    GlobalHydra.instance().clear()
    # epoch 0 finished with its LESPS round (round 1) and its checkpoint; epoch 1 wrote neither
    assert_left_readable(Path(cfg.paths.output_dir), epoch=0, label_round=1)


def test_on_an_accelerator_the_first_bad_step_is_read_without_a_sync_per_step(tiny_dataset, tmp_path, monkeypatch):
    # the accelerator path on the CPU: the bad step is recorded on the device and read at the epoch's last batch
    monkeypatch.setattr(irstd.training.module, "_reads_are_free", lambda device: False)
    poison_the_loss_from(monkeypatch, FIRST_BAD_STEP)
    cfg = lesps_run(tiny_dataset, tmp_path / "run", "trainer.log_every_n_steps=100")
    with pytest.raises(NonFiniteLossError, match=rf"loss is NaN or inf at global step {FIRST_BAD_STEP} \(epoch 1\) "
                                                 r"\(noticed at global step 4\)"):
        train(cfg)
    GlobalHydra.instance().clear()
    # read before the epoch's round and checkpoint: the NaN weights reached neither
    assert_left_readable(Path(cfg.paths.output_dir), epoch=0, label_round=1)


def test_a_nonfinite_label_round_is_refused_and_the_bank_keeps_its_round(tiny_dataset, tmp_path, monkeypatch):
    def nan_labels(self, prob, label, valid_hw, names):
        return torch.full_like(label, math.nan)

    monkeypatch.setattr(LESPSCallback, "update_labels", nan_labels)
    cfg = lesps_run(tiny_dataset, tmp_path / "run", start=("start=epoch", "start.Tepoch=1"))
    with pytest.raises(LabelBankError, match=r"round 1 refused, the labels of 6 image\(s\) \('\w+'.*non-finite.*"
                                             r"round 0 stays current"):
        train(cfg)
    GlobalHydra.instance().clear()
    run = Path(cfg.paths.output_dir)
    assert LabelBank(run / "label_bank").rounds() == [0]
    assert_left_readable(run, epoch=0, label_round=0)
