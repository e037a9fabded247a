"""Reproduce the paper's tables (`make reproduce-*`): run the experiments of a table, then set ours beside the paper's.

A table is a Hydra multirun of `irstd-train` over its `conf/experiment/<table>/*.yaml` files and the seeds, at one
`conf/scale/*.yaml`, into `outputs/reproduce/<table>/<scale>/<timestamp>/` (one numbered run directory per job). The
jobs' `metrics.json` are then gathered into `results.md` and `results.csv` in that directory: IoU x100, Pd x100 and
Fa x1e6 as mean +- std over seeds, per test set and averaged over the test sets as the paper averages its datasets,
beside the paper's numbers (`irstd/results/paper/*.yaml`), and for point supervision the ratio to full supervision of
the same backbone.

Fig. 6 runs its four grids (`conf/hparams_search/fig6_*.yaml`) and gathers them with `irstd.results.sweeps`; the
training-free detectors are `irstd.results.classic`.
"""

from __future__ import annotations

import dataclasses
import os
import statistics
import subprocess
import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from omegaconf import OmegaConf

from irstd.results.reference import (
    AVERAGE,
    CLAIMED_IOU_RATIO,
    CLAIMED_PD_RATIO,
    HEADERS,
    METRICS,
    PAPER,
    PAPER_TEST_SETS,
    TABLES,
    Figures,
    Row,
    in_paper_units,
)
from irstd.results.runs import Run, read_jobs
from irstd.results.sweeps import collect_sweep
from irstd.results.tables import csv_table, markdown_table, notes_section, number, percent, write_tables

FIG6_SWEEPS = ("tloss", "tb", "k", "f")
# the paper analyses LESPS's settings with DNA-Net from centroid points (Sec. 5.2.2)
FIG6_EXPERIMENT = "table1/centroid_lesps"
RATIO_FIELDS = ("iou_ratio", "pd_ratio", "paper_iou_ratio", "paper_pd_ratio")
CSV_FIELDS = ("table", "scale", "experiment", "method", "supervision", "test_set", "seeds",
              *(f"{metric}_{part}" for metric in METRICS for part in ("mean", "std")),
              *(f"paper_{metric}" for metric in METRICS), *RATIO_FIELDS)


# ---- running -----------------------------------------------------------------------------------------------------
def timestamp() -> str:
    return datetime.now().strftime("%Y-%m-%d_%H-%M-%S")


def new_sweep_dir(out_dir: Path, name: str, scale: str) -> Path:
    return Path(out_dir) / name / scale / timestamp()


def seed_list(seeds: int) -> str:
    if seeds < 1:
        raise ValueError(f"seeds must be >= 1, got {seeds}")
    return ",".join(str(seed) for seed in range(seeds))


def check_table(table: str) -> None:
    if table not in TABLES:
        raise ValueError(f"unknown table {table!r}; known: {', '.join(TABLES)}")


def table_command(table: str, scale: str, seeds: int, sweep_dir: Path, extra: Sequence[str] = ()) -> list[str]:
    """The `irstd-train` multirun of a table: its experiments x seeds 0..seeds-1 at `scale`."""
    check_table(table)
    experiments = ",".join(row.experiment for row in TABLES[table])
    return [sys.executable, "-m", "irstd.cli.train", "--multirun", f"experiment={experiments}",
            f"seed={seed_list(seeds)}", f"scale={scale}", f"hydra.sweep.dir={sweep_dir}", *extra]


def fig6_command(sweep: str, scale: str, seeds: int, sweep_dir: Path, extra: Sequence[str] = ()) -> list[str]:
    return [sys.executable, "-m", "irstd.cli.train", "--multirun", f"hparams_search=fig6_{sweep}",
            f"experiment={FIG6_EXPERIMENT}", f"seed={seed_list(seeds)}", f"scale={scale}",
            f"hydra.sweep.dir={sweep_dir}", *extra]


def job_environment(scale: str) -> dict[str, str]:
    """The environment of the training processes. At smoke scale torch gets one thread (unless OMP_NUM_THREADS is
    set): on tensors this small a second thread gains little, and on a busy machine waiting for it made a DNA-Net
    job 6x slower (16 s against 98 s, measured)."""
    environment = dict(os.environ)
    if scale == "smoke":
        environment.setdefault("OMP_NUM_THREADS", "1")
    return environment


