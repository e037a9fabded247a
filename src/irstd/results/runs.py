"""Read what a run left in its directory: the one reader that sweeps and reproductions share.

A run directory is a Hydra job directory (`outputs/train/<date>/<time>/`, or one numbered job `0/`, `1/`, ... of a
multirun). It holds `.hydra/overrides.yaml` (the command line's overrides), `config_resolved.yaml` (the composed
config, interpolations resolved; `.hydra/config.yaml`, unresolved, stands in when the job died before writing it),
`metrics.json` (the final metrics, written when the job finished), `train.log` (Hydra's job log, every line timed)
and, with LESPS, `lesps_rounds.csv` (one line per round of label evolution). A multirun directory holds the
numbered job directories; the basic sweeper also writes `multirun.yaml` beside them, the Optuna sweeper
`optimization_results.yaml`.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from irstd.utils.run_layout import METRICS_FILE, RESOLVED_CONFIG_FILE, ROUNDS_FILE

OVERRIDES_FILE = Path(".hydra") / "overrides.yaml"
# the resolved config first; the unresolved one Hydra writes at the start stands in when a job died before
CONFIG_FILES = (RESOLVED_CONFIG_FILE, ".hydra/config.yaml")
TEST_METRICS = ("test/iou", "test/niou", "test/pd", "test/fa")
FINISHED, FAILED, MISSING_METRICS = "finished", "failed", "missing metrics"
# label_update=none: the labels stay as round 0 made them
FIXED_LABELS_TARGET = "irstd.lesps.callback.FixedLabelsCallback"
# Hydra's job log of irstd-train (`<hydra.job.name>.log`); its lines start `[2026-11-30 18:05:09,499][logger]...`
JOB_LOG = "train.log"
LOG_TIME = re.compile(r"^\[(\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2},\d{3})\]", re.MULTILINE)


class SweepError(ValueError):
    """The directory is not a multirun and holds none."""


@dataclass(frozen=True)
class Run:
    """What one run (or one job of a multirun) left in its directory."""

    path: Path
    overrides: dict[str, str]  # key (without +, ++ or ~) -> value as written on the command line
    config: DictConfig | None  # None: neither config file is there
    metrics: dict[str, Any] | None  # None: no metrics.json (the run crashed, was killed or is still running)
    rounds: list[dict[str, str]]  # the lines of lesps_rounds.csv; empty: no round happened
    wall_seconds: float = math.nan  # from the first to the last line of train.log; NaN: no log to tell

    @property
    def num(self) -> int | None:
        """The job number of a multirun's job (its directory's name), else None."""
        return int(self.path.name) if self.path.name.isdigit() else None

    def config_value(self, key: str) -> Any:
        """The config's value of a key when it is a scalar, else None."""
        if self.config is None:
            return None
        resolved = OmegaConf.select(self.config, key, default=None, throw_on_resolution_failure=False)
        return resolved if isinstance(resolved, bool | int | float | str) else None

    def value(self, key: str) -> Any:
        """The run's value of a key: the config's when it is a scalar (`label_update.k=1/3` comes back as written to
        the config), else the override's text (a group choice such as `model=acm`), else None."""
        resolved = self.config_value(key)
        return resolved if resolved is not None else self.overrides.get(key)

    @property
    def updates_labels(self) -> bool:
        """Whether the run's labels were to be updated during training: a `label_update` other than `none`; in
        configs written before the label-learning groups, a `lesps` node with a `_target_`."""
        if self.config is None:
            return False
        update = self.config.get("label_update")
        if isinstance(update, Mapping) and update.get("_target_"):
            return update.get("_target_") != FIXED_LABELS_TARGET
        lesps = self.config.get("lesps")
        return isinstance(lesps, Mapping) and "_target_" in lesps

    def label_quality(self) -> tuple[float, float]:
        """PA and IoU of the final labels: the last LESPS round's (NaN when no round happened)."""
        if not self.rounds:
            return math.nan, math.nan
        last = self.rounds[-1]
        return to_float(last.get("label_pa")), to_float(last.get("label_iou"))

    def status(self) -> tuple[str, str]:
        """(finished | failed | missing metrics, a note saying why)."""
        if self.metrics is None:
            return FAILED, f"no {METRICS_FILE}: the job crashed, was killed or is still running"
        notes = []
        if self.updates_labels and not self.rounds:
            notes.append("LESPS never evolved the labels")
        elif self.rounds and math.isnan(self.label_quality()[1]):
            notes.append("no label PA/IoU (no masks)")
        if self.config is not None and self.config.get("test") and TEST_METRICS[0] not in self.metrics:
            notes.append("no test metrics")
        return (MISSING_METRICS if notes else FINISHED), "; ".join(notes)


