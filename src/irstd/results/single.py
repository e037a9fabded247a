"""One small dataset, SIRST alone (`make reproduce-single`): point-supervision methods side by side with full
supervision of the same backbone, in one sweep.

The sweep is one Hydra multirun of `irstd-train` over `conf/experiment/single/*.yaml` (the rows) x `model=` (the
backbones) x seeds 0..N-1 at one `conf/scale/*.yaml` (cpu, gpu or smoke), into
`outputs/reproduce/single/<scale>/<timestamp>/`. Its jobs become `results.md` and `results.csv` there: per backbone
and row, IoU, nIoU, Pd and Fa over seeds, their ratios to full supervision of the backbone, the IoU of the final
training labels against the masks and the minutes a run took; then, per backbone, whether its best point-supervised
row meets the goal of `paper/single.yaml`, and other papers' NUAA-SIRST-alone figures as context.
"""

from __future__ import annotations

import dataclasses
import math
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import OmegaConf

from irstd.config import config_root
from irstd.results.reference import (
    HEADERS,
    SINGLE_GOAL,
    SINGLE_PROTOCOL,
    SINGLE_REFERENCES,
    UNITS,
    SingleGoal,
)
from irstd.results.reproduce import Stat, job_environment, new_sweep_dir, seed_list
from irstd.results.runs import Run, read_jobs
from irstd.results.tables import csv_table, markdown_table, notes_section, number, percent, write_tables

SINGLE = "single"
# the reference row of every backbone: conf/experiment/single/full.yaml
FULL_ROW = "full"
METRICS = ("iou", "niou", "pd", "fa")
RATIO_METRICS = ("iou", "pd", "fa")
# the backbones of a scale when --backbones is not given
# gpu: the paper's three and the networks the field trains today (docs/training.md's table), U-Net left out
DEFAULT_BACKBONES = {"cpu": ("acm", "alcnet"),
                     "gpu": ("acm", "alcnet", "dnanet", "uiunet", "istdunet", "mshnet", "sctransnet", "msdanet",
                             "alclnet", "mlclnet", "rdian", "ggl"),
                     "smoke": ("acm", "alcnet"), "demo": ("acm",)}
# scales on the built-in synthetic data rather than SIRST: other papers' SIRST figures are no context for them
SYNTHETIC_SCALES = ("smoke", "demo")
BACKBONE_NAMES = {"acm": "ACM", "alcnet": "ALCNet", "dnanet": "DNA-Net", "unet": "U-Net", "uiunet": "UIU-Net",
                  "istdunet": "ISTDU-Net", "mshnet": "MSHNet", "sctransnet": "SCTransNet", "msdanet": "MSDA-Net",
                  "alclnet": "ALCL-Net", "mlclnet": "MLCL-Net", "rdian": "RDIAN", "ggl": "GGL-Net"}
CSV_FIELDS = ("scale", "backbone", "experiment", "seeds",
              *(f"{metric}_{part}" for metric in METRICS for part in ("mean", "std")),
              *(f"{metric}_ratio" for metric in RATIO_METRICS), "label_iou", "minutes")


# ---- what to run -------------------------------------------------------------------------------------------------
def available_rows() -> list[str]:
    """The rows the packaged config ships, `conf/experiment/single/*.yaml`: full supervision first."""
    return sorted((path.stem for path in (config_root() / "experiment" / SINGLE).glob("*.yaml")), key=row_order)


def row_order(row: str) -> tuple[bool, str]:
    """Full supervision first, then by name."""
    return row != FULL_ROW, row


def available_backbones() -> list[str]:
    return sorted(path.stem for path in (config_root() / "model").glob("*.yaml") if path.stem != "default")


def choose(requested: str | None, default: Sequence[str], known: Sequence[str], what: str) -> list[str]:
    """A comma-separated choice (None: `default`), checked against `known`; an error names the unknown ones."""
    chosen = [name.strip() for name in requested.split(",") if name.strip()] if requested else list(default)
    unknown = [name for name in chosen if name not in known]
    if unknown or not chosen:
        raise ValueError(f"unknown {what} {', '.join(map(repr, unknown)) or '(none given)'}; known: {', '.join(known)}")
    return chosen


def single_command(scale: str, seeds: int, sweep_dir: Path, backbones: Sequence[str], rows: Sequence[str],
                   extra: Sequence[str] = ()) -> list[str]:
    """The `irstd-train` multirun: seeds outermost, so every row of seed 0 finishes before seed 1 starts."""
    return [sys.executable, "-m", "irstd.cli.train", "--multirun", f"seed={seed_list(seeds)}",
            f"model={','.join(backbones)}", f"experiment={','.join(f'{SINGLE}/{row}' for row in rows)}",
            f"scale={scale}", f"hydra.sweep.dir={sweep_dir}", *extra]