def run_table(table: str, scale: str, seeds: int, out_dir: Path, extra: Sequence[str] = ()) -> tuple[Path, int]:
    """Run a table's multirun, then write its results (also when a job failed: the table shows what finished).

    Returns the sweep directory and the multirun's exit status."""
    sweep_dir = new_sweep_dir(out_dir, table, scale)
    command = table_command(table, scale, seeds, sweep_dir, extra)
    status = subprocess.run(command, env=job_environment(scale), check=False).returncode
    write_results(sweep_dir, table, scale)
    return sweep_dir, status


def run_fig6(scale: str, seeds: int, out_dir: Path, extra: Sequence[str] = ()) -> tuple[Path, int]:
    """The four Fig. 6 grids (conf/hparams_search/fig6_*.yaml) into one parent directory, gathered by
    `irstd.results.sweeps.collect_sweep` into sweep.md / sweep.csv / sweep.png there.

    Returns the parent directory and the last non-zero exit status of the grids (0: all finished)."""
    parent = new_sweep_dir(out_dir, "fig6", scale)
    status = 0
    for sweep in FIG6_SWEEPS:
        command = fig6_command(sweep, scale, seeds, parent / f"fig6_{sweep}", extra)
        status = subprocess.run(command, env=job_environment(scale), check=False).returncode or status
    collect_sweep(parent)
    return parent, status


# ---- gathering ---------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class TableJob:
    """A job of a table's multirun as the table sees it: its experiment, seed and per-test-set figures in the
    paper's units (None: no complete test metrics)."""

    path: Path
    experiment: str
    seed: int | None
    figures: dict[str, Figures] | None

    @classmethod
    def of(cls, run: Run) -> TableJob | None:
        """None when the run is not a job of a table (no `experiment=` override)."""
        if "experiment" not in run.overrides:
            return None
        seed = int(run.overrides["seed"]) if "seed" in run.overrides else None
        figures = test_set_figures(run.metrics, split_name(run)) if run.metrics is not None else None
        return cls(run.path, run.overrides["experiment"], seed, figures)


def split_name(run: Run) -> str:
    """The name a job's single test set is reported under: its `data.split` (`test` when unknown)."""
    if run.config is None:
        return "test"
    split = OmegaConf.select(run.config, "data.split", default="test", throw_on_resolution_failure=False)
    return str(split or "test")


def test_set_figures(metrics: dict[str, float], single_name: str = "test") -> dict[str, Figures] | None:
    """Per test set figures in the paper's units from `test/<SET>/<metric>` keys (several test sets), or from
    `test/<metric>` (one test set, reported as `single_name`); None when the job wrote no test metrics."""
    names = {key.split("/")[1] for key in metrics if key.startswith("test/") and key.count("/") == 2}
    # the paper's datasets in its column order, then any others
    order = {name: index for index, name in enumerate(PAPER_TEST_SETS)}
    sets = sorted(names, key=lambda name: (order.get(name, len(order)), name))
    prefixes = {name: f"test/{name}/" for name in sets} or {single_name: "test/"}
    figures = {name: in_paper_units(metrics, prefix) for name, prefix in prefixes.items()}
    return None if any(value is None for value in figures.values()) else figures


def load_jobs(sweep_dir: Path) -> list[TableJob]:
    """The jobs of a table's multirun directory, in job order."""
    jobs = [TableJob.of(run) for run in read_jobs(sweep_dir)]
    return [job for job in jobs if job is not None]


@dataclasses.dataclass(frozen=True)
class Stat:
    """A metric over seeds."""

    mean: float
    std: float | None  # sample standard deviation; None with one seed

    @classmethod
    def of(cls, values: Sequence[float]) -> Stat:
        return cls(statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None)

    def text(self) -> str:
        return f"{self.mean:.2f}" if self.std is None else f"{self.mean:.2f} ± {self.std:.2f}"


@dataclasses.dataclass(frozen=True)
class Result:
    """One output row: an experiment on one test set (or averaged over them), ours over seeds beside the paper's."""

    row: Row
    test_set: str
    seeds: tuple[int | None, ...]
    ours: dict[str, Stat]
    paper_set: str  # the paper's column this row is compared with: the same test set, or AVERAGE
    is_average: bool = False  # the average over the test sets (with one test set: that set)
    iou_ratio: float | None = None  # ours / ours under full supervision (average rows of point supervision)
    pd_ratio: float | None = None
    paper_iou_ratio: float | None = None
    paper_pd_ratio: float | None = None

    @property
    def paper(self) -> Figures | None:
        return self.row.paper.get(self.paper_set)


