"""Gather the jobs of Hydra multiruns (`irstd-train -m ...`) into one table and a plot like the paper's Fig. 6.

A multirun directory holds one numbered run directory per job (`0/`, `1/`, ...), each with `.hydra/overrides.yaml`,
`config_resolved.yaml`, `metrics.json` and `lesps_rounds.csv`. The basic sweeper also writes `multirun.yaml` beside
them, the Optuna sweeper `optimization_results.yaml`. A directory holding several multiruns (say the four Fig. 6 grids
under one parent) is gathered into one table.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from irstd.fsutil import atomic_write, write_text_atomic

LESPS_SETTINGS = ("Tloss", "Tb", "k", "f")
TEST_METRICS = ("test/iou", "test/niou", "test/pd", "test/fa")
FINISHED, FAILED, MISSING_METRICS = "finished", "failed", "missing metrics"


class SweepError(ValueError):
    """The directory is not a multirun and holds none."""


@dataclass
class Job:
    """What one job of a multirun left in its run directory."""

    num: int
    path: Path
    overrides: dict[str, str]
    config: DictConfig | None
    metrics: dict[str, float] | None
    rounds: list[dict[str, str]]

    def value(self, key: str) -> Any:
        """The job's value of an override key: the resolved config's when it is a scalar (`lesps.k=1/3` comes back as
        written to the config), else the override's text (a group choice such as `model=acm`)."""
        if self.config is not None:
            resolved = OmegaConf.select(self.config, key, default=None)
            if isinstance(resolved, bool | int | float | str):
                return resolved
        return self.overrides.get(key)

    @property
    def lesps_on(self) -> bool:
        lesps = self.config.get("lesps") if self.config is not None else None
        return isinstance(lesps, Mapping) and "_target_" in lesps

    def label_quality(self) -> tuple[float, float]:
        """PA and IoU of the final labels: the last LESPS round's (NaN when no round happened)."""
        if not self.rounds:
            return math.nan, math.nan
        last = self.rounds[-1]
        return _float(last.get("label_pa")), _float(last.get("label_iou"))

    def status(self) -> tuple[str, str]:
        """(finished | failed | missing metrics, a note saying why)."""
        if self.metrics is None:
            return FAILED, "no metrics.json: the job crashed, was killed or is still running"
        notes = []
        if self.lesps_on and not self.rounds:
            notes.append("LESPS never evolved the labels")
        elif self.rounds and math.isnan(self.label_quality()[1]):
            notes.append("no label PA/IoU (no masks)")
        if self.config is not None and self.config.get("test") and TEST_METRICS[0] not in self.metrics:
            notes.append("no test metrics")
        return (MISSING_METRICS if notes else FINISHED), "; ".join(notes)


@dataclass
class Sweep:
    """One multirun: its jobs and the override keys it varies."""

    name: str
    path: Path
    jobs: list[Job]
    swept: list[str] = field(default_factory=list)


def find_multiruns(root: Path) -> list[Path]:
    """`root` itself when it is a multirun, else every multirun below it; an error naming `root` when there is none."""
    root = Path(root)
    if not root.is_dir():
        raise SweepError(f"{root} is not a directory")
    found = _find_multiruns(root)
    if not found:
        raise SweepError(f"{root} is not a Hydra multirun directory: neither it nor any directory below it holds "
                         "multirun.yaml or numbered job directories with .hydra/overrides.yaml")
    return found


def _find_multiruns(directory: Path) -> list[Path]:
    if _is_multirun(directory):
        return [directory]
    return [found for child in sorted(directory.iterdir()) if child.is_dir() and not child.name.startswith(".")
            for found in _find_multiruns(child)]


def _is_multirun(directory: Path) -> bool:
    # the Optuna sweeper writes no multirun.yaml, so its jobs' .hydra/ directories are what mark it
    return (directory / "multirun.yaml").is_file() or any(
        child.name.isdigit() and (child / ".hydra" / "overrides.yaml").is_file() for child in directory.iterdir())


