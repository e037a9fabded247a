"""`make reproduce-single`: point supervision beside full supervision on SIRST alone, and its results table."""

import csv
import io
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from conftest import compose_config
from irstd.cli import reproduce as cli
from irstd.config import config_root
from irstd.results import reference, single
from irstd.results.reference import SINGLE_GOAL, SINGLE_REFERENCES, PaperDataError
from irstd.results.reproduce import Stat
from irstd.results.runs import read_jobs, read_run, read_wall_seconds
from irstd.results.single import (
    SingleResult,
    available_rows,
    choose,
    goal_line,
    requested_jobs,
    single_command,
    summarize_single,
    write_single_results,
)

REPO = Path(__file__).resolve().parents[1]
IRSTD_REPRODUCE = Path(sys.executable).parent / "irstd-reproduce"


def fake_job(path: Path, backbone: str, row: str, seed: int, metrics: dict | None, minutes: float = 10.0) -> Path:
    """A job directory as irstd-train leaves it: overrides, metrics.json (None: the job failed) and train.log."""
    (path / ".hydra").mkdir(parents=True)
    OmegaConf.save(OmegaConf.create([f"model={backbone}", "scale=cpu", f"seed={seed}", f"experiment=single/{row}"]),
                   path / ".hydra" / "overrides.yaml")
    if metrics is not None:
        (path / "metrics.json").write_text(json.dumps(metrics))
    end = 5 + minutes
    (path / "train.log").write_text(
        "[2026-11-30 18:05:00,000][irstd.data.datamodule][INFO] - normalisation\n"
        f"[2026-11-30 18:{int(end):02d}:{round(60 * (end % 1)):02d},000][irstd][INFO] - run directory: {path}\n")
    return path


def metrics(iou: float, pd: float, fa: float, label_iou: float = 0.5) -> dict:
    return {"test/iou": iou, "test/niou": iou - 0.02, "test/pd": pd, "test/fa": fa, "labels/label_iou": label_iou}


def fake_sweep(sweep: Path) -> Path:
    """ACM meets the goal with diffusion_fixed; ALCNet misses its Pd, one ALCNet job failed and one never started."""
    sweep.mkdir(parents=True)
    OmegaConf.save(OmegaConf.create({"hydra": {"overrides": {"task": [
        "seed=0,1", "model=acm,alcnet", "experiment=single/full,single/diffusion_fixed,single/centroid_lesps",
        "scale=cpu"]}}}), sweep / "multirun.yaml")
    jobs = [
        ("acm", "full", 0, metrics(0.60, 0.90, 50e-6, 1.0), 8.0),
        ("acm", "full", 1, metrics(0.62, 0.90, 50e-6, 1.0), 9.0),
        ("acm", "diffusion_fixed", 0, metrics(0.56, 0.89, 80e-6, 0.40), 10.0),
        ("acm", "diffusion_fixed", 1, metrics(0.56, 0.89, 80e-6, 0.42), 10.0),
        ("acm", "centroid_lesps", 0, metrics(0.30, 0.80, 20e-6, 0.20), 11.0),
        ("acm", "centroid_lesps", 1, metrics(0.32, 0.82, 20e-6, 0.22), 11.0),
        ("alcnet", "full", 0, metrics(0.64, 0.95, 40e-6, 1.0), 9.0), ("alcnet", "full", 1, None, 1.0),
        ("alcnet", "diffusion_fixed", 0, metrics(0.60, 0.80, 40e-6, 0.40), 10.0),
        ("alcnet", "centroid_lesps", 0, metrics(0.20, 0.70, 10e-6, 0.10), 10.0),
        ("alcnet", "centroid_lesps", 1, metrics(0.22, 0.72, 10e-6, 0.12), 10.0),
    ]  # alcnet diffusion_fixed seed 1: no directory
    for num, (backbone, row, seed, job_metrics, minutes) in enumerate(jobs):
        fake_job(sweep / str(num), backbone, row, seed, job_metrics, minutes)
    return sweep