def summarize(table: str, jobs: Sequence[TableJob]) -> tuple[list[Result], list[str]]:
    """The results of a table from its jobs, and notes on experiments without (complete) results."""
    check_table(table)
    results: list[Result] = []
    notes: list[str] = []
    averages: dict[str, dict[str, Stat]] = {}
    for row in TABLES[table]:
        done, note = _finished_jobs(row, jobs)
        notes += [note] if note else []
        if done:
            row_results = _row_results(row, done)
            averages[row.experiment] = row_results[-1].ours
            results += row_results
    # Table 3's reference, table1/full, is not one of its experiments: its paper figures come from Table 1
    rows = {row.experiment: row for table_rows in TABLES.values() for row in table_rows}
    return [_with_ratios(result, averages, rows[result.row.full]) for result in results], notes


def _finished_jobs(row: Row, jobs: Sequence[TableJob]) -> tuple[list[TableJob], str | None]:
    """The jobs of a row's experiment with test metrics, and a note when it has none or some lack them."""
    mine = [job for job in jobs if job.experiment == row.experiment]
    done = [job for job in mine if job.figures is not None]
    if not mine:
        return done, f"{row.experiment}: no job"
    if len(done) < len(mine):
        return done, (f"{row.experiment}: {len(mine) - len(done)} of {len(mine)} jobs left no test metrics "
                      f"({', '.join(str(job.path) for job in mine if job.figures is None)})")
    return done, None


def _row_results(row: Row, done: Sequence[TableJob]) -> list[Result]:
    """A row's results: one per test set when there are several, then the average over them (the last)."""
    seeds = tuple(job.seed for job in done)
    test_sets = _test_sets(row, done)
    results = []
    if len(test_sets) > 1:
        results = [Result(row, name, seeds, _stats(done, name), paper_set=name) for name in test_sets]
        average_name, paper_set = AVERAGE, AVERAGE
    else:
        # one test set is its own average; the paper's column of that set if it has one, else its average
        average_name = test_sets[0]
        paper_set = average_name if average_name in row.paper else AVERAGE
    results.append(Result(row, average_name, seeds, _stats(done), paper_set, is_average=True))
    return results


def _test_sets(row: Row, done: Sequence[TableJob]) -> list[str]:
    """The test sets all of a row's jobs were tested on; an error naming the jobs when they differ."""
    test_sets = list(done[0].figures)
    if any(list(job.figures) != test_sets for job in done):
        raise ValueError(f"{row.experiment}: the jobs were tested on different test sets: "
                         + "; ".join(f"{job.path}: {', '.join(job.figures)}" for job in done))
    return test_sets


def _stats(done: Sequence[TableJob], test_set: str | None = None) -> dict[str, Stat]:
    """Each metric over the jobs on one test set, or (None) on the average over the test sets: the paper's average
    is the plain mean of its datasets' figures, taken here job by job."""
    def value(job: TableJob, metric: str) -> float:
        if test_set is not None:
            return getattr(job.figures[test_set], metric)
        return statistics.fmean(getattr(figures, metric) for figures in job.figures.values())

    return {metric: Stat.of([value(job, metric) for job in done]) for metric in METRICS}


def _with_ratios(result: Result, averages: dict[str, dict[str, Stat]], full_row: Row) -> Result:
    """Point supervision's average row gains its ratios to full supervision of the same backbone, ours and the
    paper's."""
    if result.row.supervision == "full" or not result.is_average:
        return result
    ratios = {}
    full = averages.get(full_row.experiment)
    if full is not None:
        ratios.update(iou_ratio=_ratio(result.ours["iou"].mean, full["iou"].mean),
                      pd_ratio=_ratio(result.ours["pd"].mean, full["pd"].mean))
    paper, full_paper = result.paper, full_row.paper.get(result.paper_set)
    if paper is not None and full_paper is not None:
        ratios.update(paper_iou_ratio=paper.iou / full_paper.iou, paper_pd_ratio=paper.pd / full_paper.pd)
    return dataclasses.replace(result, **ratios)


def _ratio(value: float, reference: float) -> float | None:
    return value / reference if reference > 0 else None


# ---- writing -----------------------------------------------------------------------------------------------------
def _claim() -> str:
    return (f"over {CLAIMED_IOU_RATIO * 100:.0f} % of the fully supervised IoU and "
            f"{CLAIMED_PD_RATIO * 100:.0f} % of its Pd")