def load_sweeps(root: Path) -> list[Sweep]:
    root = Path(root)
    sweeps = []
    for path in find_multiruns(root):
        job_dirs = [child for child in path.iterdir() if child.is_dir() and child.name.isdigit()]
        jobs = [read_job(child) for child in sorted(job_dirs, key=lambda child: int(child.name))]
        name = root.resolve().name if path == root else str(path.relative_to(root))
        sweeps.append(Sweep(name, path, jobs, _swept_keys(path, jobs)))
    return sweeps


def read_job(path: Path) -> Job:
    overrides_file = path / ".hydra" / "overrides.yaml"
    overrides = {}
    if overrides_file.is_file():
        for override in OmegaConf.load(overrides_file) or []:
            key, _, value = str(override).partition("=")
            overrides[key.lstrip("+~")] = value
    config = None
    # .hydra/config.yaml (unresolved) stands in when the job died before writing its resolved config
    for name in ("config_resolved.yaml", ".hydra/config.yaml"):
        if (path / name).is_file():
            config = OmegaConf.load(path / name)
            break
    metrics = json.loads((path / "metrics.json").read_text()) if (path / "metrics.json").is_file() else None
    rounds_file = path / "lesps_rounds.csv"
    rounds = list(csv.DictReader(io.StringIO(rounds_file.read_text()))) if rounds_file.is_file() else []
    return Job(int(path.name), path, overrides, config, metrics, rounds)


def _swept_keys(path: Path, jobs: list[Job]) -> list[str]:
    """The keys of the sweeper's `params` (from multirun.yaml, or a job's .hydra/hydra.yaml under Optuna), then every
    other override key whose value differs between jobs (a sweep given on the command line: `lesps.f=2,5`)."""
    declared: list[str] = []
    hydra_files = [path / "multirun.yaml"] + [job.path / ".hydra" / "hydra.yaml" for job in jobs[:1]]
    for hydra_file in hydra_files:
        if hydra_file.is_file():
            params = OmegaConf.select(OmegaConf.load(hydra_file), "hydra.sweeper.params", default=None)
            declared = [str(key) for key in params] if params else []
            break
    keys = list(dict.fromkeys(key for job in jobs for key in job.overrides))
    varying = [key for key in keys if len({job.overrides.get(key) for job in jobs}) > 1]
    return list(dict.fromkeys(declared + varying))


def sweep_rows(sweeps: list[Sweep]) -> list[dict[str, Any]]:
    """One row per job: sweep, job, status, the swept keys, the LESPS settings, rounds, final label PA/IoU, test
    metrics and a note. A swept key other than the four LESPS settings gets a column of its own."""
    lesps_keys = {f"lesps.{name}" for name in LESPS_SETTINGS}
    extra_keys = list(dict.fromkeys(key for sweep in sweeps for key in sweep.swept if key not in lesps_keys))
    rows = []
    for sweep in sweeps:
        for job in sweep.jobs:
            status, note = job.status()
            label_pa, label_iou = job.label_quality()
            metrics = job.metrics or {}
            rows.append({
                "sweep": sweep.name, "job": job.num, "status": status, "swept": " ".join(sweep.swept),
                **{name: job.value(f"lesps.{name}") if job.lesps_on else None for name in LESPS_SETTINGS},
                **{key: job.value(key) if key in sweep.swept else None for key in extra_keys},
                "rounds": len(job.rounds), "label_pa": label_pa, "label_iou": label_iou,
                **{name: metrics.get(name) for name in TEST_METRICS},
                "note": note,
            })
    return rows