# ---- what runs ---------------------------------------------------------------------------------------------------
def test_rows_are_the_packaged_experiment_files_full_supervision_first():
    files = {path.stem for path in (config_root() / "experiment" / "single").glob("*.yaml")}
    rows = available_rows()
    assert rows[0] == "full" and set(rows) == files and len(rows) == len(files) >= 2
    assert rows[1:] == sorted(rows[1:])
    assert choose(None, ["acm", "alcnet"], ["acm", "alcnet", "dnanet"], "backbone") == ["acm", "alcnet"]
    assert choose("dnanet, acm", [], ["acm", "dnanet"], "backbone") == ["dnanet", "acm"]
    with pytest.raises(ValueError, match="unknown row 'nope'; known: full, "):
        choose("full,nope", rows, rows, "row")
    assert set(single.DEFAULT_BACKBONES) == set(cli.SCALES["single"])
    assert single.DEFAULT_BACKBONES["cpu"] == ("acm", "alcnet")
    # at gpu every registered backbone but the plain U-Net, each under a display name
    assert sorted(single.DEFAULT_BACKBONES["gpu"]) == sorted(set(single.available_backbones()) - {"unet"})
    assert set(single.BACKBONE_NAMES) == set(single.available_backbones())


def test_the_command_sweeps_seeds_then_backbones_then_rows_at_one_scale(tmp_path):
    command = single_command("cpu", 3, tmp_path / "s", ["acm", "alcnet"], ["full", "diffusion_fixed"], ["x=1"])
    assert command[1:4] == ["-m", "irstd.cli.train", "--multirun"]
    # Hydra's basic sweeper varies the first override slowest: each seed's full table finishes before the next seed
    assert command[4:8] == ["seed=0,1,2", "model=acm,alcnet", "experiment=single/full,single/diffusion_fixed",
                            "scale=cpu"]
    assert command[8:] == [f"hydra.sweep.dir={tmp_path / 's'}", "x=1"]


def test_the_cli_checks_the_scale_per_target_and_the_choices(capsys):
    for argv, message in ((["table2", "--scale", "cpu"], "table2 runs at --scale smoke | paper, not cpu"),
                          (["single", "--scale", "paper"],
                           "single runs at --scale smoke | cpu | gpu | demo, not paper"),
                          (["single", "--backbones", "resnet"],
                           "unknown backbone 'resnet'; known: acm, alclnet, alcnet"),
                          (["single", "--rows", "full,nope"], "unknown row 'nope'")):
        with pytest.raises(SystemExit) as exit_info:
            cli.main(argv)
        assert exit_info.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
