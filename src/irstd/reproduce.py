"""Reproduce the paper's tables (`make reproduce-*`): run the experiments of a table, then set ours beside the paper's.

A table is a Hydra multirun of `irstd-train` over its `conf/experiment/<table>/*.yaml` files and the seeds, at one
`conf/scale/*.yaml`, into `outputs/reproduce/<table>/<scale>/<timestamp>/` (one numbered run directory per job). The
jobs' `metrics.json` are then gathered into `results.md` and `results.csv` in that directory: IoU x100, Pd x100 and
Fa x1e6 as mean +- std over seeds, per test set and averaged over the test sets as the paper averages its datasets,
beside the paper's numbers, and for point supervision the ratio to full supervision of the same backbone.

`classic` trains nothing: it runs `irstd-eval model=<detector> data=sirst` for the training-free detectors
(`irstd.classic`) into `outputs/reproduce/classic/<timestamp>/<detector>/` and sets their SIRST figures and seconds
per image beside Table 2's SIRST columns.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import os
import statistics
import subprocess
import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from omegaconf import OmegaConf

from irstd.fsutil import write_text_atomic

PAPER = ("Ying et al., Mapping Degeneration Meets Label Evolution: Learning Infrared Small Target Detection with "
         "Single Point Supervision, CVPR 2023 (arXiv:2304.01484)")
PAPER_TEST_SETS = ("SIRST", "NUDT-SIRST", "IRSTD-1K")
AVERAGE = "average"
METRICS = ("iou", "pd", "fa")
# metrics.json holds fractions; the paper prints IoU and Pd x100 and Fa x1e6
UNITS = {"iou": 100.0, "pd": 100.0, "fa": 1e6}
HEADERS = {"iou": "IoU x100", "pd": "Pd x100", "fa": "Fa x1e6"}
# the paper's claim (Sec. 5.3, Conclusion): with LESPS, over 70 % of the fully supervised IoU and 95 % of its Pd
CLAIMED_IOU_RATIO, CLAIMED_PD_RATIO = 0.70, 0.95
FIG6_SWEEPS = ("tloss", "tb", "k", "f")
# the paper analyses LESPS's settings with DNA-Net from centroid points (Sec. 5.2.2)
FIG6_EXPERIMENT = "table1/centroid_lesps"


@dataclasses.dataclass(frozen=True)
class Figures:
    """IoU x100, Pd x100, Fa x1e6: the paper's units."""

    iou: float
    pd: float
    fa: float


@dataclasses.dataclass(frozen=True)
class Row:
    """One row of a paper table and the experiment that reproduces it."""

    experiment: str  # conf/experiment/<experiment>.yaml
    method: str
    supervision: str
    full: str  # the experiment of the same backbone under full supervision, the reference of the ratios
    paper: dict[str, Figures]  # test set (or AVERAGE) -> the paper's figures


def _table2_rows(backbone: str, method: str, full: list[float], centroid: list[float],
                 coarse: list[float]) -> list[Row]:
    """Table 2's three rows of a backbone, each typed as 12 numbers: (IoU, Pd, Fa) on SIRST, NUDT-SIRST, IRSTD-1K
    and their average, as printed."""
    def figures(numbers: list[float]) -> dict[str, Figures]:
        names = (*PAPER_TEST_SETS, AVERAGE)
        return {name: Figures(*numbers[3 * i:3 * i + 3]) for i, name in enumerate(names)}

    reference = f"table2/{backbone}_full"
    return [Row(reference, method, "full", reference, figures(full)),
            Row(f"table2/{backbone}_centroid", method, "centroid+", reference, figures(centroid)),
            Row(f"table2/{backbone}_coarse", method, "coarse+", reference, figures(coarse))]


def _table3_rows(name: str, method: str, centroid: tuple[float, float, float] | None,
                 coarse: tuple[float, float, float] | None) -> list[Row]:
    """Table 3's two rows of a pseudo-label method, each typed as its average (IoU, Pd, Fa) as printed, or None."""
    return [Row(f"table3/{name}_{source}", method, source, "table1/full", {AVERAGE: Figures(*paper)} if paper else {})
            for source, paper in (("centroid", centroid), ("coarse", coarse))]


