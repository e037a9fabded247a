"""The paper's experiment files, the scales (smoke, paper) and the results tables of `make reproduce-*`."""

import csv
import io
import json
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from conftest import compose_config, tiny_train_overrides
from irstd.config import config_root, milestones
from irstd.results.reference import AVERAGE, TABLES
from irstd.results.reproduce import load_jobs, summarize, table_command, write_results
from irstd.training.run import train

REPO = Path(__file__).resolve().parents[1]
# the console script installed beside the interpreter running the tests
IRSTD_REPRODUCE = Path(sys.executable).parent / "irstd-reproduce"
EXPERIMENT_DIR = config_root() / "experiment"
# Table 3's fourteen DNA-Net experiments differ only in their label config: tests/test_pseudo_labels.py composes
# them all and trains two
EXPERIMENTS = sorted(str(path.relative_to(EXPERIMENT_DIR).with_suffix("")) for path in EXPERIMENT_DIR.rglob("*.yaml")
                     if path.parent.name != "table3")
PAPER_EXPERIMENTS = [name for name in EXPERIMENTS if name.startswith(("table1/", "table2/"))]


@pytest.fixture(autouse=True)
def clear_hydra():
    yield
    GlobalHydra.instance().clear()


def tiny_data_overrides(data_root: Path, keep_trainer: bool = True) -> list[str]:
    """conftest's tiny data and CPU limits, without its label/lesps/model choices (the experiment makes them)."""
    kept = ("data.", "trainer.") if keep_trainer else ("data.",)
    return [override for override in tiny_train_overrides(data_root) if override.startswith(kept)]


def expected_setting(experiment: str) -> tuple[str, str, bool]:
    """(backbone, label, LESPS on) that an experiment's name promises."""
    table, name = experiment.split("/")
    backbone = "dnanet" if table == "table1" else name.split("_")[0]
    label = next(kind for kind in ("full", "centroid", "coarse") if kind in name)
    return backbone, label, label != "full" and not name.endswith("_fixed")


def test_every_experiment_of_a_table_has_its_file_and_every_file_its_row():
    in_tables = sorted(row.experiment for table in ("table1", "table2") for row in TABLES[table])
    assert in_tables == PAPER_EXPERIMENTS
    assert len(PAPER_EXPERIMENTS) == 5 + 9


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_trains_a_step_at_smoke_scale(experiment, tiny_dataset, tmp_path):
    cfg = compose_config("train", tmp_path / "run", [
        f"experiment={experiment}", "scale=smoke", *tiny_data_overrides(tiny_dataset), "data.batch_size=2",
        "+trainer.fast_dev_run=1"])
    assert cfg.trainer.accelerator == "cpu" and cfg.data.loading.num_workers == 0
    if experiment in PAPER_EXPERIMENTS:
        backbone, label, lesps_on = expected_setting(experiment)
        assert (cfg.model.backbone.name, cfg.label.kind) == (backbone, label)
        assert cfg.label_update._target_.endswith("LESPSCallback" if lesps_on else "FixedLabelsCallback")
        # the paper scores DNA-Net w/o LESPS at threshold 0.15 (Table 1, footnote 6)
        assert cfg.model.threshold == (0.15 if experiment.endswith("_fixed") else 0.5)
    metrics, objects = train(cfg)
    assert np.isfinite(metrics["train/loss_step"]) and 0 <= metrics["test/iou"] <= 1
    assert objects["model"].hparams.backbone["name"] == cfg.model.backbone.name


def test_smoke_scale_without_overrides_is_small_and_decays_at_half_and_three_quarters(tmp_path):
    cfg = compose_config("train", tmp_path / "run", ["experiment=table2/dnanet_centroid", "scale=smoke"])
    assert (cfg.data.synthetic.height, cfg.data.patch_size) == (64, 32)
    assert cfg.trainer.max_epochs == 20 and cfg.model.scheduler_interval == "epoch"
    assert list(cfg.model.scheduler.milestones) == [10, 15]
    # LESPS starts by epoch, early enough for rounds within the run
    assert cfg.start.name == "epoch" and cfg.start.Tepoch < cfg.trainer.max_epochs


@pytest.mark.parametrize("experiment", PAPER_EXPERIMENTS)
def test_paper_scale_composes_with_every_experiment(experiment, tmp_path):
    if not (config_root() / "data" / "sirst3.yaml").is_file():
        pytest.skip("conf/data/sirst3.yaml (SIRST3, the paper's training set) is not there yet")
    cfg = compose_config("train", tmp_path / "run", [f"experiment={experiment}", "scale=paper"])
    assert cfg.data.split == "SIRST3" and cfg.trainer.accelerator == "gpu"
    assert (cfg.trainer.max_steps, cfg.trainer.max_epochs) == (42000, -1)
    assert cfg.model.scheduler_interval == "step"
    assert list(cfg.model.scheduler.milestones) == [21000, 31500]
    assert cfg.trainer.check_val_every_n_epoch is None and cfg.trainer.val_check_interval == 2000
    assert cfg.model.backbone.name == expected_setting(experiment)[0]


@pytest.mark.parametrize(("max_steps", "expected"), [(42000, [21000, 31500]), (1000, [500, 750]), (4001, [2000, 3001])])
def test_paper_milestones_follow_an_overridden_max_steps(max_steps, expected, tmp_path):
    cfg = compose_config("train", tmp_path / "run", [
        "experiment=table2/acm_full", "scale=paper", "data=synthetic", f"trainer.max_steps={max_steps}"])
    assert OmegaConf.to_container(cfg.model.scheduler, resolve=True)["milestones"] == expected


@pytest.mark.parametrize("total", [-1, 0, 2.5, True])
def test_milestones_need_a_positive_whole_length(total):
    with pytest.raises(ValueError, match="trainer.max_steps"):
        milestones(total, 0.5, 0.75)


def test_paper_scale_trains_in_steps_and_decays_the_lr_at_its_milestones(tiny_dataset, tmp_path):
    # the paper's schedule on tiny data on the CPU: 3 steps an epoch, 4 steps, decays after steps 2 and 3
    cfg = compose_config("train", tmp_path / "run", [
        "experiment=table2/acm_full", "scale=paper", "data=synthetic", "trainer=cpu",
        *tiny_data_overrides(tiny_dataset, keep_trainer=False), "data.batch_size=2", "trainer.max_steps=4",
        "trainer.val_check_interval=2", "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false"])
    metrics, objects = train(cfg)
    trainer = objects["trainer"]
    assert trainer.global_step == 4 and trainer.max_epochs == -1
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(5e-4 * 0.1 ** 2)
    assert "test/iou" in metrics


# ---- the results table --------------------------------------------------------------------------------------------
def fake_job(path: Path, experiment: str, seed: int, metrics: dict[str, float], split: str = "synthetic") -> None:
    """A job directory as `irstd-train -m` leaves it, with only what the table reads."""
    (path / ".hydra").mkdir(parents=True)
    OmegaConf.save(OmegaConf.create([f"experiment={experiment}", f"seed={seed}", "scale=smoke"]),
                   path / ".hydra" / "overrides.yaml")
    OmegaConf.save(OmegaConf.create({"seed": seed, "data": {"split": split}}), path / "config_resolved.yaml")
    (path / "metrics.json").write_text(json.dumps(metrics))


def fake_metrics(iou: float, pd: float, fa: float, test_set: str | None = None) -> dict[str, float]:
    prefix = f"test/{test_set}/" if test_set else "test/"
    return {f"{prefix}iou": iou, f"{prefix}pd": pd, f"{prefix}fa": fa, f"{prefix}niou": 0.0}