@pytest.mark.parametrize(("variables", "scale"), [([], "cpu"), (["SCALE=gpu"], "gpu"), (["SCALE=smoke"], "smoke")])
def test_make_reproduce_single_defaults_to_cpu_and_passes_a_given_scale(variables, scale):
    result = subprocess.run(["make", "-n", "-s", "reproduce-single", "SEEDS=2", "ARGS=--rows full", *variables],
                            cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert f"irstd-reproduce single --scale {scale} --seeds 2 --rows full" in result.stdout


def test_make_demo_sets_the_default_method_beside_full_supervision_at_demo_scale():
    result = subprocess.run(["make", "-n", "-s", "demo"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "irstd-reproduce single --scale demo --rows full,clustering_fixed" in result.stdout


def test_the_demo_row_is_what_irstd_train_does_when_no_method_is_chosen(tmp_path):
    default = compose_config("train", tmp_path / "default", [])
    row = compose_config("train", tmp_path / "row", ["experiment=single/clustering_fixed"])
    for group in ("label_init", "label_update", "loss"):
        assert OmegaConf.to_container(row[group]) == OmegaConf.to_container(default[group]), group
    assert row.model.output_prior == default.model.output_prior and row.label.kind == "centroid"
    assert default.label.kind == "auto"  # centroid points wherever masks/ exist, as on the synthetic data


@pytest.mark.parametrize(("scale", "steps", "milestones"), [("cpu", 1500, [1350]), ("demo", 640, [576])])
def test_short_scales_decay_the_lr_once_late(scale, steps, milestones, tmp_path):
    cfg = compose_config("train", tmp_path / scale, [f"scale={scale}", "experiment=single/full"])
    assert cfg.trainer.max_steps == steps and cfg.data.holdout.split is None
    assert OmegaConf.to_container(cfg.model.scheduler, resolve=True)["milestones"] == milestones


def test_synthetic_scales_title_the_table_by_their_data_and_leave_out_sirst_figures(tmp_path):
    sweep = fake_sweep(tmp_path / "sweep")
    markdown = write_single_results(sweep, "demo").read_text()
    assert markdown.startswith("# The built-in synthetic data: point supervision against full supervision")
    assert "## Goal" in markdown and "## Published" not in markdown


# ---- reading a run -----------------------------------------------------------------------------------------------
def test_wall_seconds_span_the_first_to_the_last_timed_line_of_train_log(tmp_path):
    (tmp_path / "train.log").write_text(
        "[2026-11-30 23:59:50,250][irstd.data.datamodule][INFO] - normalisation\n"
        "Traceback (most recent call last):\n  untimed lines count for nothing\n"
        "[2026-12-01 00:01:00,750][irstd][INFO] - run directory: x\n")
    assert read_wall_seconds(tmp_path) == pytest.approx(70.5)
    assert read_run(tmp_path).wall_seconds == pytest.approx(70.5)
    (tmp_path / "train.log").write_text("[2026-11-30 18:05:09,499][irstd][INFO] - one line\n")
    assert math.isnan(read_wall_seconds(tmp_path))
    assert math.isnan(read_wall_seconds(tmp_path / "nowhere"))


# ---- the table ---------------------------------------------------------------------------------------------------
def test_the_table_has_stats_ratios_label_iou_minutes_and_notes(tmp_path):
    sweep = fake_sweep(tmp_path / "sweep")
    assert requested_jobs(sweep)[:3] == [("acm", "full", "0"), ("acm", "full", "1"), ("acm", "diffusion_fixed", "0")]
    results, notes = summarize_single(single.single_jobs(read_jobs(sweep)), requested_jobs(sweep))
    assert [(result.backbone, result.row, result.seeds) for result in results] == [
        ("acm", "full", ("0", "1")), ("acm", "centroid_lesps", ("0", "1")), ("acm", "diffusion_fixed", ("0", "1")),
        ("alcnet", "full", ("0",)), ("alcnet", "centroid_lesps", ("0", "1")), ("alcnet", "diffusion_fixed", ("0",))]
    acm_full, _, acm_diffusion = results[:3]
    assert acm_full.ours["iou"].mean == pytest.approx(61.0) and acm_full.ours["iou"].std == pytest.approx(1.414, 1e-3)
    assert acm_full.ours["niou"].mean == pytest.approx(59.0) and acm_full.ours["fa"].mean == pytest.approx(50.0)
    # full supervision trains on the masks: no label IoU, no ratios to itself
    assert acm_full.label_iou is None and acm_full.ratios == {} and acm_full.minutes == pytest.approx(8.5)
    assert acm_diffusion.ratios["iou"] == pytest.approx(56 / 61) and acm_diffusion.ratios["fa"] == pytest.approx(1.6)
    assert acm_diffusion.label_iou == pytest.approx(41.0) and acm_diffusion.minutes == pytest.approx(10.0)
    assert any(note.startswith("ALCNet full: 1 job(s) left no test metrics") and str(sweep / "7") in note
               for note in notes)
    assert "ALCNet diffusion_fixed: seed(s) 1 not started" in " ".join(notes) and len(notes) == 2

    markdown = write_single_results(sweep).read_text()
    assert "scale `cpu`" in markdown  # read from the jobs
    assert "| ACM | full | 2 | 61.00 ± 1.41 | 59.00 ± 1.41 | 90.00 ± 0.00 | 50.00 ± 0.00 |  |  |  |  | 8.50 |" \
        in markdown
    assert "| ACM | diffusion_fixed | 2 | 56.00 ± 0.00 | 54.00 ± 0.00 | 89.00 ± 0.00 | 80.00 ± 0.00 | 91.8 % | " \
           "98.9 % | 1.60x | 41.00 | 10.00 |" in markdown
    assert "- ACM: best point-supervised row `diffusion_fixed` (IoU 56.00): IoU 91.8 % of full (≥ 90 %: pass), " \
           "Pd 98.9 % of full (≥ 98 %: pass), Fa 1.60x full (≤ 2x: pass): **pass**" in markdown
    # ALCNet's best row by IoU keeps 94 % of the IoU but loses Pd
    assert "- ALCNet: best point-supervised row `diffusion_fixed` (IoU 60.00): IoU 93.8 % of full (≥ 90 %: pass), " \
           "Pd 84.2 % of full (≥ 98 %: fail), Fa 1.00x full (≤ 2x: pass): **fail**" in markdown
    assert "| DNA-Net | Diffuse-to-Detect | points | 75.5 |" in markdown and reference.SINGLE_PROTOCOL in markdown
    assert markdown.index("## Goal") < markdown.index("## Published") < markdown.index("## Missing results")

    rows = list(csv.DictReader(io.StringIO((sweep / "results.csv").read_text())))
    assert [(row["backbone"], row["experiment"]) for row in rows][:3] == [
        ("acm", "full"), ("acm", "centroid_lesps"), ("acm", "diffusion_fixed")]
    assert rows[0]["iou_ratio"] == rows[0]["label_iou"] == "" and rows[0]["seeds"] == "0 1"
    assert float(rows[2]["pd_ratio"]) == pytest.approx(89 / 90) and float(rows[2]["minutes"]) == 10.0


def test_the_goal_needs_both_rows_and_a_nonzero_reference(tmp_path):
    zero_fa = fake_sweep(tmp_path / "a")
    for path in (zero_fa / "0", zero_fa / "1"):
        (path / "metrics.json").write_text(json.dumps(metrics(0.6, 0.9, 0.0, 1.0)))
    results, _ = summarize_single(single.single_jobs([read_run(zero_fa / str(num)) for num in range(6)]))
    assert "Fa n/a (full supervision's is 0)" in goal_line("acm", results) and goal_line("acm", results).endswith(
        "**fail**")
    assert goal_line("acm", results[:1]) == "- ACM: no verdict: no point-supervised row finished"
    assert goal_line("acm", results[1:]) == "- ACM: no verdict: full supervision has not finished"


def test_collect_rewrites_the_table_of_a_sweep_and_runs_nothing(tmp_path, capsys):
    sweep = fake_sweep(tmp_path / "sweep")
    assert cli.main(["single", "--collect", str(sweep), "--scale", "gpu"]) == 0
    out = capsys.readouterr().out
    assert "scale `gpu`" in out and f"results: {sweep / 'results.md'} (and results.csv beside it)" in out
    assert sorted(path.name for path in sweep.iterdir() if not path.name.isdigit()) == [
        "multirun.yaml", "results.csv", "results.md"]


# ---- the published figures ---------------------------------------------------------------------------------------
def test_the_goal_and_published_figures_load_from_single_yaml(monkeypatch):
    assert (SINGLE_GOAL.iou_ratio, SINGLE_GOAL.pd_ratio, SINGLE_GOAL.fa_ratio) == (0.90, 0.98, 2.0)
    figures = {(ref.backbone, ref.method, ref.iou) for ref in SINGLE_REFERENCES}
    assert figures == {("DNA-Net", "full supervision", 76.4), ("DNA-Net", "full supervision", 77.6),
                       ("DNA-Net", "LESPS", 16.9), ("DNA-Net", "LESPS", 54.4), ("DNA-Net", "PAL", 66.2),
                       ("DNA-Net", "MCLC", 69.6), ("DNA-Net", "Diffuse-to-Detect", 75.5),
                       ("ACM", "full supervision", 65.7), ("ALCNet", "full supervision", 66.4)}
    assert all(ref.source for ref in SINGLE_REFERENCES) and "test split" in reference.SINGLE_PROTOCOL
    bad_goal = {"goal": {"iou_ratio": 0.9, "pd_ratio": "high", "fa_ratio": 2}, "references": [], "protocol": "p"}
    monkeypatch.setattr(reference, "load_data", lambda name: bad_goal)
    with pytest.raises(PaperDataError, match="single.yaml goal.pd_ratio must be a number, got 'high'"):
        reference.load_single()
    no_source = {**bad_goal, "goal": {"iou_ratio": 0.9, "pd_ratio": 0.98, "fa_ratio": 2},
                 "references": [{"backbone": "ACM", "method": "full", "supervision": "full", "iou": 65.7}]}
    monkeypatch.setattr(reference, "load_data", lambda name: no_source)
    with pytest.raises(PaperDataError, match=r"single.yaml references\[0\] has no `source`"):
        reference.load_single()


# ---- end to end --------------------------------------------------------------------------------------------------
def test_reproduce_single_at_smoke_scale_runs_the_rows_and_writes_the_table(tmp_path):
    result = subprocess.run([
        str(IRSTD_REPRODUCE), "single", "--scale", "smoke", "--backbones", "acm", "--rows", "full,centroid_fixed",
        "--out-dir", str(tmp_path / "out"), f"data.root={tmp_path / 'data'}",
    ], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    results_md = next((tmp_path / "out" / "single" / "smoke").glob("*/results.md"))
    assert f"results: {results_md}" in result.stdout
    assert len(list(results_md.parent.glob("*/metrics.json"))) == 2
    rows = list(csv.DictReader(io.StringIO((results_md.parent / "results.csv").read_text())))
    assert [(row["backbone"], row["experiment"], row["seeds"]) for row in rows] == [
        ("acm", "full", "0"), ("acm", "centroid_fixed", "0")]
    # full supervision finds something at smoke scale, so the point-supervised row has its IoU and Pd ratios
    assert float(rows[0]["iou_mean"]) > 0 and rows[1]["iou_ratio"] != "" and rows[1]["pd_ratio"] != ""
    assert rows[1]["label_iou"] != "" and float(rows[1]["minutes"]) > 0
    markdown = results_md.read_text()
    assert "| ACM | full | 1 |" in markdown and "| ACM | centroid_fixed | 1 |" in markdown
    assert "- ACM: best point-supervised row `centroid_fixed`" in markdown and "**Smoke scale**" in markdown


def test_the_goal_judges_rows_with_as_many_seeds_as_full_supervision_first():
    def row(name: str, seeds: tuple[str, ...], iou: float) -> SingleResult:
        stats = {metric: Stat(value, 0.0) for metric, value in (("iou", iou), ("niou", iou), ("pd", 90.0),
                                                                 ("fa", 10.0))}
        ratios = {} if name == "full" else {"iou": iou / 65.0, "pd": 1.0, "fa": 1.0}
        return SingleResult("acm", name, seeds, stats, None, None, ratios)

    three = ("0", "1", "2")
    results = [row("full", three, 65.0), row("clustering_fixed", three, 59.0), row("lucky", ("0",), 62.0)]
    assert "best point-supervised row `clustering_fixed` (IoU 59.00)" in goal_line("acm", results)
    # with no row run as often as full supervision, every row competes
    assert "best point-supervised row `lucky` (IoU 62.00)" in goal_line("acm", [results[0], results[2]])