# Typed in from the paper (Ying et al., CVPR 2023): Table 1 (averages over SIRST, NUDT-SIRST, IRSTD-1K; the
# w/o LESPS rows are scored at threshold 0.15) and Table 2 (per dataset and average).
TABLES: dict[str, list[Row]] = {
    "table1": [
        Row("table1/centroid_fixed", "DNA-Net w/o LESPS", "centroid", "table1/full",
            {AVERAGE: Figures(5.12, 89.19, 0.68)}),
        Row("table1/coarse_fixed", "DNA-Net w/o LESPS", "coarse", "table1/full",
            {AVERAGE: Figures(2.96, 49.89, 0.30)}),
        Row("table1/centroid_lesps", "DNA-Net w/ LESPS", "centroid", "table1/full",
            {AVERAGE: Figures(57.34, 91.87, 20.24)}),
        Row("table1/coarse_lesps", "DNA-Net w/ LESPS", "coarse", "table1/full",
            {AVERAGE: Figures(56.18, 91.49, 18.32)}),
        Row("table1/full", "DNA-Net", "full", "table1/full", {AVERAGE: Figures(75.67, 96.18, 22.94)}),
    ],
    "table2": [
        *_table2_rows("acm", "ACM",
                      [64.92, 90.87, 12.76, 57.42, 91.75, 39.73, 57.49, 91.58, 43.86, 59.94, 91.40, 32.12],
                      [49.23, 89.35, 40.95, 42.09, 91.11, 38.24, 41.44, 88.89, 60.46, 44.25, 89.78, 46.55],
                      [47.81, 88.21, 40.75, 40.64, 81.11, 49.45, 40.37, 92.59, 64.81, 42.94, 87.30, 51.67]),
        *_table2_rows("alcnet", "ALCNet",
                      [67.91, 92.78, 37.04, 61.78, 91.32, 36.36, 62.03, 90.91, 42.46, 63.91, 91.67, 38.62],
                      [50.62, 92.02, 36.84, 41.58, 92.28, 67.01, 44.90, 90.57, 84.68, 45.70, 91.62, 62.84],
                      [51.00, 90.87, 42.40, 44.14, 92.80, 32.10, 46.75, 92.26, 64.30, 47.30, 91.98, 46.27]),
        *_table2_rows("dnanet", "DNA-Net",
                      [76.86, 96.96, 22.50, 87.42, 98.31, 24.50, 62.73, 93.27, 21.81, 75.67, 96.18, 22.94],
                      [61.95, 92.02, 18.17, 57.99, 94.71, 26.45, 52.09, 88.88, 16.09, 57.34, 91.87, 20.24],
                      [61.13, 93.16, 11.87, 58.37, 93.76, 28.01, 49.05, 87.54, 15.07, 56.18, 91.49, 18.32]),
    ],
    # Table 3 (averages; DNA-Net on fixed pseudo labels, then with LESPS, whose rows are Table 1's); MSLCM, asked
    # for beside it, has no paper figures
    "table3": [
        *_table3_rows("threshold03", "Threshold=0.3", (4.92, 81.78, 13.18), (5.67, 83.12, 11.98)),
        *_table3_rows("threshold05", "Threshold=0.5", (13.24, 73.08, 5.31), (15.54, 76.03, 4.89)),
        *_table3_rows("threshold07", "Threshold=0.7", (14.51, 45.50, 4.28), (15.21, 46.88, 3.84)),
        *_table3_rows("rlcm", "RLCM", (21.43, 89.10, 2.67), (22.53, 90.56, 3.69)),
        *_table3_rows("tllcm", "TLLCM", (21.95, 90.96, 7.72), (26.05, 94.15, 4.27)),
        *_table3_rows("mspcm", "MSPCM", (28.89, 92.62, 3.84), (29.79, 93.95, 2.28)),
        *_table3_rows("mslcm", "MSLCM", None, None),
        Row("table1/centroid_lesps", "LESPS", "centroid", "table1/full", {AVERAGE: Figures(57.34, 91.87, 20.24)}),
        Row("table1/coarse_lesps", "LESPS", "coarse", "table1/full", {AVERAGE: Figures(56.18, 91.49, 18.32)}),
    ],
}