def fake_table2(sweep: Path) -> dict[tuple[str, int], tuple[float, float, float]]:
    """Two seeds of every Table 2 experiment on one test set, each with its own figures (fractions)."""
    figures = {}
    for index, row in enumerate(TABLES["table2"]):
        for seed in (0, 1):
            figures[row.experiment, seed] = (0.1 + 0.05 * index + 0.02 * seed, 0.5 + 0.04 * index + 0.1 * seed,
                                             (3 + index + seed) * 1e-6)
            fake_job(sweep / str(2 * index + seed), row.experiment, seed, fake_metrics(*figures[row.experiment, seed]))
    return figures


def test_results_table_has_means_stds_ratios_and_the_papers_numbers(tmp_path):
    sweep = tmp_path / "sweep"
    figures = fake_table2(sweep)
    results, notes = summarize("table2", load_jobs(sweep))
    assert notes == [] and len(results) == 9
    by_experiment = {result.row.experiment: result for result in results}

    acm_full, acm_centroid = by_experiment["table2/acm_full"], by_experiment["table2/acm_centroid"]
    full_iou = [100 * figures["table2/acm_full", seed][0] for seed in (0, 1)]
    assert acm_full.ours["iou"].mean == pytest.approx(statistics.fmean(full_iou))
    assert acm_full.ours["iou"].std == pytest.approx(statistics.stdev(full_iou))
    assert acm_full.ours["fa"].mean == pytest.approx(1e6 * statistics.fmean(
        figures["table2/acm_full", seed][2] for seed in (0, 1)))
    assert acm_full.test_set == "synthetic" and acm_full.seeds == (0, 1)
    # one test set: compared with the paper's average over its three datasets
    assert (acm_full.paper.iou, acm_full.paper.pd, acm_full.paper.fa) == (59.94, 91.40, 32.12)
    assert acm_full.iou_ratio is None
    point_iou = statistics.fmean(100 * figures["table2/acm_centroid", seed][0] for seed in (0, 1))
    point_pd = statistics.fmean(100 * figures["table2/acm_centroid", seed][1] for seed in (0, 1))
    full_pd = statistics.fmean(100 * figures["table2/acm_full", seed][1] for seed in (0, 1))
    assert acm_centroid.iou_ratio == pytest.approx(point_iou / statistics.fmean(full_iou))
    assert acm_centroid.pd_ratio == pytest.approx(point_pd / full_pd)
    assert acm_centroid.paper_iou_ratio == pytest.approx(44.25 / 59.94)
    assert acm_centroid.paper_pd_ratio == pytest.approx(89.78 / 91.40)

    markdown = write_results(sweep, "table2", "smoke").read_text()
    assert "| ACM | full | synthetic | 2 | " in markdown and "59.94" in markdown and "75.67" in markdown
    assert f"{statistics.fmean(full_iou):.2f} ± {statistics.stdev(full_iou):.2f}" in markdown
    assert f"{100 * acm_centroid.iou_ratio:.1f} %" in markdown and "73.8 %" in markdown
    assert "Smoke scale" in markdown
    rows = list(csv.DictReader(io.StringIO((sweep / "results.csv").read_text())))
    assert len(rows) == 9 and rows[1]["experiment"] == "table2/acm_centroid"
    assert float(rows[1]["iou_ratio"]) == pytest.approx(acm_centroid.iou_ratio)
    assert rows[0]["iou_ratio"] == "" and float(rows[0]["paper_pd"]) == 91.40 and rows[0]["seeds"] == "0 1"


