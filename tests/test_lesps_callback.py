"""The LESPSCallback inside real (tiny) training runs on the CPU."""

import csv
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.core.global_hydra import GlobalHydra

from conftest import compose_config, tiny_train_overrides
from irstd.data.label_bank import LabelBank
from irstd.lesps.callback import LESPSCallback
from irstd.training.run import train


def lesps_cfg(dataset, run_dir, *extra):
    return compose_config("train", run_dir, tiny_train_overrides(dataset, label="centroid", lesps="default") + [
        "test=false", "callbacks.model_checkpoint.every_n_epochs=1", *extra])


def test_start_rule_by_loss_then_every_f_epochs():
    callback = LESPSCallback(start={"name": "loss", "Tloss": 10}, f=5)
    fired = [epoch for epoch, loss in enumerate([30, 20, 12, 9, 15, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8])
             if callback.should_evolve(epoch, loss)]
    assert fired == [3, 4, 9, 14]  # the first epoch under Tloss, then (epoch + 1) % f == 0
    assert callback.start_epoch == 3


def test_start_rule_by_epoch():
    callback = LESPSCallback(start={"name": "epoch", "Tepoch": 3}, f=2)
    fired = [epoch for epoch in range(8) if callback.should_evolve(epoch, float("inf"))]
    assert fired == [3, 5, 7]


@pytest.mark.parametrize(("key", "value", "named"), [("start", {"name": "never"}, "start.name"),
                                                      ("f", 0, "label_update.f"), ("Tb", 1.5, "label_update.Tb"),
                                                      ("r", 0, "label_update.r")])
def test_bad_settings_name_the_key(key, value, named):
    with pytest.raises(ValueError, match=named):
        LESPSCallback(**{key: value})


def test_labels_evolve_during_training(tiny_dataset, tmp_path):
    cfg = lesps_cfg(tiny_dataset, tmp_path / "run", "start.Tloss=1e9", "label_update.f=1", "trainer.max_epochs=3")
    _, objects = train(cfg)
    run = Path(cfg.paths.output_dir)
    bank = LabelBank(run / "label_bank")
    assert bank.rounds() == [0, 1, 2, 3] and bank.current_round() == 3
    assert [bank.round_meta(r)["epoch"] for r in (1, 2, 3)] == [0, 1, 2]
    with open(run / "lesps_rounds.csv") as handle:
        rounds = list(csv.DictReader(handle))
    assert [int(r["round"]) for r in rounds] == [1, 2, 3]
    assert all(0 <= float(r["label_iou"]) <= 1 and float(r["evolve_s"]) >= 0 for r in rounds)
    assert sorted(p.name for p in (run / "lesps").iterdir()) == [f"round_000{i}.png" for i in (1, 2, 3)]
    metrics_csv = (run / "csv" / "metrics.csv").read_text().splitlines()[0]
    assert "lesps/label_iou" in metrics_csv and "lesps/epoch_loss" in metrics_csv
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert checkpoint["IRSTDDataModule"]["label_round"] == 3
    state = next(v for k, v in checkpoint["callbacks"].items() if k.startswith("LESPSCallback"))
    assert state["started"] and state["start_epoch"] == 0 and state["rounds_done"] == 3
    assert len(state["loss_history"]) == 3
    GlobalHydra.instance().clear()


def test_points_stay_and_labels_change_only_near_targets(tiny_dataset, tmp_path):
    cfg = lesps_cfg(tiny_dataset, tmp_path / "run", "start.Tloss=1e9", "label_update.f=1", "trainer.max_epochs=2")
    train(cfg)
    bank = LabelBank(Path(cfg.paths.output_dir) / "label_bank")
    for name in bank.names():
        before, after = bank.read(name, 0), bank.read(name, 2)
        assert np.all(after[before == 1] == 1)  # the point labels are kept
        changed = np.argwhere(after != before)
        points = np.argwhere(before == 1)
        if len(changed):  # every change lies within the 33 x 33 window of some point
            distance = np.abs(changed[:, None, :] - points[None, :, :]).max(axis=2).min(axis=1)
            assert distance.max() <= 16
    GlobalHydra.instance().clear()


def test_resume_restores_the_lesps_state_and_the_round(tiny_dataset, tmp_path):
    cfg = lesps_cfg(tiny_dataset, tmp_path / "run", "start.Tloss=1e9", "label_update.f=1", "trainer.max_epochs=3")
    train(cfg)
    first = Path(cfg.paths.output_dir)
    epoch_one = first / "checkpoints" / "epoch_001.ckpt"  # written after the round of epoch 1 (round 2)
    resumed_cfg = lesps_cfg(tiny_dataset, tmp_path / "resumed", "start.Tloss=1e9", "label_update.f=1",
                            "trainer.max_epochs=4", f"ckpt_path={epoch_one}")
    _, objects = train(resumed_cfg)
    callback = next(c for c in objects["trainer"].callbacks if isinstance(c, LESPSCallback))
    assert callback.rounds_done == 2 + 2 and callback.start_epoch == 0 and len(callback.loss_history) == 4
    bank = LabelBank(tmp_path / "resumed" / "label_bank")
    # the copy was rolled back to round 2, then epochs 2 and 3 evolved rounds 3 and 4 again
    assert bank.rounds() == [0, 1, 2, 3, 4]
    assert [bank.round_meta(r)["epoch"] for r in (3, 4)] == [2, 3]
    assert np.array_equal(bank.read_round(2)[bank.names()[0]],
                          LabelBank(first / "label_bank").read_round(2)[bank.names()[0]])
    GlobalHydra.instance().clear()


def test_warns_when_evolution_never_starts(tiny_dataset, tmp_path, caplog):
    cfg = lesps_cfg(tiny_dataset, tmp_path / "run", "start.Tloss=0", "trainer.max_epochs=1")
    with caplog.at_level(logging.WARNING):
        train(cfg)
    assert "never updated" in caplog.text and "Tloss=0" in caplog.text
    assert LabelBank(Path(cfg.paths.output_dir) / "label_bank").rounds() == [0]
    GlobalHydra.instance().clear()


def test_lesps_off_keeps_the_point_labels(tiny_dataset, tmp_path):
    cfg = compose_config("train", tmp_path / "run", tiny_train_overrides(tiny_dataset, label="centroid") + [
        "test=false"])
    _, objects = train(cfg)
    assert not any(isinstance(c, LESPSCallback) for c in objects["trainer"].callbacks)
    assert LabelBank(Path(cfg.paths.output_dir) / "label_bank").rounds() == [0]
    GlobalHydra.instance().clear()


def test_evolving_in_chunks_gives_the_same_round(tiny_dataset, tmp_path):
    rounds = []
    for chunk in (1, 4):
        cfg = lesps_cfg(tiny_dataset, tmp_path / f"chunk{chunk}", "start.Tloss=1e9", "trainer.max_epochs=1",
                        f"label_update.evolve_chunk={chunk}")
        train(cfg)
        rounds.append(LabelBank(Path(cfg.paths.output_dir) / "label_bank").read_round(1))
        GlobalHydra.instance().clear()
    assert rounds[0].keys() == rounds[1].keys()
    changed = 0
    for name in rounds[0]:
        assert np.array_equal(rounds[0][name], rounds[1][name]), name
        changed += int((rounds[0][name] > 0).sum())
    assert changed > 0


def test_the_epoch_loss_is_read_once_and_equals_the_step_by_step_mean():
    """The step losses stay on their device until the epoch ends; their mean is the one the start rules always saw
    (a float64 mean of the float32 step values, reduced over ranks as float32)."""

    class OneRank:
        @staticmethod
        def reduce(value, reduce_op):
            return value

    class Trainer:
        strategy = OneRank()

    generator = torch.Generator().manual_seed(0)
    losses = (torch.rand(37, generator=generator) * 30).float()
    callback = LESPSCallback()
    callback.on_train_epoch_start(None, None)
    for i, loss in enumerate(losses):
        callback.on_train_batch_end(None, None, {"loss": loss.clone().requires_grad_()} if i % 2 else loss, None, i)
    assert all(isinstance(kept, torch.Tensor) and not kept.requires_grad for kept in callback._batch_losses)
    step_by_step = float(torch.tensor(float(np.mean([float(loss) for loss in losses]))))
    assert callback._epoch_loss(Trainer(), torch.device("cpu")) == step_by_step
    callback.on_train_epoch_start(None, None)
    assert np.isnan(callback._epoch_loss(Trainer(), torch.device("cpu")))
