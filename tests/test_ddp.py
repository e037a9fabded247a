"""DDP with 2 CPU processes (gloo) through the real CLI: sharded evolution, reduced metrics, multirun."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hydra.core.global_hydra import GlobalHydra

from conftest import compose_config
from irstd.data.datamodule import IRSTDDataModule
from irstd.data.label_bank import LabelBank
from irstd.data.synthetic import SyntheticSpec, generate_synthetic
from irstd.inference.tasks import evaluate
from irstd.lesps.callback import LESPSCallback
from irstd.training.ddp import quote_override_value
from irstd.training.module import IRSTDModule

# 7 training images over 2 ranks: shards of 4 and 3; 3 test images: 2 and 1
SPEC = dict(num_train=7, num_test=3, height=64, width=64, seed=5)


@pytest.fixture(scope="module")
def odd_dataset(tmp_path_factory) -> Path:
    return generate_synthetic(tmp_path_factory.mktemp("ddp") / "synthetic", SyntheticSpec(**SPEC))


def ddp_overrides(root: Path) -> list[str]:
    """LESPS evolves after every epoch from the first one, image by image (batch 1: no padding differences)."""
    return [
        f"data.root={root}", *(f"data.synthetic.{k}={v}" for k, v in SPEC.items()),
        "data.patch_size=32", "data.batch_size=2", "data.loading.eval_batch_size=1", "data.loading.num_workers=0",
        "data.progress=false", "label=centroid", "lesps=default", "start=epoch", "start.Tepoch=0", "label_update.f=1",
        "label_update.batch_size=1", "label_update.evolve_chunk=2", "model.backbone.width=4", "model.backbone.depth=2",
        "trainer.max_epochs=1", "trainer.check_val_every_n_epoch=1", "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false", "trainer.log_every_n_steps=1",
    ]


def run_train(args: list[str], cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "IRSTD_ROOT": str(cwd)}
    for name in ("LOCAL_RANK", "WORLD_SIZE", "NODE_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    result = subprocess.run([sys.executable, "-m", "irstd.cli.train", *args], cwd=cwd, env=env, timeout=timeout,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return result


def test_a_ddp_round_equals_the_single_process_round_bit_for_bit(odd_dataset, tmp_path):
    run_dir = tmp_path / "run"
    run_train([*ddp_overrides(odd_dataset), "trainer=ddp_cpu", f"hydra.run.dir={run_dir}"], tmp_path)
    bank = LabelBank(run_dir / "label_bank")
    assert bank.current_round() == 1
    rounds = (run_dir / "lesps_rounds.csv").read_text().splitlines()
    assert len(rounds) == 2 and rounds[1].startswith("1,0,")
    assert not list((run_dir / "label_bank" / ".shards").glob("*")), "shard files are cleaned up"
    assert sorted(p.name for p in run_dir.glob("*.log")) == ["train.log", "train_rank1.log"]

    # The checkpoint is written after the round, with the weights and batch-norm statistics it evolved with.
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    module = IRSTDModule.load_from_checkpoint(ckpt, map_location="cpu")
    normalization = json.loads((run_dir / "normalization.json").read_text())
    reference_bank = tmp_path / "reference_bank"
    shutil.copytree(run_dir / "label_bank", reference_bank)
    LabelBank(reference_bank).rollback(0)
    datamodule = IRSTDDataModule(root=str(odd_dataset), split="synthetic", label="centroid",
                                 bank_dir=str(reference_bank), loading={"eval_batch_size": 1}, progress=False,
                                 mean=normalization["mean"], std=normalization["std"])
    datamodule.setup("fit")
    callback = LESPSCallback(batch_size=1, evolve_chunk=2)
    evolved, _ = callback.evolve_samples(module, datamodule, datamodule.train_scan.samples)

    committed = bank.read_round(1)
    assert sorted(evolved) == sorted(committed) == sorted(bank.names())  # every image once: no gap, no duplicate
    for name, label in evolved.items():
        assert label.dtype == committed[name].dtype
        assert np.array_equal(label, committed[name]), name
    assert any(not np.array_equal(committed[n], bank.read(n, round=0)) for n in committed), "the labels evolved"

    # Test metrics are reduced over both ranks and count each image once, as a single process does.
    ddp_metrics = json.loads((run_dir / "metrics.json").read_text())
    data = [o for o in ddp_overrides(odd_dataset) if o.startswith("data.")]
    single, _ = evaluate(compose_config("eval", tmp_path / "eval", data + [f"ckpt_path={ckpt}", "device=cpu",
                                                                         "roc=false"]))
    GlobalHydra.instance().clear()
    for key in ("targets", "found", "false_targets", "iou", "niou", "pixacc", "pd", "fa"):
        assert ddp_metrics[f"test/{key}"] == pytest.approx(single[key], rel=1e-5, abs=1e-9), key


def test_ddp_inside_a_multirun_keeps_one_directory_per_job(odd_dataset, tmp_path):
    sweep_dir = tmp_path / "sweep"
    result = run_train(["-m", *ddp_overrides(odd_dataset), "trainer=ddp_cpu", "label_update.Tb=0.4,0.6",
                        f"hydra.sweep.dir={sweep_dir}"], tmp_path, timeout=400)
    jobs = sorted(p.name for p in sweep_dir.iterdir() if p.is_dir())
    assert jobs == ["0", "1"], jobs
    assert not (tmp_path / "outputs").exists(), "no rank wrote a run directory of its own"
    for job, tb in zip(jobs, (0.4, 0.6), strict=True):
        job_dir = sweep_dir / job
        assert json.loads((job_dir / "metrics.json").read_text())["test/targets"] > 0
        assert LabelBank(job_dir / "label_bank").current_round() == 1
        assert f"Tb: {tb}" in (job_dir / "config_resolved.yaml").read_text()
        assert (job_dir / "train_rank1.log").is_file()
    assert "Traceback" not in result.stderr


def test_override_values_are_quoted_for_hydra():
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    for path in ("runs/plain", "runs/with space,comma=eq", "runs/it's"):
        override = parser.parse_override(f"hydra.run.dir={quote_override_value(path)}")
        assert override.value() == path


def test_pal_under_ddp_admits_and_commits_like_a_single_process(odd_dataset, tmp_path):
    """A round-0 initialiser and PAL's easy set under 2 ranks: round 0 and the easy-set round equal one process's,
    and every later round covers every image once."""
    pal = [*ddp_overrides(odd_dataset), "label_init=clustering", "label_init.trials=4", "label_update=pal",
           "label_update.initial_tolerance=1.0", "trainer.max_epochs=2"]
    runs = {}
    for name, trainer in (("single", "trainer=cpu"), ("ddp", "trainer=ddp_cpu")):
        run_dir = tmp_path / name
        run_train([*pal, trainer, f"hydra.run.dir={run_dir}"], tmp_path)
        runs[name] = LabelBank(run_dir / "label_bank")
        assert not list((run_dir / "label_bank" / ".shards").glob("*")), "shard files are cleaned up"
    single, ddp = runs["single"], runs["ddp"]
    # round 0, grown from the points by rank 0 before training, is the single process's
    assert ddp.round_meta(0)["label_init"] == "clustering"
    assert all(np.array_equal(single.read_round(0)[n], ddp.read_round(0)[n]) for n in single.names())
    # round 1 is the easy set, made before any training step: the same whatever the number of ranks
    assert single.round_meta(1)["epoch"] == ddp.round_meta(1)["epoch"] == -1
    assert all(np.array_equal(single.read_round(1)[n], ddp.read_round(1)[n]) for n in single.names())
    # later rounds cover every image exactly once
    assert ddp.rounds() == single.rounds() and sorted(ddp.read_round(ddp.current_round())) == sorted(ddp.names())