def run_single(scale: str, seeds: int, out_dir: Path, backbones: Sequence[str], rows: Sequence[str],
               extra: Sequence[str] = ()) -> tuple[Path, int]:
    """Run the sweep (its jobs one after the other, Hydra's basic launcher), then write its results, also when a
    job failed. Returns the sweep directory and the multirun's exit status."""
    sweep_dir = new_sweep_dir(out_dir, SINGLE, scale)
    command = single_command(scale, seeds, sweep_dir, backbones, rows, extra)
    status = subprocess.run(command, env=job_environment(scale), check=False).returncode
    write_single_results(sweep_dir, scale)
    return sweep_dir, status


# ---- gathering ---------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class SingleJob:
    """A job of the sweep: its backbone, row and seed, and what it measured in the table's units."""

    path: Path
    backbone: str  # the `model=` choice
    row: str  # the experiment without `single/`
    seed: str
    figures: dict[str, float] | None  # metric -> x100 (Fa x1e6); None: no complete test metrics
    label_iou: float  # the final training labels against the masks, x100; NaN: not logged
    wall_seconds: float  # NaN: unknown

    @classmethod
    def of(cls, run: Run) -> SingleJob | None:
        """None when the run is not a job of this sweep (no `experiment=single/...` override)."""
        experiment = run.overrides.get("experiment", "")
        if not experiment.startswith(f"{SINGLE}/"):
            return None
        backbone = run.overrides.get("model") or run.config_value("model.backbone.name") or "?"
        metrics = run.metrics or {}
        figures = ({metric: float(metrics[f"test/{metric}"]) * UNITS[metric] for metric in METRICS}
                   if all(f"test/{metric}" in metrics for metric in METRICS) else None)
        label_iou = float(metrics.get("labels/label_iou", math.nan)) * 100
        return cls(run.path, backbone, experiment.removeprefix(f"{SINGLE}/"), run.overrides.get("seed", ""),
                   figures, label_iou, run.wall_seconds)


def single_jobs(runs: Sequence[Run]) -> list[SingleJob]:
    jobs = [SingleJob.of(run) for run in runs]
    return [job for job in jobs if job is not None]


def requested_jobs(sweep_dir: Path) -> list[tuple[str, str, str]] | None:
    """The (backbone, row, seed) jobs the sweep's command line asked for, from the `multirun.yaml` Hydra writes as
    the sweep starts; None when there is none or it cannot tell (a glob sweep, no `model=`)."""
    path = Path(sweep_dir) / "multirun.yaml"
    if not path.is_file():
        return None
    task = OmegaConf.select(OmegaConf.load(path), "hydra.overrides.task", default=None) or []
    try:
        values = {override.key_or_group: list(override.sweep_string_iterator()) if override.is_sweep_override()
                  else [override.get_value_element_as_str()]
                  for override in OverridesParser.create().parse_overrides([str(item) for item in task])}
    except HydraException:  # a sweep Hydra cannot list without the config (a glob) or at all (an interval)
        return None
    if "model" not in values or "experiment" not in values:
        return None
    rows = [name.removeprefix(f"{SINGLE}/") for name in values["experiment"] if name.startswith(f"{SINGLE}/")]
    return [(backbone, row, seed) for backbone in values["model"] for row in rows
            for seed in values.get("seed", [""])]


@dataclasses.dataclass(frozen=True)
class SingleResult:
    """One row of the table: a backbone and an experiment over its finished seeds."""

    backbone: str
    row: str
    seeds: tuple[str, ...]
    ours: dict[str, Stat]
    label_iou: float | None  # mean x100; None for full supervision (100 by construction) or when not logged
    minutes: float | None  # mean wall-clock minutes of a run
    ratios: dict[str, float | None] = dataclasses.field(default_factory=dict)  # metric -> ours / full's


def _mean(values: Sequence[float]) -> float | None:
    present = [value for value in values if not math.isnan(value)]
    return sum(present) / len(present) if present else None


def _result(backbone: str, row: str, done: Sequence[SingleJob]) -> SingleResult:
    ours = {metric: Stat.of([job.figures[metric] for job in done]) for metric in METRICS}
    label_iou = None if row == FULL_ROW else _mean([job.label_iou for job in done])
    seconds = _mean([job.wall_seconds for job in done])
    return SingleResult(backbone, row, tuple(job.seed for job in done), ours, label_iou,
                        None if seconds is None else seconds / 60)


def _ratio(value: float, reference: float) -> float | None:
    return value / reference if reference > 0 else None


def _with_ratios(result: SingleResult, full: SingleResult | None) -> SingleResult:
    if result.row == FULL_ROW or full is None:
        return result
    ratios = {metric: _ratio(result.ours[metric].mean, full.ours[metric].mean) for metric in RATIO_METRICS}
    return dataclasses.replace(result, ratios=ratios)


