"""Sweeps: the hparams_search configs compose with every launcher, multiruns train, collect_sweep gathers them."""

import csv
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra_plugins.hydra_optuna_sweeper._impl import create_optuna_distribution_from_override
from omegaconf import OmegaConf
from optuna.distributions import CategoricalDistribution, LogUniformDistribution, UniformDistribution

from conftest import tiny_train_overrides
from irstd.config import CONFIG_MODULE
from irstd.lesps.callback import ROUND_FIELDS
from irstd.results.sweeps import FAILED, FINISHED, MISSING_METRICS, SweepError, collect_sweep
from irstd.training.run import optimized_value

REPO = Path(__file__).resolve().parents[1]
# the paper's defaults, which each Fig. 6 grid must contain
FIG6_GRIDS = {"fig6_tloss": ("start.Tloss", [2, 5, 10, 20, 50], 10),
              "fig6_tb": ("label_update.Tb", [0.3, 0.5, 0.7], 0.5),
              "fig6_k": ("label_update.k", [0, 0.3333333333, 0.5, 1], 0.5),
              "fig6_f": ("label_update.f", [2, 5, 10, 20], 5)}
LAUNCHERS = {None: "BasicLauncher", "joblib": "JoblibLauncher", "submitit_slurm": "SlurmLauncher",
             "slurm": "SlurmLauncher"}


def compose_hydra(overrides):
    GlobalHydra.instance().clear()
    try:
        with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
            return compose(config_name="train", return_hydra_config=True, overrides=overrides)
    finally:
        GlobalHydra.instance().clear()


@pytest.mark.parametrize("launcher", list(LAUNCHERS))
@pytest.mark.parametrize("search", list(FIG6_GRIDS))
def test_fig6_grids_compose_with_every_launcher(search, launcher):
    cfg = compose_hydra([f"hparams_search={search}"] + ([f"hydra/launcher={launcher}"] if launcher else []))
    key, grid, default = FIG6_GRIDS[search]
    assert cfg.hydra.sweeper._target_.endswith("BasicSweeper")
    assert cfg.hydra.launcher._target_.endswith(LAUNCHERS[launcher])
    assert list(cfg.hydra.sweeper.params) == [key]
    assert [float(value) for value in str(cfg.hydra.sweeper.params[key]).split(",")] == grid
    assert OmegaConf.select(cfg, key) == default in grid


@pytest.mark.parametrize("launcher", list(LAUNCHERS))
def test_optuna_search_composes_with_every_launcher(launcher):
    cfg = compose_hydra(["hparams_search=optuna"] + ([f"hydra/launcher={launcher}"] if launcher else []))
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("OptunaSweeper") and cfg.hydra.launcher._target_.endswith(LAUNCHERS[launcher])
    assert sweeper.direction == "maximize" and sweeper.storage is None and cfg.optimized_metric == "lesps/label_iou"
    assert sweeper.sampler._target_ == "optuna.samplers.TPESampler" and isinstance(sweeper.sampler.seed, int)
    assert sweeper.n_trials > 0
    parser = OverridesParser.create()
    space = {key: create_optuna_distribution_from_override(parser.parse_override(f"{key}={value}"))
             for key, value in sweeper.params.items()}
    assert set(space) == {"start.Tloss", "label_update.Tb", "label_update.k", "label_update.f"}
    assert isinstance(space["start.Tloss"], LogUniformDistribution) and space["start.Tloss"].low == 2
    tb, f = space["label_update.Tb"], space["label_update.f"]
    assert isinstance(tb, UniformDistribution) and (tb.low, tb.high) == (0.3, 0.7)
    assert isinstance(f, CategoricalDistribution) and f.choices == (2, 5, 10, 20)


def test_our_slurm_launcher_asks_for_one_gpu_per_job():
    launcher = compose_hydra(["hparams_search=fig6_f", "hydra/launcher=slurm"]).hydra.launcher
    assert launcher.gpus_per_node == 1 and launcher.tasks_per_node == 1 and launcher.timeout_min > 60


@pytest.mark.parametrize(("metrics", "message"), [
    ({"test/iou": 0.5}, r"'lesps/label_iou' has no finite value in this run \(LESPS never evolved the labels"),
    ({"lesps/label_iou": float("nan")}, "has no finite value"),
])
def test_a_missing_or_nan_optimized_metric_is_an_error_not_a_score(metrics, message):
    with pytest.raises(KeyError, match=message):
        optimized_value(metrics, "lesps/label_iou")
    assert optimized_value({"lesps/label_iou": 0.25}, "lesps/label_iou") == 0.25
    assert optimized_value(metrics, None) is None


def lesps_overrides(data_root, start=("start=epoch", "start.Tepoch=0")):
    """Two epochs of tiny training with LESPS; by default evolving from the first epoch on, so every job has rounds."""
    return tiny_train_overrides(data_root, label="centroid", lesps="default") + list(start)