def _intro(table: str, scale: str, sweep_dir: Path, results: Sequence[Result]) -> list[str]:
    seeds = sorted({seed for result in results for seed in result.seeds if seed is not None})
    title = f"Table {table.removeprefix('table')}"
    lines = [f"# {title} of Ying et al. (CVPR 2023), reproduced at scale `{scale}`", "",
             f"Jobs: `{sweep_dir}`; seeds {', '.join(map(str, seeds)) or 'n/a'}. "
             "Ours: mean ± standard deviation over seeds (no ± with one seed). "
             "IoU and Pd x100, Fa x1e6. Paper: " + PAPER + f", its {title}; "
             "on a test set it does not report, its average over SIRST, NUDT-SIRST and IRSTD-1K.", ""]
    if scale == "smoke":
        lines += ["**Smoke scale**: a few epochs on small synthetic images on a CPU. These numbers check the "
                  "mechanics (every experiment runs, LESPS evolves, the table is written), not the paper's "
                  "accuracy, and do not compare with its columns.", ""]
    return lines


def _figures_table(results: Sequence[Result]) -> list[str]:
    header = ["method", "supervision", "test set", "seeds"]
    for metric in METRICS:
        header += [HEADERS[metric], "paper"]
    rows = []
    for result in results:
        cells = [result.row.method, result.row.supervision, result.test_set, str(len(result.seeds))]
        for metric in METRICS:
            cells += [result.ours[metric].text(), number(getattr(result.paper, metric) if result.paper else None)]
        rows.append(cells)
    return markdown_table(header, rows)


def _verdict(result: Result) -> str:
    """Whether our ratios meet the paper's claim: yes, no, or '' when a ratio is unknown."""
    if result.iou_ratio is None or result.pd_ratio is None:
        return ""
    return "yes" if result.iou_ratio > CLAIMED_IOU_RATIO and result.pd_ratio > CLAIMED_PD_RATIO else "no"


def _ratios_section(results: Sequence[Result], verdict: bool) -> list[str]:
    """Point supervision's average rows against full supervision; `verdict` adds whether each meets the claim."""
    header = ["method", "supervision", "IoU / full", "paper", "Pd / full", "paper"] + ([_claim()] if verdict else [])
    rows = [[result.row.method, result.row.supervision, percent(result.iou_ratio), percent(result.paper_iou_ratio),
             percent(result.pd_ratio), percent(result.paper_pd_ratio)] + ([_verdict(result)] if verdict else [])
            for result in results]
    return ["", "## Point supervision against full supervision of the same backbone", "",
            f"Ratio of the means, averaged over the test sets. The paper claims {_claim()} with LESPS.", "",
            *markdown_table(header, rows)]


def results_markdown(table: str, scale: str, sweep_dir: Path, results: Sequence[Result], notes: Sequence[str]) -> str:
    lines = _intro(table, scale, sweep_dir, results) + _figures_table(results)
    ratio_rows = [result for result in results if result.is_average and result.row.supervision != "full"]
    if ratio_rows:
        # a smoke run's ratios say nothing about the paper's claim, so it gets no verdict
        lines += _ratios_section(ratio_rows, verdict=scale != "smoke")
    lines += notes_section(notes)
    return "\n".join(lines) + "\n"


def _csv_line(table: str, scale: str, result: Result) -> dict[str, object]:
    line: dict[str, object] = {
        "table": table, "scale": scale, "experiment": result.row.experiment, "method": result.row.method,
        "supervision": result.row.supervision, "test_set": result.test_set,
        "seeds": " ".join(str(seed) for seed in result.seeds)}
    for metric in METRICS:
        line[f"{metric}_mean"] = result.ours[metric].mean
        line[f"{metric}_std"] = result.ours[metric].std
        line[f"paper_{metric}"] = getattr(result.paper, metric) if result.paper else None
    line.update({key: getattr(result, key) for key in RATIO_FIELDS})
    return line


def results_csv(table: str, scale: str, results: Sequence[Result]) -> str:
    """One line per experiment and test set, in the paper's units (ratios as fractions); empty: not available."""
    return csv_table(CSV_FIELDS, (_csv_line(table, scale, result) for result in results))


def write_results(sweep_dir: Path, table: str, scale: str) -> Path:
    """Write results.md and results.csv into the sweep directory; returns the path of results.md."""
    sweep_dir = Path(sweep_dir)
    check_table(table)
    jobs = load_jobs(sweep_dir) if sweep_dir.is_dir() else []
    results, notes = summarize(table, jobs)
    markdown = results_markdown(table, scale, sweep_dir, results, notes)
    return write_tables(sweep_dir, "results", markdown, results_csv(table, scale, results))[0]