# Table 2's SIRST columns of the training-free methods, in the paper's units; Max-Median, MSLCM and WSLCM come from
# the supplement's Table III, which repeats Table 2 with more methods.
CLASSIC_METHODS = {"tophat": "Top-Hat", "maxmedian": "Max-Median", "rlcm": "RLCM", "tllcm": "TLLCM",
                   "mslcm": "MSLCM", "mspcm": "MSPCM", "wslcm": "WSLCM", "ipi": "IPI", "pstnn": "PSTNN"}
CLASSIC_PAPER = {"tophat": Figures(7.14, 79.84, 1012.00), "rlcm": Figures(21.02, 80.61, 199.15),
                 "tllcm": Figures(11.03, 79.47, 7.27), "mspcm": Figures(12.38, 83.27, 17.77),
                 "ipi": Figures(25.67, 85.55, 11.47), "pstnn": Figures(22.40, 77.95, 29.11),
                 "maxmedian": Figures(4.17, 69.20, 55.33), "mslcm": Figures(11.56, 78.33, 8.37),
                 "wslcm": Figures(1.02, 80.99, 45846.16)}


# ---- running -----------------------------------------------------------------------------------------------------
def new_sweep_dir(out_dir: Path, name: str, scale: str) -> Path:
    return Path(out_dir) / name / scale / datetime.now().strftime("%Y-%m-%d_%H-%M-%S")


def seed_list(seeds: int) -> str:
    if seeds < 1:
        raise ValueError(f"seeds must be >= 1, got {seeds}")
    return ",".join(str(seed) for seed in range(seeds))


