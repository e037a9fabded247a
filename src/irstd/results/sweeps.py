"""Gather the jobs of Hydra multiruns (`irstd-train -m ...`) into one table and a plot like the paper's Fig. 6.

The jobs are read by `irstd.results.runs`. A directory holding several multiruns (say the four Fig. 6 grids under
one parent) is gathered into one table: one row per job with the swept values, the LESPS settings, the final labels'
PA and IoU, the number of rounds, the test metrics and a status (finished, failed, missing metrics).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from irstd.results.runs import (
    FAILED,
    FINISHED,
    MISSING_METRICS,
    TEST_METRICS,
    Run,
    SweepError,
    find_multiruns,
    read_jobs,
    to_float,
)
from irstd.results.tables import csv_table, markdown_table, write_tables
from irstd.utils.files import atomic_write

__all__ = ["FAILED", "FINISHED", "LESPS_SETTINGS", "MISSING_METRICS", "Sweep", "SweepError", "collect_sweep",
           "load_sweeps", "plot_sweeps", "rows_to_csv", "rows_to_markdown", "sweep_rows"]

# where each LESPS setting lives: its label-learning group (`start.Tloss`, `label_update.Tb`), or the one `lesps`
# node of configs written before those groups
LESPS_SETTINGS = {"Tloss": ("start.Tloss", "lesps.Tloss"), "Tb": ("label_update.Tb", "lesps.Tb"),
                  "k": ("label_update.k", "lesps.k"), "f": ("label_update.f", "lesps.f")}
EMPTY_FIELDS = ("sweep", "job", "status")


@dataclass
class Sweep:
    """One multirun: its jobs and the override keys it varies."""

    name: str
    path: Path
    jobs: list[Run]
    swept: list[str] = field(default_factory=list)


def load_sweeps(root: Path) -> list[Sweep]:
    root = Path(root)
    sweeps = []
    for path in find_multiruns(root):
        jobs = read_jobs(path)
        name = root.resolve().name if path == root else str(path.relative_to(root))
        sweeps.append(Sweep(name, path, jobs, _swept_keys(path, jobs)))
    return sweeps


def _declared_keys(path: Path, jobs: list[Run]) -> list[str]:
    """The keys of the sweeper's `params`: from multirun.yaml, or a job's .hydra/hydra.yaml under Optuna."""
    hydra_files = [path / "multirun.yaml"] + [job.path / ".hydra" / "hydra.yaml" for job in jobs[:1]]
    for hydra_file in hydra_files:
        if hydra_file.is_file():
            params = OmegaConf.select(OmegaConf.load(hydra_file), "hydra.sweeper.params", default=None)
            return [str(key) for key in params] if params else []
    return []


def _swept_keys(path: Path, jobs: list[Run]) -> list[str]:
    """The sweeper's declared keys, then every other override key whose value differs between jobs (a sweep given
    on the command line: `label_update.f=2,5`)."""
    keys = list(dict.fromkeys(key for job in jobs for key in job.overrides))
    varying = [key for key in keys if len({job.overrides.get(key) for job in jobs}) > 1]
    return list(dict.fromkeys(_declared_keys(path, jobs) + varying))


def lesps_setting(job: Run, name: str) -> Any:
    """A LESPS setting of a job: the config's value where the config holds it, else the override's text."""
    keys = LESPS_SETTINGS[name]
    values = [job.config_value(key) for key in keys] + [job.overrides.get(key) for key in keys]
    return next((value for value in values if value is not None), None)


def _job_row(sweep: Sweep, job: Run, extra_keys: list[str]) -> dict[str, Any]:
    status, note = job.status()
    label_pa, label_iou = job.label_quality()
    metrics = job.metrics or {}
    return {
        "sweep": sweep.name, "job": job.num, "status": status, "swept": " ".join(sweep.swept),
        **{name: lesps_setting(job, name) if job.updates_labels else None for name in LESPS_SETTINGS},
        **{key: job.value(key) if key in sweep.swept else None for key in extra_keys},
        "rounds": len(job.rounds), "label_pa": label_pa, "label_iou": label_iou,
        **{name: metrics.get(name) for name in TEST_METRICS},
        "note": note,
    }


def sweep_rows(sweeps: list[Sweep]) -> list[dict[str, Any]]:
    """One row per job: sweep, job, status, the swept keys, the LESPS settings, rounds, final label PA/IoU, test
    metrics and a note. A swept key other than the four LESPS settings gets a column of its own."""
    lesps_keys = {key for keys in LESPS_SETTINGS.values() for key in keys}
    extra_keys = list(dict.fromkeys(key for sweep in sweeps for key in sweep.swept if key not in lesps_keys))
    return [_job_row(sweep, job, extra_keys) for sweep in sweeps for job in sweep.jobs]


def rows_to_csv(rows: list[dict[str, Any]]) -> str:
    """CSV text; a missing value (no round, no metric) is an empty cell."""
    return csv_table(list(rows[0]) if rows else EMPTY_FIELDS, rows)


def _cell(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def rows_to_markdown(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "no jobs\n"
    header = list(rows[0])
    return "\n".join(markdown_table(header, ([row[key] for key in header] for row in rows), _cell)) + "\n"


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
    numeric = all(not math.isnan(to_float(value)) for value in values)
    # a non-numeric key (a group choice such as model=acm) gets one evenly spaced position per value
    categories = sorted({str(value) for value in values})

    def position(value: Any) -> float:
        return to_float(value) if numeric else float(categories.index(str(value)))

    for sweep in sweeps:
        points = sorted((position(job.value(key)), *job.label_quality()) for job in sweep.jobs
                        if job.status()[0] != FAILED)
        _plot_points(axis, points, sweep, f" ({sweep.name})" if len(sweeps) > 1 else "")
    _set_x_axis(axis, key, sorted({position(value) for value in values}), numeric, categories)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)


def _plot_points(axis, points: list[tuple[float, float, float]], sweep: Sweep, suffix: str) -> None:
    """(position, label PA, label IoU) points of one sweep: a curve when it varies one key, else points only."""
    style = "-" if len(sweep.swept) == 1 else ""
    for index, (name, marker) in enumerate((("label PA", "s"), ("label IoU", "o"))):
        axis.plot([p[0] for p in points], [p[1 + index] for p in points], style + marker, label=name + suffix)


def _set_x_axis(axis, key: str, positions: list[float], numeric: bool, categories: list[str]) -> None:
    """Log scale for a numeric key spanning a decade or more of positive values; ticks at the values when few."""
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


def collect_sweep(root: Path, out: Path | None = None) -> dict[str, Any]:
    """Write `sweep.csv`, `sweep.md` and `sweep.png` for the multirun(s) at `root` into `out` (default: `root`)."""
    root = Path(root)
    out = Path(out) if out is not None else root
    sweeps = load_sweeps(root)
    rows = sweep_rows(sweeps)
    markdown = rows_to_markdown(rows)
    md_path, csv_path = write_tables(out, "sweep", markdown, rows_to_csv(rows))
    plotted = plot_sweeps(sweeps, out / "sweep.png")
    if not plotted:
        # a plot left by an earlier collection would no longer match the table
        (out / "sweep.png").unlink(missing_ok=True)
    return {"sweeps": sweeps, "rows": rows, "markdown": markdown, "csv": csv_path, "md": md_path,
            "png": out / "sweep.png" if plotted else None}