def test_results_table_reports_each_test_set_and_their_average(tmp_path):
    # three test sets (SIRST3 at paper scale), one seed; the average is the mean of the sets, as in the paper
    sweep = tmp_path / "sweep"
    per_set = {"SIRST": (0.6, 0.9, 1e-5), "NUDT-SIRST": (0.5, 0.8, 2e-5), "IRSTD-1K": (0.4, 0.7, 3e-5)}
    for index, row in enumerate(TABLES["table1"]):
        metrics = {}
        for name, values in per_set.items():
            metrics.update(fake_metrics(*values, test_set=name))
        fake_job(sweep / str(index), row.experiment, 0, metrics, split="SIRST3")
    results, notes = summarize("table1", load_jobs(sweep))
    assert notes == []
    full = [result for result in results if result.row.experiment == "table1/full"]
    assert [result.test_set for result in full] == ["SIRST", "NUDT-SIRST", "IRSTD-1K", AVERAGE]
    average = full[-1]
    assert average.is_average and average.ours["iou"].mean == pytest.approx(50.0)
    assert average.ours["fa"].mean == pytest.approx(20.0) and average.ours["iou"].std is None
    # Table 1 prints averages only
    assert average.paper.iou == 75.67 and full[0].paper is None and full[0].ours["iou"].mean == pytest.approx(60.0)
    centroid = next(r for r in results if r.row.experiment == "table1/centroid_fixed" and r.is_average)
    assert centroid.iou_ratio == pytest.approx(1.0) and centroid.paper_iou_ratio == pytest.approx(5.12 / 75.67)
    markdown = write_results(sweep, "table1", "paper").read_text()
    assert "| DNA-Net w/o LESPS | centroid | average | 1 | 50.00 |" in markdown
    assert "Smoke scale" not in markdown and "| yes |" in markdown


def test_missing_metrics_are_noted_and_the_rest_is_reported(tmp_path):
    sweep = tmp_path / "sweep"
    fake_table2(sweep)
    (sweep / "0" / "metrics.json").unlink()
    markdown = write_results(sweep, "table2", "smoke").read_text()
    assert "table2/acm_full: 1 of 2 jobs left no test metrics" in markdown
    assert "| ACM | full | synthetic | 1 | " in markdown


def test_table_command_sweeps_the_experiments_and_seeds(tmp_path):
    command = table_command("table1", "paper", 3, tmp_path / "sweep", ["trainer.max_steps=100"])
    assert command[1:4] == ["-m", "irstd.cli.train", "--multirun"]
    assert "seed=0,1,2" in command and "scale=paper" in command and command[-1] == "trainer.max_steps=100"
    experiments = next(arg for arg in command if arg.startswith("experiment=")).removeprefix("experiment=")
    assert experiments.split(",") == [row.experiment for row in TABLES["table1"]]
    assert f"hydra.sweep.dir={tmp_path / 'sweep'}" in command


def test_irstd_reproduce_collect_rewrites_the_table_of_finished_jobs(tmp_path):
    sweep = tmp_path / "sweep"
    fake_table2(sweep)
    result = subprocess.run([str(IRSTD_REPRODUCE), "table2", "--collect", str(sweep)], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"results: {sweep / 'results.md'} (and results.csv beside it)" in result.stdout
    assert "| ACM | full | synthetic | 2 | " in result.stdout
    assert "| DNA-Net | coarse+ | synthetic | 2 | " in result.stdout
    assert len((sweep / "results.csv").read_text().splitlines()) == 1 + 9
    with pytest.raises(ValueError, match="unknown table 'table9'; known: table1, table2, table3"):
        write_results(sweep, "table9", "smoke")


@pytest.mark.slow
def test_reproduce_script_runs_table1_and_writes_its_table(tiny_dataset, tmp_path):
    result = subprocess.run([
        str(IRSTD_REPRODUCE), "table1", "--scale", "smoke", "--seeds", "2",
        "--out-dir", str(tmp_path), *tiny_data_overrides(tiny_dataset), "start.Tepoch=0",
    ], cwd=REPO, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    results_md = next(tmp_path.glob("table1/smoke/*/results.md"))
    assert f"results: {results_md}" in result.stdout
    rows = list(csv.DictReader(io.StringIO((results_md.parent / "results.csv").read_text())))
    assert [row["experiment"] for row in rows] == [row.experiment for row in TABLES["table1"]]
    assert all(row["seeds"] == "0 1" and row["iou_std"] != "" for row in rows)
    assert len(list(results_md.parent.glob("*/metrics.json"))) == 10