def table_command(table: str, scale: str, seeds: int, sweep_dir: Path, extra: Sequence[str] = ()) -> list[str]:
    """The `irstd-train` multirun of a table: its experiments x seeds 0..seeds-1 at `scale`."""
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
    `irstd.sweeps.collect_sweep` into sweep.md / sweep.csv / sweep.png there."""
    from irstd.sweeps import collect_sweep

    parent = new_sweep_dir(out_dir, "fig6", scale)
    status = 0
    for sweep in FIG6_SWEEPS:
        command = fig6_command(sweep, scale, seeds, parent / f"fig6_{sweep}", extra)
        status = subprocess.run(command, env=job_environment(scale), check=False).returncode or status
    collect_sweep(parent)
    return parent, status


def classic_command(detector: str, run_dir: Path, data_root: str | None, extra: Sequence[str] = ()) -> list[str]:
    """`irstd-eval` of one training-free detector on the SIRST test split (data.root: data=sirst's default)."""
    root = [f"data.root={data_root}"] if data_root else []
    return [sys.executable, "-m", "irstd.cli.eval", f"model={detector}", "data=sirst", *root,
            f"hydra.run.dir={run_dir}", *extra]


def run_classic(detectors: Sequence[str], data_root: str | None, out_dir: Path,
                extra: Sequence[str] = ()) -> tuple[Path, int]:
    """Evaluate each detector (one failing does not stop the others), then write the table of those that finished.

    Returns the directory and the last non-zero exit status (0: all finished)."""
    run_dir = Path(out_dir) / "classic" / datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    status = 0
    for detector in detectors:
        command = classic_command(detector, run_dir / detector, data_root, extra)
        status = subprocess.run(command, check=False).returncode or status
    write_classic_results(run_dir)
    return run_dir, status


# ---- gathering ---------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Job:
    """What one job of a table's multirun left: its experiment, seed and per-test-set figures (None: no metrics)."""

    path: Path
    experiment: str
    seed: int | None
    figures: dict[str, Figures] | None


def read_job(path: Path) -> Job | None:
    """A numbered run directory of the multirun; None when it is not a job of a table (no `experiment=` override)."""
    overrides_file = path / ".hydra" / "overrides.yaml"
    if not overrides_file.is_file():
        return None
    overrides = dict(str(item).lstrip("+").partition("=")[::2] for item in OmegaConf.load(overrides_file) or [])
    if "experiment" not in overrides:
        return None
    seed = int(overrides["seed"]) if "seed" in overrides else None
    metrics_file = path / "metrics.json"
    figures = None
    if metrics_file.is_file():
        figures = test_set_figures(json.loads(metrics_file.read_text()), _split_name(path))
    return Job(path, overrides["experiment"], seed, figures)


def _split_name(path: Path) -> str:
    config_file = path / "config_resolved.yaml"
    if config_file.is_file():
        return str(OmegaConf.select(OmegaConf.load(config_file), "data.split", default="test") or "test")
    return "test"


def test_set_figures(metrics: dict[str, float], single_name: str = "test") -> dict[str, Figures] | None:
    """Per test set figures in the paper's units from `test/<SET>/<metric>` keys (several test sets), or from
    `test/<metric>` (one test set, reported as `single_name`); None when the job wrote no test metrics."""
    names = {key.split("/")[1] for key in metrics if key.startswith("test/") and key.count("/") == 2}
    # the paper's datasets in its column order, then any others
    order = {name: index for index, name in enumerate(PAPER_TEST_SETS)}
    sets = sorted(names, key=lambda name: (order.get(name, len(order)), name))
    keys = {name: f"test/{name}/" for name in sets} or {single_name: "test/"}
    figures = {}
    for name, prefix in keys.items():
        if not all(prefix + metric in metrics for metric in METRICS):
            return None
        figures[name] = Figures(*(float(metrics[prefix + metric]) * UNITS[metric] for metric in METRICS))
    return figures


def load_jobs(sweep_dir: Path) -> list[Job]:
    jobs = [read_job(child) for child in sorted(Path(sweep_dir).iterdir(), key=lambda p: (len(p.name), p.name))
            if child.is_dir() and child.name.isdigit()]
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


def summarize(table: str, jobs: Sequence[Job]) -> tuple[list[Result], list[str]]:
    """The results of a table from its jobs, and notes on experiments without (complete) results."""
    results: list[Result] = []
    notes: list[str] = []
    averages: dict[str, dict[str, Stat]] = {}
    for row in TABLES[table]:
        mine = [job for job in jobs if job.experiment == row.experiment]
        done = [job for job in mine if job.figures is not None]
        if not mine:
            notes.append(f"{row.experiment}: no job")
        elif len(done) < len(mine):
            notes.append(f"{row.experiment}: {len(mine) - len(done)} of {len(mine)} jobs left no test metrics "
                         f"({', '.join(str(job.path) for job in mine if job.figures is None)})")
        if not done:
            continue
        seeds = tuple(job.seed for job in done)
        test_sets = list(done[0].figures)
        if any(list(job.figures) != test_sets for job in done):
            raise ValueError(f"{row.experiment}: the jobs were tested on different test sets: "
                             + "; ".join(f"{job.path}: {', '.join(job.figures)}" for job in done))
        if len(test_sets) > 1:
            for name in test_sets:
                ours = {m: Stat.of([getattr(job.figures[name], m) for job in done]) for m in METRICS}
                results.append(Result(row, name, seeds, ours, paper_set=name))
            average_name, paper_set = AVERAGE, AVERAGE
        else:
            # one test set is its own average; the paper's column of that set if it has one, else its average
            average_name = test_sets[0]
            paper_set = average_name if average_name in row.paper else AVERAGE
        # the paper's average is the plain mean of its datasets' figures, taken here job by job
        per_job = [{m: statistics.fmean(getattr(f, m) for f in job.figures.values()) for m in METRICS}
                   for job in done]
        averages[row.experiment] = {m: Stat.of([figures[m] for figures in per_job]) for m in METRICS}
        results.append(Result(row, average_name, seeds, averages[row.experiment], paper_set, is_average=True))
    # Table 3's reference, table1/full, is not one of its experiments: its paper figures come from Table 1
    rows = {row.experiment: row for table_rows in TABLES.values() for row in table_rows}
    return [_with_ratios(result, averages, rows[result.row.full]) for result in results], notes


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
def _number(value: float | None, digits: int = 2) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def _percent(value: float | None) -> str:
    return "" if value is None else f"{100 * value:.1f} %"


def results_markdown(table: str, scale: str, sweep_dir: Path, results: Sequence[Result], notes: Sequence[str]) -> str:
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
    header = ["method", "supervision", "test set", "seeds"]
    for metric in METRICS:
        header += [HEADERS[metric], "paper"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for result in results:
        cells = [result.row.method, result.row.supervision, result.test_set, str(len(result.seeds))]
        for metric in METRICS:
            cells += [result.ours[metric].text(), _number(getattr(result.paper, metric) if result.paper else None)]
        lines.append("| " + " | ".join(cells) + " |")
    ratio_rows = [result for result in results if result.is_average and result.row.supervision != "full"]
    if ratio_rows:
        # a smoke run's ratios say nothing about the paper's claim, so it gets no verdict
        verdict = scale != "smoke"
        header = ["method", "supervision", "IoU / full", "paper", "Pd / full", "paper"]
        claim = (f"over {CLAIMED_IOU_RATIO * 100:.0f} % of the fully supervised IoU and "
                 f"{CLAIMED_PD_RATIO * 100:.0f} % of its Pd")
        header += [claim] if verdict else []
        lines += ["", "## Point supervision against full supervision of the same backbone", "",
                  f"Ratio of the means, averaged over the test sets. The paper claims {claim} with LESPS.", "",
                  "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for result in ratio_rows:
            cells = [result.row.method, result.row.supervision, _percent(result.iou_ratio),
                     _percent(result.paper_iou_ratio), _percent(result.pd_ratio), _percent(result.paper_pd_ratio)]
            if verdict:
                known = result.iou_ratio is not None and result.pd_ratio is not None
                meets = known and result.iou_ratio > CLAIMED_IOU_RATIO and result.pd_ratio > CLAIMED_PD_RATIO
                cells.append(("yes" if meets else "no") if known else "")
            lines.append("| " + " | ".join(cells) + " |")
    if notes:
        lines += ["", "## Missing results", ""] + [f"- {note}" for note in notes]
    return "\n".join(lines) + "\n"


CSV_FIELDS = ("table", "scale", "experiment", "method", "supervision", "test_set", "seeds",
              *(f"{metric}_{part}" for metric in METRICS for part in ("mean", "std")),
              *(f"paper_{metric}" for metric in METRICS),
              "iou_ratio", "pd_ratio", "paper_iou_ratio", "paper_pd_ratio")


def results_csv(table: str, scale: str, results: Sequence[Result]) -> str:
    """One line per experiment and test set, in the paper's units (ratios as fractions); empty: not available."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    for result in results:
        line = {"table": table, "scale": scale, "experiment": result.row.experiment, "method": result.row.method,
                "supervision": result.row.supervision, "test_set": result.test_set,
                "seeds": " ".join(str(seed) for seed in result.seeds)}
        for metric in METRICS:
            line[f"{metric}_mean"] = result.ours[metric].mean
            line[f"{metric}_std"] = "" if result.ours[metric].std is None else result.ours[metric].std
            line[f"paper_{metric}"] = getattr(result.paper, metric) if result.paper else ""
        for key in ("iou_ratio", "pd_ratio", "paper_iou_ratio", "paper_pd_ratio"):
            value = getattr(result, key)
            line[key] = "" if value is None else value
        writer.writerow(line)
    return buffer.getvalue()


def write_results(sweep_dir: Path, table: str, scale: str) -> Path:
    """Write results.md and results.csv into the sweep directory; returns the path of results.md."""
    sweep_dir = Path(sweep_dir)
    if table not in TABLES:
        raise ValueError(f"unknown table {table!r}; known: {', '.join(TABLES)}")
    jobs = load_jobs(sweep_dir) if sweep_dir.is_dir() else []
    results, notes = summarize(table, jobs)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(sweep_dir / "results.csv", results_csv(table, scale, results))
    write_text_atomic(sweep_dir / "results.md", results_markdown(table, scale, sweep_dir, results, notes))
    return sweep_dir / "results.md"


@dataclasses.dataclass(frozen=True)
class ClassicResult:
    """One training-free detector on SIRST: ours in the paper's units beside the paper's Table 2 figures."""

    detector: str
    ours: Figures
    seconds_per_image: float | None
    images: int | None

    @property
    def method(self) -> str:
        return CLASSIC_METHODS.get(self.detector, self.detector)

    @property
    def paper(self) -> Figures | None:
        return CLASSIC_PAPER.get(self.detector)


def load_classic(run_dir: Path) -> tuple[list[ClassicResult], list[str]]:
    """The results under `run_dir/<detector>/metrics.json` (the paper's order, then others by name), and notes on
    detector directories without metrics."""
    order = {name: index for index, name in enumerate(CLASSIC_METHODS)}
    children = sorted((child for child in Path(run_dir).iterdir() if child.is_dir()),
                      key=lambda child: (order.get(child.name, len(order)), child.name))
    results, notes = [], []
    for child in children:
        metrics_file = child / "metrics.json"
        if not metrics_file.is_file():
            notes.append(f"{child.name}: no metrics.json in {child} (the evaluation failed or did not finish)")
            continue
        metrics = json.loads(metrics_file.read_text())
        ours = Figures(*(float(metrics[metric]) * UNITS[metric] for metric in METRICS))
        results.append(ClassicResult(child.name, ours, metrics.get("seconds_per_image"), metrics.get("images")))
    return results, notes


def classic_markdown(run_dir: Path, results: Sequence[ClassicResult], notes: Sequence[str]) -> str:
    lines = ["# Table 2 of Ying et al. (CVPR 2023): the training-free methods on SIRST", "",
             f"Runs: `{run_dir}`, one `irstd-eval model=<detector> data=sirst` each, on the SIRST test split with "
             "each method's own threshold rule. IoU and Pd x100, Fa x1e6. Paper: " + PAPER + ", its Table 2, "
             "SIRST columns (Max-Median, MSLCM and WSLCM: the supplement's Table III). Seconds per image: the "
             "detector alone, on this machine.", ""]
    header = ["method", "detector", "images"]
    for metric in METRICS:
        header += [HEADERS[metric], "paper"]
    header.append("s / image")
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for result in results:
        cells = [result.method, f"`model={result.detector}`", "" if result.images is None else str(result.images)]
        for metric in METRICS:
            cells += [_number(getattr(result.ours, metric)),
                      _number(getattr(result.paper, metric) if result.paper else None)]
        cells.append(_number(result.seconds_per_image, 3))
        lines.append("| " + " | ".join(cells) + " |")
    if notes:
        lines += ["", "## Missing results", ""] + [f"- {note}" for note in notes]
    return "\n".join(lines) + "\n"


CLASSIC_CSV_FIELDS = ("detector", "method", "images", *(f"{metric}" for metric in METRICS),
                      *(f"paper_{metric}" for metric in METRICS), "seconds_per_image")


def classic_csv(results: Sequence[ClassicResult]) -> str:
    """One line per detector in the paper's units; empty: not available."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CLASSIC_CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    for result in results:
        line = {"detector": result.detector, "method": result.method,
                "images": "" if result.images is None else result.images,
                "seconds_per_image": "" if result.seconds_per_image is None else result.seconds_per_image}
        for metric in METRICS:
            line[metric] = getattr(result.ours, metric)
            line[f"paper_{metric}"] = getattr(result.paper, metric) if result.paper else ""
        writer.writerow(line)
    return buffer.getvalue()


def write_classic_results(run_dir: Path) -> Path:
    """Write results.md and results.csv of a `classic` run directory; returns the path of results.md."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    results, notes = load_classic(run_dir)
    write_text_atomic(run_dir / "results.csv", classic_csv(results))
    write_text_atomic(run_dir / "results.md", classic_markdown(run_dir, results, notes))
    return run_dir / "results.md"


# ---- command line ------------------------------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        prog="reproduce.py", description="Run the paper's Table 1, 2, 3 or Fig. 6 (make reproduce-*), or evaluate "
        "its training-free methods on SIRST (classic), and write the results beside the paper's.")
    parser.add_argument("target", choices=[*TABLES, "fig6", "classic"])
    parser.add_argument("--scale", choices=("smoke", "paper"), default="smoke",
                        help="conf/scale/<scale>.yaml: smoke (CPU, minutes) or paper (GPU, 42,000 steps)")
    parser.add_argument("--seeds", type=int, default=1, help="run seeds 0..N-1 of every experiment")
    parser.add_argument("--out-dir", type=Path, default=Path("outputs/reproduce"),
                        help="runs go to OUT_DIR/<target>/<scale>/<timestamp>/")
    parser.add_argument("--collect", type=Path, metavar="SWEEP_DIR",
                        help="run nothing: rewrite the results of an existing table directory")
    parser.add_argument("--data-root", help="classic: the SIRST folder (default: data=sirst's, "
                        "${paths.data_dir}/SIRST)")
    parser.add_argument("--detectors", help="classic: comma-separated detector names (default: all registered)")
    parser.add_argument("overrides", nargs="*", help="more irstd-train overrides for every job, e.g. "
                        "trainer.max_steps=20000 or hydra/launcher=submitit_slurm (classic: irstd-eval overrides)")
    args = parser.parse_intermixed_args(argv)
    if args.seeds < 1:
        parser.error(f"--seeds must be at least 1, got {args.seeds}")
    if args.target == "classic":
        return _main_classic(parser, args)
    if args.collect is not None:
        if args.target not in TABLES:
            parser.error("--collect rewrites a table (table1, table2, table3); for fig6 use scripts/collect_sweep.py")
        print_results(write_results(args.collect, args.target, args.scale))
        return 0
    if args.target == "fig6":
        parent, status = run_fig6(args.scale, args.seeds, args.out_dir, args.overrides)
        print_results(parent / "sweep.md")
        return status
    sweep_dir, status = run_table(args.target, args.scale, args.seeds, args.out_dir, args.overrides)
    print_results(sweep_dir / "results.md")
    if status:
        print(f"the multirun failed (exit status {status}); the table shows the jobs that finished", file=sys.stderr)
    return status


def _main_classic(parser, args) -> int:
    """`classic`: no training, so --scale and --seeds do not apply."""
    from irstd.classic import available_detectors

    if args.collect is not None:
        print_results(write_classic_results(args.collect))
        return 0
    detectors = args.detectors.split(",") if args.detectors else available_detectors()
    unknown = sorted(set(detectors) - set(available_detectors()))
    if unknown:
        parser.error(f"unknown detector(s) {', '.join(unknown)}; registered: {', '.join(available_detectors())}")
    run_dir, status = run_classic(detectors, args.data_root, args.out_dir, args.overrides)
    print_results(run_dir / "results.md")
    if status:
        print(f"an evaluation failed (exit status {status}); the table shows the detectors that finished",
              file=sys.stderr)
    return status


def print_results(path: Path) -> None:
    print(path.read_text())
    beside = [other.name for other in sorted(path.parent.glob(f"{path.stem}.*")) if other != path]
    print(f"results: {path}" + (f" (and {', '.join(beside)} beside it)" if beside else ""))
