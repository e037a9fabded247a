"""The results layer's foundations: the run-directory reader, the table writer and the paper's numbers as data."""

import csv
import json
import math
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from irstd.lesps.callback import ROUND_FIELDS
from irstd.results import reference
from irstd.results.reference import (
    AVERAGE,
    CLASSIC,
    CLASSIC_PAPER,
    TABLES,
    Figures,
    PaperDataError,
    in_paper_units,
    load_table,
)
from irstd.results.runs import (
    FAILED,
    FINISHED,
    MISSING_METRICS,
    SweepError,
    find_multiruns,
    job_dirs,
    read_jobs,
    read_run,
)
from irstd.results.sweeps import load_sweeps, sweep_rows
from irstd.results.tables import csv_table, markdown_table, write_tables

PAPER_DIR = Path(reference.__file__).parent / "paper"


def make_run(path: Path, overrides=None, config=None, metrics=None, rounds=None, resolved=True) -> Path:
    """A run directory as irstd-train leaves it; each part is left out when None."""
    (path / ".hydra").mkdir(parents=True)
    if overrides is not None:
        OmegaConf.save(OmegaConf.create(overrides), path / ".hydra" / "overrides.yaml")
    if config is not None:
        OmegaConf.save(OmegaConf.create(config), path / ("config_resolved.yaml" if resolved else ".hydra/config.yaml"))
    if metrics is not None:
        (path / "metrics.json").write_text(json.dumps(metrics))
    if rounds is not None:
        with open(path / "lesps_rounds.csv", "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=ROUND_FIELDS)
            writer.writeheader()
            writer.writerows({**dict.fromkeys(ROUND_FIELDS, 0), "round": i + 1, "label_pa": pa, "label_iou": iou}
                             for i, (pa, iou) in enumerate(rounds))
    return path


LESPS = {"_target_": "irstd.lesps.callback.LESPSCallback", "Tloss": 10.0, "Tb": 0.5, "k": 0.5, "f": 5}
TEST_METRICS = {"test/iou": 0.4, "test/niou": 0.45, "test/pd": 0.9, "test/fa": 2e-5}


# ---- runs --------------------------------------------------------------------------------------------------------
def test_a_finished_run_is_read_whole(tmp_path):
    path = make_run(tmp_path / "7", ["experiment=table2/acm_full", "+seed=3", "++lesps.k=1/3", "~logger"],
                    {"test": True, "seed": 3, "data": {"split": "SIRST3"}, "model": {"name": "acm"},
                     "lesps": {**LESPS, "k": 0.3333}},
                    TEST_METRICS, rounds=[(0.2, 0.1), (0.6, 0.3)])
    run = read_run(path)
    assert run.path == path and run.num == 7
    # +, ++ and ~ are not part of the key; a deletion has no value
    assert run.overrides == {"experiment": "table2/acm_full", "seed": "3", "lesps.k": "1/3", "logger": ""}
    assert run.config.data.split == "SIRST3" and run.metrics == TEST_METRICS
    assert [row["round"] for row in run.rounds] == ["1", "2"]
    # the last round's label quality; the config's value of a scalar, the override's text of anything else
    assert run.label_quality() == (0.6, 0.3)
    assert run.value("lesps.k") == 0.3333 and run.value("experiment") == "table2/acm_full"
    assert run.value("model") == run.value("nowhere") is None
    assert run.updates_labels and run.status() == (FINISHED, "")


def test_a_run_without_metrics_is_failed_and_reads_the_unresolved_config(tmp_path):
    # the job died before writing config_resolved.yaml and metrics.json: .hydra/config.yaml stands in
    path = make_run(tmp_path / "1", ["lesps.Tb=0.3"], {"test": True, "lesps": {**LESPS, "Tb": 0.3}},
                    rounds=[(0.2, 0.1)], resolved=False)
    run = read_run(path)
    assert run.metrics is None and run.config.lesps.Tb == 0.3 and run.value("lesps.Tb") == 0.3
    status, note = run.status()
    assert status == FAILED and "no metrics.json" in note


@pytest.mark.parametrize(("config", "metrics", "rounds", "note"), [
    ({"test": True, "lesps": LESPS}, TEST_METRICS, [], "LESPS never evolved the labels"),
    ({"test": True, "lesps": LESPS}, {"val/iou": 0.3}, [(0.5, 0.25)], "no test metrics"),
    ({"test": False, "lesps": LESPS}, {}, [("", "")], "no label PA/IoU (no masks)"),
])
def test_a_run_with_incomplete_metrics_says_what_is_missing(tmp_path, config, metrics, rounds, note):
    run = read_run(make_run(tmp_path / "0", [], config, metrics, rounds))
    assert run.status() == (MISSING_METRICS, note)


def test_a_bare_directory_reads_as_empty(tmp_path):
    run = read_run(tmp_path)
    assert (run.overrides, run.config, run.metrics, run.rounds, run.num) == ({}, None, None, [], None)
    assert not run.updates_labels and run.status()[0] == FAILED and all(math.isnan(v) for v in run.label_quality())


def test_label_update_settings_are_read_from_their_groups(tmp_path):
    # today's layout: the update rule in label_update, its start rule in start; label_update=none keeps round 0
    lesps = {"_target_": "irstd.lesps.callback.LESPSCallback", "start": "${start}", "Tb": 0.3, "k": 0.5, "f": 2}
    none = {"_target_": "irstd.lesps.callback.FixedLabelsCallback"}
    sweep = tmp_path / "multirun"
    make_run(sweep / "0", ["label_update.Tb=0.3"], {"test": True, "label_update": lesps,
                                                    "start": {"name": "loss", "Tloss": 20.0}}, TEST_METRICS, [])
    make_run(sweep / "1", ["label_update=none"], {"test": True, "label_update": none, "start": {"name": "loss"}},
             TEST_METRICS, [], resolved=False)
    evolving, fixed = read_jobs(sweep)
    assert evolving.updates_labels and evolving.status() == (MISSING_METRICS, "LESPS never evolved the labels")
    assert not fixed.updates_labels and fixed.status() == (FINISHED, "")
    rows = sweep_rows(load_sweeps(sweep))
    assert [(row["Tloss"], row["Tb"], row["k"], row["f"]) for row in rows] == [(20.0, 0.3, 0.5, 2), (None,) * 4]
    # a swept setting is reported in its LESPS column, not in one of its own
    assert rows[0]["swept"] == "label_update.Tb label_update" and "label_update.Tb" not in rows[0]
    assert rows[1]["label_update"] == "none"


def test_jobs_of_a_multirun_in_job_order_and_nested_multiruns_are_found(tmp_path):
    for num in (10, 2, 0):
        make_run(tmp_path / "grids" / "tb" / str(num), [f"lesps.Tb=0.{num}"])
    (tmp_path / "grids" / "tb" / "notes").mkdir()
    (tmp_path / "grids" / "f").mkdir(parents=True)
    (tmp_path / "grids" / "f" / "multirun.yaml").write_text("hydra: {}\n")
    assert [path.name for path in job_dirs(tmp_path / "grids" / "tb")] == ["0", "2", "10"]
    assert [run.overrides["lesps.Tb"] for run in read_jobs(tmp_path / "grids" / "tb")] == ["0.0", "0.2", "0.10"]
    assert find_multiruns(tmp_path / "grids") == [tmp_path / "grids" / "f", tmp_path / "grids" / "tb"]
    with pytest.raises(SweepError, match="is not a Hydra multirun directory"):
        find_multiruns(tmp_path / "grids" / "tb" / "notes")


# ---- tables ------------------------------------------------------------------------------------------------------
def test_tables_leave_missing_values_empty_and_escape_pipes(tmp_path):
    lines = markdown_table(["a", "b", "c"], [["x|y", None, float("nan")], [1.23456, 2, "z"]],
                           lambda v: f"{v:.3g}" if isinstance(v, float) else str(v))
    assert lines == ["| a | b | c |", "|---|---|---|", "| x\\|y |  |  |", "| 1.23 | 2 | z |"]
    text = csv_table(["a", "b"], [{"a": None, "b": 0.5}, {"a": float("nan"), "b": "q,r"}])
    assert text == 'a,b\n,0.5\n,"q,r"\n'
    md, written = write_tables(tmp_path / "out", "results", "# t\n", text)
    assert (md.read_text(), written.read_text()) == ("# t\n", text)
    assert not list((tmp_path / "out").glob(".*.tmp"))


# ---- the paper's numbers -----------------------------------------------------------------------------------------
def test_the_papers_numbers_load_from_the_yaml_files():
    assert {path.name for path in PAPER_DIR.glob("*.yaml")} == {
        "paper.yaml", "table1.yaml", "table2.yaml", "table3.yaml", "classic.yaml", "single.yaml"}
    assert [len(TABLES[name]) for name in ("table1", "table2", "table3")] == [5, 9, 16]
    dnanet_centroid = next(row for row in TABLES["table2"] if row.experiment == "table2/dnanet_centroid")
    assert (dnanet_centroid.method, dnanet_centroid.supervision, dnanet_centroid.full) == (
        "DNA-Net", "centroid+", "table2/dnanet_full")
    assert list(dnanet_centroid.paper) == ["SIRST", "NUDT-SIRST", "IRSTD-1K", AVERAGE]
    assert dnanet_centroid.paper["NUDT-SIRST"] == Figures(57.99, 94.71, 26.45)
    assert dnanet_centroid.paper[AVERAGE] == Figures(57.34, 91.87, 20.24)
    # Table 1 prints the same DNA-Net runs as Table 2's average columns
    table1 = {row.experiment: row for row in TABLES["table1"]}
    assert table1["table1/centroid_lesps"].paper == {AVERAGE: dnanet_centroid.paper[AVERAGE]}
    assert table1["table1/coarse_fixed"].paper[AVERAGE].fa == 0.30
    mslcm = next(row for row in TABLES["table3"] if row.experiment == "table3/mslcm_coarse")
    assert mslcm.paper == {}
    assert list(CLASSIC) == ["tophat", "maxmedian", "rlcm", "tllcm", "mslcm", "mspcm", "wslcm", "ipi", "pstnn"]
    assert CLASSIC_PAPER["wslcm"] == Figures(1.02, 80.99, 45846.16) and CLASSIC["wslcm"].method == "WSLCM"
    assert CLASSIC["maxmedian"].source == "supplement, Table III" and CLASSIC["ipi"].source == "Table 2"
    assert (reference.CLAIMED_IOU_RATIO, reference.CLAIMED_PD_RATIO) == (0.70, 0.95)
    assert reference.PAPER_TEST_SETS == ("SIRST", "NUDT-SIRST", "IRSTD-1K") and "CVPR 2023" in reference.PAPER


def test_a_malformed_or_missing_paper_file_is_named(monkeypatch):
    with pytest.raises(PaperDataError, match="no paper data file nope.yaml in irstd/results/paper/"):
        reference.load_data("nope")
    monkeypatch.setattr(reference, "load_data", lambda name: {"rows": [
        {"experiment": "table9/x", "method": "X", "supervision": "full", "full": "table9/x",
         "paper": {AVERAGE: {"iou": 1.0, "pd": 2.0}}}]})
    with pytest.raises(PaperDataError, match=r"table9.yaml rows\[0\].paper.average must map exactly iou, pd, fa"):
        load_table("table9")
    no_supervision = {"experiment": "table9/x", "method": "X", "paper": {}}
    monkeypatch.setattr(reference, "load_data", lambda name: {"rows": [no_supervision]})
    with pytest.raises(PaperDataError, match=r"table9.yaml rows\[0\] has no `supervision`"):
        load_table("table9")


def test_our_metrics_in_the_papers_units():
    assert in_paper_units({"test/iou": 0.5, "test/pd": 0.9, "test/fa": 2e-6}, "test/") == Figures(50.0, 90.0, 2.0)
    assert in_paper_units({"iou": 0.5, "pd": 0.9}) is None