def _float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def rows_to_csv(rows: list[dict[str, Any]]) -> str:
    """CSV text; a missing value (no round, no metric) is an empty cell."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]) if rows else ["sweep", "job", "status"])
    writer.writeheader()
    writer.writerows({key: "" if _is_missing(value) else value for key, value in row.items()} for row in rows)
    return buffer.getvalue()


def rows_to_markdown(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "no jobs\n"

    def cell(value: Any) -> str:
        if _is_missing(value):
            return ""
        text = f"{value:.4g}" if isinstance(value, float) else str(value)
        return text.replace("|", "\\|")

    header = list(rows[0])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(row[key]) for key in header) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def plot_sweeps(sweeps: list[Sweep], path: Path) -> bool:
    """For each swept key one panel of the final labels' PA and IoU against its value (the paper's Fig. 6).

    A sweep of one key is drawn as a curve; a sweep of several at once (Optuna) as points only, since its neighbours
    differ in the other keys too. Returns False (and writes nothing) when no sweep varies anything."""
    panels: dict[str, list[Sweep]] = {}
    for sweep in sweeps:
        for key in sweep.swept if sweep.jobs else []:
            panels.setdefault(key, []).append(sweep)
    if not panels:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = min(len(panels), 4)
    rows = math.ceil(len(panels) / columns)
    # one y scale for all panels, so the settings that matter most stand out
    figure, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.4 * rows), squeeze=False, sharey=True)
    for axis, (key, key_sweeps) in zip(axes.flat, panels.items(), strict=False):
        _plot_panel(axis, key, key_sweeps)
    finite = [value for sweep in sweeps for job in sweep.jobs for value in job.label_quality() if math.isfinite(value)]
    axes[0, 0].set_ylim(0, 1.1 * max(finite) if finite and max(finite) > 0 else 1)
    for axis in list(axes.flat)[len(panels):]:
        axis.set_visible(False)
    for axis in axes[:, 0]:
        axis.set_ylabel("final labels vs masks: PA / IoU")
    figure.tight_layout()
    with atomic_write(path) as handle:
        figure.savefig(handle, format="png", dpi=120)
    plt.close(figure)
    return True


def _plot_panel(axis, key: str, sweeps: list[Sweep]) -> None:
    values = [job.value(key) for sweep in sweeps for job in sweep.jobs]
    numeric = all(not math.isnan(_float(value)) for value in values)
    # a non-numeric key (a group choice such as model=acm) gets one evenly spaced position per value
    categories = sorted({str(value) for value in values})

    def position(value: Any) -> float:
        return _float(value) if numeric else float(categories.index(str(value)))

    for sweep in sweeps:
        points = sorted((position(job.value(key)), *job.label_quality()) for job in sweep.jobs
                        if job.status()[0] != FAILED)
        style = "-" if len(sweep.swept) == 1 else ""
        suffix = f" ({sweep.name})" if len(sweeps) > 1 else ""
        for index, (name, marker) in enumerate((("label PA", "s"), ("label IoU", "o"))):
            axis.plot([p[0] for p in points], [p[1 + index] for p in points], style + marker, label=name + suffix)
    positions = sorted({position(value) for value in values})
    low, high = positions[0], positions[-1]
    if numeric and low > 0 and high >= 10 * low:
        axis.set_xscale("log")
        axis.set_xlim(low / 1.3, high * 1.3)
    else:
        pad = 0.08 * (high - low) or 0.5
        axis.set_xlim(low - pad, high + pad)
    if len(positions) <= 10:
        axis.set_xticks(positions, [f"{p:.3g}" for p in positions] if numeric else categories)
        axis.set_xticks([], minor=True)
    axis.set_xlabel(key)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)


def collect_sweep(root: Path, out: Path | None = None) -> dict[str, Any]:
    """Write `sweep.csv`, `sweep.md` and `sweep.png` for the multirun(s) at `root` into `out` (default: `root`)."""
    root = Path(root)
    out = Path(out) if out is not None else root
    sweeps = load_sweeps(root)
    rows = sweep_rows(sweeps)
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "sweep.csv", rows_to_csv(rows))
    markdown = rows_to_markdown(rows)
    write_text_atomic(out / "sweep.md", markdown)
    plotted = plot_sweeps(sweeps, out / "sweep.png")
    if not plotted:
        # a plot left by an earlier collection would no longer match the table
        (out / "sweep.png").unlink(missing_ok=True)
    return {"sweeps": sweeps, "rows": rows, "markdown": markdown, "csv": out / "sweep.csv", "md": out / "sweep.md",
            "png": out / "sweep.png" if plotted else None}