def _missing_note(backbone: str, row: str, mine: Sequence[SingleJob], requested: Sequence[str]) -> str | None:
    """Why a row lacks some (or all) of its seeds: jobs without test metrics, and seeds that never started."""
    parts = []
    failed = [job for job in mine if job.figures is None]
    if failed:
        parts.append(f"{len(failed)} job(s) left no test metrics (failed, or still running): "
                     + ", ".join(str(job.path) for job in failed))
    never = [seed for seed in requested if seed not in {job.seed for job in mine}]
    if never:
        parts.append(f"seed(s) {', '.join(never)} not started (the sweep stopped before, or has not got there)")
    return f"{BACKBONE_NAMES.get(backbone, backbone)} {row}: " + "; ".join(parts) if parts else None


def summarize_single(jobs: Sequence[SingleJob], requested: Sequence[tuple[str, str, str]] | None = None,
                     ) -> tuple[list[SingleResult], list[str]]:
    """The table's rows, grouped by backbone (in the sweep's order) with full supervision first, and notes on rows
    without (all) their results."""
    wanted: dict[tuple[str, str], list[str]] = {}  # (backbone, row) -> seeds asked for
    for backbone, row, seed in requested or []:
        wanted.setdefault((backbone, row), []).append(seed)
    for job in jobs:
        wanted.setdefault((job.backbone, job.row), [])
    backbones = list(dict.fromkeys(backbone for backbone, _ in wanted))
    results, notes = [], []
    for backbone in backbones:
        rows = sorted({row for key, row in wanted if key == backbone}, key=row_order)
        for row in rows:
            mine = [job for job in jobs if (job.backbone, job.row) == (backbone, row)]
            done = [job for job in mine if job.figures is not None]
            note = _missing_note(backbone, row, mine, wanted[backbone, row])
            notes += [note] if note else []
            results += [_result(backbone, row, done)] if done else []
    fulls = {result.backbone: result for result in results if result.row == FULL_ROW}
    return [_with_ratios(result, fulls.get(result.backbone)) for result in results], notes


# ---- the goal ----------------------------------------------------------------------------------------------------
def goal_heading(goal: SingleGoal = SINGLE_GOAL) -> str:
    return (f"at least {goal.iou_ratio * 100:.0f} % of full supervision's IoU, {goal.pd_ratio * 100:.0f} % of its Pd, "
            f"and at most {goal.fa_ratio:g}x its Fa")


def _check(name: str, ratio: float | None, shown: str, bound: str, passes: bool) -> tuple[str, bool]:
    if ratio is None:
        return f"{name} n/a (full supervision's is 0)", False
    return f"{name} {shown} ({bound}: {'pass' if passes else 'fail'})", passes


def goal_line(backbone: str, results: Sequence[SingleResult], goal: SingleGoal = SINGLE_GOAL) -> str:
    """Whether the backbone's best point-supervised row (by IoU) meets the goal, with the numbers.

    The rows with as many seeds as full supervision compete first: a row run once is not judged above a mean over
    seeds by the luck of its one seed. With no such row, every row does.
    """
    name = BACKBONE_NAMES.get(backbone, backbone)
    mine = [result for result in results if result.backbone == backbone]
    points = [result for result in mine if result.row != FULL_ROW]
    if not points or len(points) == len(mine):
        missing = "no point-supervised row" if not points else "full supervision has not"
        return f"- {name}: no verdict: {missing} finished"
    full_seeds = max(len(result.seeds) for result in mine if result.row == FULL_ROW)
    candidates = [result for result in points if len(result.seeds) >= full_seeds] or points
    best = max(candidates, key=lambda result: result.ours["iou"].mean)
    iou, pd, fa = (best.ratios.get(metric) for metric in RATIO_METRICS)
    checks = [
        _check("IoU", iou, f"{percent(iou)} of full", f"≥ {goal.iou_ratio * 100:.0f} %",
               iou is not None and iou >= goal.iou_ratio),
        _check("Pd", pd, f"{percent(pd)} of full", f"≥ {goal.pd_ratio * 100:.0f} %",
               pd is not None and pd >= goal.pd_ratio),
        _check("Fa", fa, f"{number(fa)}x full", f"≤ {goal.fa_ratio:g}x", fa is not None and fa <= goal.fa_ratio),
    ]
    verdict = "pass" if all(passes for _, passes in checks) else "fail"
    return (f"- {name}: best point-supervised row `{best.row}` (IoU {best.ours['iou'].mean:.2f}): "
            + ", ".join(text for text, _ in checks) + f": **{verdict}**")