def read_overrides(path: Path) -> dict[str, str]:
    """`.hydra/overrides.yaml` of a run directory as key -> value ({} when there is none). `+key=v`, `++key=v` and
    `~key` count as `key`; a deletion without a value maps to ''."""
    overrides_file = Path(path) / OVERRIDES_FILE
    if not overrides_file.is_file():
        return {}
    overrides = {}
    for override in OmegaConf.load(overrides_file) or []:
        key, _, value = str(override).partition("=")
        overrides[key.lstrip("+~")] = value
    return overrides


def read_config(path: Path) -> DictConfig | None:
    for name in CONFIG_FILES:
        if (Path(path) / name).is_file():
            return OmegaConf.load(Path(path) / name)
    return None


def read_metrics(path: Path) -> dict[str, Any] | None:
    metrics_file = Path(path) / METRICS_FILE
    return json.loads(metrics_file.read_text()) if metrics_file.is_file() else None


def read_rounds(path: Path) -> list[dict[str, str]]:
    rounds_file = Path(path) / ROUNDS_FILE
    return list(csv.DictReader(io.StringIO(rounds_file.read_text()))) if rounds_file.is_file() else []


def read_wall_seconds(path: Path) -> float:
    """Seconds from the first to the last timed line of a run's train.log: from the data's set-up (the first line a
    run logs, a fraction of a second after its start) to its last line, after the test metrics. NaN when there is
    no log or it has fewer than two timed lines."""
    log_file = Path(path) / JOB_LOG
    times = LOG_TIME.findall(log_file.read_text(errors="replace")) if log_file.is_file() else []
    if len(times) < 2:
        return math.nan
    first, last = (datetime.strptime(text, "%Y-%m-%d %H:%M:%S,%f") for text in (times[0], times[-1]))
    return (last - first).total_seconds()


def read_run(path: Path) -> Run:
    """Everything a run directory holds; any part that is missing is empty (see `Run`)."""
    path = Path(path)
    return Run(path, read_overrides(path), read_config(path), read_metrics(path), read_rounds(path),
               read_wall_seconds(path))


def job_dirs(multirun: Path) -> list[Path]:
    """The numbered job directories of a multirun, in job order (`2/` before `10/`)."""
    return sorted((child for child in Path(multirun).iterdir() if child.is_dir() and child.name.isdigit()),
                  key=lambda child: int(child.name))


def read_jobs(multirun: Path) -> list[Run]:
    return [read_run(path) for path in job_dirs(multirun)]


def is_multirun(directory: Path) -> bool:
    # the Optuna sweeper writes no multirun.yaml, so its jobs' .hydra/ directories are what mark it
    directory = Path(directory)
    return (directory / "multirun.yaml").is_file() or any(
        (child / OVERRIDES_FILE).is_file() for child in job_dirs(directory))


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
    if is_multirun(directory):
        return [directory]
    return [found for child in sorted(directory.iterdir()) if child.is_dir() and not child.name.startswith(".")
            for found in _find_multiruns(child)]


def to_float(value: Any) -> float:
    """`value` as a float; NaN when it is none (an empty CSV cell, None, text)."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan
