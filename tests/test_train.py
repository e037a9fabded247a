"""End-to-end: the shipped configs train, checkpoint, resume and evaluate on the CPU."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.core.global_hydra import GlobalHydra

from conftest import SIRST, compose_config, requires_sirst, tiny_train_overrides
from irstd.data.label_bank import LabelBank
from irstd.data.sources import DatasetError
from irstd.inference.tasks import evaluate
from irstd.models import available_backbones
from irstd.training.run import train


def test_train_two_epochs_writes_the_run_directory(train_cfg):
    metrics, objects = train(train_cfg)
    run = Path(train_cfg.paths.output_dir)
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert (run / "config_resolved.yaml").is_file()
    assert "${" not in (run / "config_resolved.yaml").read_text()
    assert (run / "label_bank" / "manifest.json").is_file()
    assert (run / "normalization.json").is_file()
    csv_lines = (run / "csv" / "metrics.csv").read_text().splitlines()
    assert "train/loss_epoch" in csv_lines[0] and "val/iou" in csv_lines[0] and len(csv_lines) > 2
    saved = json.loads((run / "metrics.json").read_text())
    assert 0.0 <= saved["test/iou"] <= 1.0 and saved["test/iou"] == pytest.approx(metrics["test/iou"])
    assert objects["trainer"].current_epoch == 2

    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert checkpoint["IRSTDDataModule"]["label_round"] == 0
    assert checkpoint["IRSTDDataModule"]["mean"] == pytest.approx(objects["datamodule"].mean)
    assert checkpoint["optimizer_states"] and checkpoint["lr_schedulers"]


def test_resume_continues_from_the_checkpoint(train_cfg, tiny_dataset, tmp_path):
    train(train_cfg)
    last = os.path.join(train_cfg.paths.output_dir, "checkpoints", "last.ckpt")
    cfg = compose_config("train", tmp_path / "run", tiny_train_overrides(tiny_dataset) + [
        "trainer.max_epochs=3", f"ckpt_path={last}", "test=false"])
    _, objects = train(cfg)
    assert objects["trainer"].current_epoch == 3
    assert objects["trainer"].global_step == 3 * 2  # 6 images / batch 4 -> 2 steps per epoch
    GlobalHydra.instance().clear()


def test_resume_in_a_new_run_directory_copies_the_recorded_round(train_cfg, tiny_dataset, tmp_path):
    train(train_cfg)
    first_run = Path(train_cfg.paths.output_dir)
    original = LabelBank(first_run / "label_bank")
    # a round committed after the last checkpoint was written (an interrupted evolution)
    original.commit({n: np.full_like(original.read(n), 0.5) for n in original.names()})
    cfg = compose_config("train", tmp_path / "resumed", tiny_train_overrides(tiny_dataset) + [
        "trainer.max_epochs=3", f"ckpt_path={first_run / 'checkpoints' / 'last.ckpt'}", "test=false"])
    train(cfg)
    resumed = LabelBank(tmp_path / "resumed" / "label_bank")
    assert resumed.current_round() == 0 and resumed.rounds() == [0]
    assert LabelBank(first_run / "label_bank").current_round() == 1  # the original run is untouched
    GlobalHydra.instance().clear()


def test_eval_reproduces_the_test_metrics_of_training(train_cfg, tiny_dataset, tmp_path):
    metrics, _ = train(train_cfg)
    last = os.path.join(train_cfg.paths.output_dir, "checkpoints", "last.ckpt")
    data_overrides = [o for o in tiny_train_overrides(tiny_dataset) if o.startswith("data.")]
    cfg = compose_config("eval", tmp_path / "eval", data_overrides + [
        f"ckpt_path={last}", "device=cpu", "save_predictions=true"])
    eval_metrics, _ = evaluate(cfg)
    for key in ("iou", "niou", "pixacc", "pd", "fa"):
        assert eval_metrics[key] == pytest.approx(metrics[f"test/{key}"], abs=1e-6), key
    saved = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert set(saved) >= {"iou", "niou", "pixacc", "pd", "fa", "targets", "found"}
    assert saved["targets"] == metrics["test/targets"] > 0
    assert "| IoU x100 |" in (tmp_path / "eval" / "results.md").read_text().replace("| method ", "")
    assert (tmp_path / "eval" / "roc.png").is_file()
    test_names = (tiny_dataset / "img_idx" / "test_synthetic.txt").read_text().split()
    assert sorted(p.stem for p in (tmp_path / "eval" / "masks").iterdir()) == sorted(test_names)
    assert len(list((tmp_path / "eval" / "overlays").iterdir())) == len(test_names)
    GlobalHydra.instance().clear()


@pytest.mark.parametrize(("override", "message"), [
    ("data.policies.size_mismatch=stretch", "data.policies.size_mismatch"),
    ("model.backbone.name=resnet", "model.backbone.name"),
    ("data.std=-1", "data.std"),
    ("data.patch_size=33", "data.patch_size"),
])
def test_config_mistakes_name_the_key(train_cfg, override, message, tiny_dataset, tmp_path):
    cfg = compose_config("train", tmp_path / "bad", tiny_train_overrides(tiny_dataset) + [override])
    with pytest.raises(Exception, match=message):
        train(cfg)
    GlobalHydra.instance().clear()


def test_missing_dataset_root_is_named(tmp_path):
    cfg = compose_config("train", tmp_path / "run", [
        "data=sirst", f"data.root={tmp_path / 'nowhere'}", "trainer=cpu", "data.progress=false"])
    with pytest.raises(DatasetError, match="data.root.*|nowhere"):
        train(cfg)
    GlobalHydra.instance().clear()


def run_cli(args, cwd):
    return subprocess.run([sys.executable, "-m", "irstd.cli.train", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=600)


def test_cli_rejects_an_unknown_key(tmp_path):
    result = run_cli(["data.no_such_option=1"], tmp_path)
    assert result.returncode != 0
    assert "no_such_option" in result.stderr


@requires_sirst
def test_cli_trains_on_sirst_with_centroid_labels(tmp_path):
    result = run_cli([
        "data=sirst", f"data.root={SIRST}", "label=centroid", "trainer=cpu", "trainer.max_epochs=1",
        "+trainer.limit_train_batches=2", "+trainer.limit_val_batches=2", "+trainer.limit_test_batches=2",
        "trainer.check_val_every_n_epoch=1", "data.batch_size=2", "data.patch_size=64", "data.loading.num_workers=0",
        "model.backbone.width=4", f"hydra.run.dir={tmp_path / 'run'}",
    ], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    run = tmp_path / "run"
    manifest = json.loads((run / "label_bank" / "manifest.json").read_text())
    assert len(manifest["rounds"]["0"]["names"]) == 213
    assert "Misc_111" in result.stderr + result.stdout  # the size mismatch is reported by name
    assert (run / "checkpoints" / "last.ckpt").is_file() and (run / "metrics.json").is_file()


@pytest.mark.parametrize("backbone", available_backbones())
def test_every_backbone_trains_from_the_shipped_config(backbone, tiny_dataset, tmp_path):
    overrides = [o for o in tiny_train_overrides(tiny_dataset) if not o.startswith("model.")]
    cfg = compose_config("train", tmp_path / "run", overrides + [
        f"model={backbone}", "+trainer.fast_dev_run=1", "data.batch_size=2"])
    metrics, objects = train(cfg)
    assert objects["model"].hparams.backbone["name"] == backbone
    assert np.isfinite(metrics["train/loss_step"]) and "test/iou" in metrics
    GlobalHydra.instance().clear()


def test_eval_scores_saved_predictions_like_the_model(train_cfg, tiny_dataset, tmp_path):
    train(train_cfg)
    last = os.path.join(train_cfg.paths.output_dir, "checkpoints", "last.ckpt")
    data_overrides = [o for o in tiny_train_overrides(tiny_dataset) if o.startswith("data.")]
    from_model, _ = evaluate(compose_config("eval", tmp_path / "model", data_overrides + [
        f"ckpt_path={last}", "device=cpu", "save_predictions=true", "roc=false"]))
    from_files, _ = evaluate(compose_config("eval", tmp_path / "files", data_overrides + [
        f"pred_dir={tmp_path / 'model' / 'masks'}", "device=cpu", "roc=false", "name=saved"]))
    for key in ("iou", "niou", "pixacc", "pd", "fa", "targets", "found"):
        assert from_files[key] == pytest.approx(from_model[key], abs=1e-12), key
    assert "| saved |" in (tmp_path / "files" / "results.md").read_text()
    GlobalHydra.instance().clear()


def test_eval_needs_exactly_one_source(tiny_dataset, tmp_path):
    cfg = compose_config("eval", tmp_path / "eval", [f"data.root={tiny_dataset}"])
    with pytest.raises(ValueError, match="exactly one of ckpt_path"):
        evaluate(cfg)
    GlobalHydra.instance().clear()


def test_channels_last_trains_in_that_layout_to_the_same_losses(tiny_dataset, tmp_path):
    losses = {}
    for layout in ("false", "true"):
        cfg = compose_config("train", tmp_path / layout, tiny_train_overrides(tiny_dataset) + [
            f"model.channels_last={layout}", "test=false"])
        metrics, objects = train(cfg)
        GlobalHydra.instance().clear()
        losses[layout] = float(metrics["train/loss_epoch"])
        convolutions = [m.weight for m in objects["model"].net.modules() if isinstance(m, torch.nn.Conv2d)]
        in_layout = [w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous()
                     for w in convolutions if w.shape[1] > 1 and w.shape[-1] > 1]
        assert in_layout and all(in_layout) == (layout == "true"), layout
    # the same steps from the same seed: only the summation order of the convolutions differs
    assert losses["true"] == pytest.approx(losses["false"], rel=1e-4)