# ---- writing -----------------------------------------------------------------------------------------------------
def _intro(scale: str, sweep_dir: Path, results: Sequence[SingleResult]) -> list[str]:
    seeds = sorted({seed for result in results for seed in result.seeds}, key=lambda seed: (len(seed), seed))
    data = "The built-in synthetic data" if scale in SYNTHETIC_SCALES else "SIRST alone"
    lines = [f"# {data}: point supervision against full supervision, scale `{scale}`", "",
             f"Jobs: `{sweep_dir}`; seeds {', '.join(seeds) or 'n/a'}. Each run tests its last weights on the test "
             "split once. Mean ± standard deviation over seeds (no ± with one seed); IoU, nIoU and Pd x100, "
             "Fa x1e6. `/ full`: the ratio of the means to full supervision of the same backbone. Label IoU: the "
             "final training labels against the masks (the last `labels/label_iou`), x100; empty for full "
             "supervision, which trains on the masks themselves (100 by construction). Minutes: wall-clock per run "
             "(mean over seeds), from the first to the last line of its train.log.", ""]
    if scale == "smoke":
        lines += ["**Smoke scale**: a few epochs on small synthetic images on a CPU. These numbers check the "
                  "mechanics (every row runs, the table is written), not the methods' accuracy.", ""]
    return lines


def _rows_table(results: Sequence[SingleResult]) -> list[str]:
    header = ["backbone", "experiment", "seeds", *(HEADERS[metric] for metric in METRICS),
              "IoU / full", "Pd / full", "Fa / full", "label IoU x100", "minutes"]
    rows = [[BACKBONE_NAMES.get(result.backbone, result.backbone), result.row, str(len(result.seeds)),
             *(result.ours[metric].text() for metric in METRICS),
             percent(result.ratios.get("iou")), percent(result.ratios.get("pd")),
             f"{result.ratios['fa']:.2f}x" if result.ratios.get("fa") is not None else "",
             number(result.label_iou), number(result.minutes)]
            for result in results]
    return markdown_table(header, rows)


def _goal_section(results: Sequence[SingleResult]) -> list[str]:
    backbones = list(dict.fromkeys(result.backbone for result in results))
    return ["", f"## Goal: {goal_heading()}", "",
            "The best point-supervised row of each backbone by IoU, against full supervision of that backbone in "
            "this sweep; rows run with as many seeds as full supervision compete first (a row run once is not "
            "judged on one seed's luck against a mean).", "", *(goal_line(backbone, results) for backbone in backbones)]


def _published_section() -> list[str]:
    rows = [[reference.backbone, reference.method, reference.supervision, f"{reference.iou:.1f}", reference.source]
            for reference in SINGLE_REFERENCES]
    return ["", "## Published figures on NUAA-SIRST alone", "",
            *markdown_table(["backbone", "method", "supervision", "IoU x100", "source"], rows), "", SINGLE_PROTOCOL]


def single_markdown(scale: str, sweep_dir: Path, results: Sequence[SingleResult], notes: Sequence[str]) -> str:
    lines = _intro(scale, sweep_dir, results) + _rows_table(results)
    if results:
        lines += _goal_section(results)
    if scale not in SYNTHETIC_SCALES:
        lines += _published_section()
    lines += notes_section(notes)
    return "\n".join(lines) + "\n"


def _csv_line(scale: str, result: SingleResult) -> dict[str, object]:
    line: dict[str, object] = {"scale": scale, "backbone": result.backbone, "experiment": result.row,
                               "seeds": " ".join(result.seeds)}
    for metric in METRICS:
        line[f"{metric}_mean"], line[f"{metric}_std"] = result.ours[metric].mean, result.ours[metric].std
    line.update({f"{metric}_ratio": result.ratios.get(metric) for metric in RATIO_METRICS})
    line.update(label_iou=result.label_iou, minutes=result.minutes)
    return line


def single_csv(scale: str, results: Sequence[SingleResult]) -> str:
    """One line per backbone and experiment in the table's units (ratios as fractions); empty: not available."""
    return csv_table(CSV_FIELDS, (_csv_line(scale, result) for result in results))


def write_single_results(sweep_dir: Path, scale: str | None = None) -> Path:
    """Write results.md and results.csv into the sweep directory; returns the path of results.md. `scale`: None
    takes it from the jobs' `scale=` overrides."""
    sweep_dir = Path(sweep_dir)
    runs = read_jobs(sweep_dir) if sweep_dir.is_dir() else []
    scale = scale or ",".join(sorted({run.overrides["scale"] for run in runs if "scale" in run.overrides})) or "unknown"
    results, notes = summarize_single(single_jobs(runs), requested_jobs(sweep_dir))
    markdown = single_markdown(scale, sweep_dir, results, notes)
    return write_tables(sweep_dir, "results", markdown, single_csv(scale, results))[0]