def run(args, cwd):
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=600)


def read_csv(path):
    with open(path) as handle:
        return list(csv.DictReader(handle))


def test_multirun_over_f_is_collected_into_one_row_per_job(tiny_dataset, tmp_path):
    sweep_dir = tmp_path / "multirun"
    result = run(["-m", "irstd.cli.train", "-m", *lesps_overrides(tiny_dataset), "label_update.f=1,3",
                  f"hydra.sweep.dir={sweep_dir}"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]

    collected = run([str(REPO / "scripts" / "collect_sweep.py"), str(sweep_dir), "--out", str(tmp_path / "out")],
                    tmp_path)
    assert collected.returncode == 0, collected.stderr[-3000:]
    assert "2 jobs in 1 multirun(s): 2 finished" in collected.stdout
    rows = read_csv(tmp_path / "out" / "sweep.csv")
    assert [(row["job"], row["f"], row["swept"], row["status"]) for row in rows] == [
        ("0", "1", "label_update.f", FINISHED), ("1", "3", "label_update.f", FINISHED)]
    # 2 epochs, evolution from epoch 0 on: both epochs with f=1, only the first (the start) with f=3
    assert [row["rounds"] for row in rows] == ["2", "1"]
    for row in rows:
        metrics = json.loads((sweep_dir / row["job"] / "metrics.json").read_text())
        assert 0 < float(row["label_iou"]) <= 1 and math.isfinite(float(row["label_pa"]))
        assert float(row["label_iou"]) == pytest.approx(metrics["lesps/label_iou"], rel=1e-6)
        assert float(row["test/iou"]) == pytest.approx(metrics["test/iou"])
    assert "| label_update.f |" in (tmp_path / "out" / "sweep.md").read_text()
    assert (tmp_path / "out" / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_optuna_multirun_maximises_the_label_iou_and_fails_trials_without_rounds(tiny_dataset, tmp_path):
    sweep_dir = tmp_path / "optuna"
    # the TPE sampler's seed 42 draws Tloss 6.7, 32.5, 3.6, 3.1: the tiny run's loss (about 4.8) falls under the
    # first two, never under the last two, whose trials then have no label IoU
    result = run(["-m", "irstd.cli.train", "-m", *lesps_overrides(tiny_dataset, []),
                  "hparams_search=optuna", "hydra.sweeper.n_trials=4", f"hydra.sweep.dir={sweep_dir}"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "has no finite value in this run (LESPS never evolved the labels" in result.stderr + result.stdout
    best = OmegaConf.load(sweep_dir / "optimization_results.yaml")
    assert set(best.best_params) == {"start.Tloss", "label_update.Tb", "label_update.k", "label_update.f"}
    assert best.best_params["start.Tloss"] > 5 and 0 < best.best_value <= 1

    # the Optuna sweeper writes no multirun.yaml: its job directories are found all the same
    rows = collect_sweep(sweep_dir)["rows"]
    assert [row["status"] for row in rows] == [FINISHED, FINISHED, MISSING_METRICS, MISSING_METRICS]
    assert min(row["Tloss"] for row in rows[:2]) > max(row["Tloss"] for row in rows[2:])
    for row in rows[2:]:
        assert row["note"] == "LESPS never evolved the labels" and math.isnan(row["label_iou"])
    assert rows[0]["swept"] == "start.Tloss label_update.Tb label_update.k label_update.f"
    assert max(row["label_iou"] for row in rows if row["status"] == FINISHED) == pytest.approx(best.best_value)


def fake_job(sweep_dir, num, overrides, lesps=None, metrics=None, rounds=None, resolved=True):
    """A job directory as irstd-train leaves it; `metrics=None`: it crashed before writing metrics.json."""
    job = sweep_dir / str(num)
    (job / ".hydra").mkdir(parents=True)
    OmegaConf.save(OmegaConf.create(overrides), job / ".hydra" / "overrides.yaml")
    config = OmegaConf.create({"test": True, "lesps": {"_target_": "irstd.lesps.callback.LESPSCallback", "Tloss": 10.0,
                                                       "Tb": 0.5, "k": 0.5, "f": 5, **(lesps or {})}})
    OmegaConf.save(config, job / ("config_resolved.yaml" if resolved else ".hydra/config.yaml"))
    if metrics is not None:
        (job / "metrics.json").write_text(json.dumps(metrics))
    if rounds is not None:
        with open(job / "lesps_rounds.csv", "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=ROUND_FIELDS)
            writer.writeheader()
            writer.writerows({**dict.fromkeys(ROUND_FIELDS, 0), "round": i + 1, "label_pa": pa, "label_iou": iou}
                             for i, (pa, iou) in enumerate(rounds))
    return job


def fake_tb_sweep(sweep_dir):
    sweep_dir.mkdir(parents=True)
    OmegaConf.save(OmegaConf.create({"hydra": {"sweeper": {"params": {"label_update.Tb": "0.3,0.5,0.7"}}}}),
                   sweep_dir / "multirun.yaml")
    test_metrics = {"test/iou": 0.4, "test/niou": 0.45, "test/pd": 0.9, "test/fa": 2e-5}
    fake_job(sweep_dir, 0, ["label_update.Tb=0.3"], {"Tb": 0.3}, test_metrics, rounds=[(0.2, 0.1), (0.6, 0.3)])
    fake_job(sweep_dir, 1, ["label_update.Tb=0.5"], {"Tb": 0.5}, metrics=None, rounds=[(0.2, 0.1)], resolved=False)
    fake_job(sweep_dir, 2, ["label_update.Tb=0.7"], {"Tb": 0.7}, test_metrics, rounds=[])


def test_collect_lists_a_crashed_job_as_failed(tmp_path):
    fake_tb_sweep(tmp_path / "tb")
    result = collect_sweep(tmp_path / "tb", tmp_path / "out")
    rows = result["rows"]
    assert [(row["job"], row["Tb"], row["status"]) for row in rows] == [
        (0, 0.3, FINISHED), (1, 0.5, FAILED), (2, 0.7, MISSING_METRICS)]
    assert (rows[0]["label_pa"], rows[0]["label_iou"], rows[0]["rounds"], rows[0]["test/fa"]) == (0.6, 0.3, 2, 2e-5)
    assert "no metrics.json" in rows[1]["note"] and rows[1]["test/iou"] is None
    assert rows[2]["rounds"] == 0 and rows[2]["note"] == "LESPS never evolved the labels"
    written = read_csv(tmp_path / "out" / "sweep.csv")
    assert written[2]["label_iou"] == "" and written[2]["Tb"] == "0.7"
    markdown = (tmp_path / "out" / "sweep.md").read_text().splitlines()
    assert len(markdown) == 2 + 3 and "| failed |" in markdown[3]
    assert result["png"].is_file()


def test_collect_gathers_several_multiruns_under_one_parent(tmp_path):
    fake_tb_sweep(tmp_path / "fig6" / "tb")
    f_sweep = tmp_path / "fig6" / "f"
    fake_job(f_sweep, 0, ["label_update.f=2", "model=acm"], {"f": 2}, {}, rounds=[(0.5, 0.25)])
    fake_job(f_sweep, 1, ["label_update.f=20", "model=acm"], {"f": 20}, {}, rounds=[(0.4, 0.2)])
    rows = collect_sweep(tmp_path / "fig6")["rows"]
    assert [(row["sweep"], row["swept"]) for row in rows] == ([("f", "label_update.f")] * 2
                                                             + [("tb", "label_update.Tb")] * 3)
    assert [row["f"] for row in rows] == [2, 20, 5, 5, 5]
    assert (tmp_path / "fig6" / "sweep.png").is_file()


def test_collect_names_a_directory_that_is_no_multirun(tmp_path):
    (tmp_path / "run" / ".hydra").mkdir(parents=True)
    with pytest.raises(SweepError, match=re.escape(f"{tmp_path / 'run'} is not a Hydra multirun directory")):
        collect_sweep(tmp_path / "run")
    result = run([str(REPO / "scripts" / "collect_sweep.py"), str(tmp_path / "nowhere")], tmp_path)
    assert result.returncode == 1 and f"{tmp_path / 'nowhere'} is not a directory" in result.stderr


def test_irstd_reproduce_fig6_collect_gathers_the_grids(tmp_path, capsys):
    from irstd.cli.reproduce import main

    fake_tb_sweep(tmp_path / "fig6" / "fig6_tb")
    assert main(["fig6", "--collect", str(tmp_path / "fig6")]) == 0
    out = capsys.readouterr().out
    assert f"results: {tmp_path / 'fig6' / 'sweep.md'} (and sweep.csv, sweep.png beside it)" in out
    assert "| fig6_tb | 1 | failed | label_update.Tb |" in out
    with pytest.raises(SystemExit) as exit_info:
        main(["fig6", "--collect", str(tmp_path / "nowhere")])
    assert exit_info.value.code == 1 and f"{tmp_path / 'nowhere'} is not a directory" in capsys.readouterr().err


@pytest.mark.slow
def test_joblib_multirun_trains_jobs_in_parallel_processes(tiny_dataset, tmp_path):
    sweep_dir = tmp_path / "multirun"
    result = run(["-m", "irstd.cli.train", "-m", *lesps_overrides(tiny_dataset), "label_update.Tb=0.3,0.7",
                  "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", f"hydra.sweep.dir={sweep_dir}"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "is launching 2 jobs" in result.stderr + result.stdout
    rows = collect_sweep(sweep_dir)["rows"]
    assert [(row["Tb"], row["status"]) for row in rows] == [(0.3, FINISHED), (0.7, FINISHED)]
