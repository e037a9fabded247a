"""Table 2's training-free methods on SIRST (`make reproduce-classic`): evaluate them, then set ours beside the paper's.

Nothing is trained: each detector (`irstd.classic`) runs as `irstd-eval detector=<detector> data=sirst` into
`outputs/reproduce/classic/<timestamp>/<detector>/`, and their SIRST figures and seconds per image are gathered into
`results.md` and `results.csv` there, beside Table 2's SIRST columns (`irstd/results/paper/classic.yaml`).
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from irstd.results.reference import CLASSIC_METHODS, CLASSIC_PAPER, HEADERS, METRICS, PAPER, Figures, in_paper_units
from irstd.results.reproduce import timestamp
from irstd.results.runs import read_metrics
from irstd.results.tables import csv_table, markdown_table, notes_section, number, write_tables

CLASSIC_CSV_FIELDS = ("detector", "method", "images", *METRICS, *(f"paper_{metric}" for metric in METRICS),
                      "seconds_per_image")


# ---- running -----------------------------------------------------------------------------------------------------
def detector_names(spec: str | None) -> list[str]:
    """The detectors a comma-separated `spec` names (None or '': all registered); an error naming the unknown."""
    from irstd.classic import available_detectors

    known = available_detectors()
    detectors = spec.split(",") if spec else known
    unknown = sorted(set(detectors) - set(known))
    if unknown:
        raise ValueError(f"unknown detector(s) {', '.join(unknown)}; registered: {', '.join(known)}")
    return detectors


def classic_command(detector: str, run_dir: Path, data_root: str | None, extra: Sequence[str] = ()) -> list[str]:
    """`irstd-eval` of one training-free detector on the SIRST test split (data.root: data=sirst's default)."""
    root = [f"data.root={data_root}"] if data_root else []
    return [sys.executable, "-m", "irstd.cli.eval", f"detector={detector}", "data=sirst", *root,
            f"hydra.run.dir={run_dir}", *extra]


def run_classic(detectors: Sequence[str], data_root: str | None, out_dir: Path,
                extra: Sequence[str] = ()) -> tuple[Path, int]:
    """Evaluate each detector (one failing does not stop the others), then write the table of those that finished.

    Returns the directory and the last non-zero exit status (0: all finished)."""
    run_dir = Path(out_dir) / "classic" / timestamp()
    status = 0
    for detector in detectors:
        command = classic_command(detector, run_dir / detector, data_root, extra)
        status = subprocess.run(command, check=False).returncode or status
    write_classic_results(run_dir)
    return run_dir, status


# ---- gathering ---------------------------------------------------------------------------------------------------
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
    detector directories without (complete) metrics."""
    order = {name: index for index, name in enumerate(CLASSIC_METHODS)}
    children = sorted((child for child in Path(run_dir).iterdir() if child.is_dir()),
                      key=lambda child: (order.get(child.name, len(order)), child.name))
    results, notes = [], []
    for child in children:
        metrics = read_metrics(child)
        ours = in_paper_units(metrics) if metrics is not None else None
        if metrics is None:
            notes.append(f"{child.name}: no metrics.json in {child} (the evaluation failed or did not finish)")
        elif ours is None:
            notes.append(f"{child.name}: {child / 'metrics.json'} lacks one of {', '.join(METRICS)}")
        else:
            results.append(ClassicResult(child.name, ours, metrics.get("seconds_per_image"), metrics.get("images")))
    return results, notes


# ---- writing -----------------------------------------------------------------------------------------------------
def _cells(result: ClassicResult) -> list[str]:
    cells = [result.method, f"`detector={result.detector}`", "" if result.images is None else str(result.images)]
    for metric in METRICS:
        cells += [number(getattr(result.ours, metric)), number(getattr(result.paper, metric) if result.paper else None)]
    return cells + [number(result.seconds_per_image, 3)]


def classic_markdown(run_dir: Path, results: Sequence[ClassicResult], notes: Sequence[str]) -> str:
    lines = ["# Table 2 of Ying et al. (CVPR 2023): the training-free methods on SIRST", "",
             f"Runs: `{run_dir}`, one `irstd-eval detector=<detector> data=sirst` each, on the SIRST test split with "
             "each method's own threshold rule. IoU and Pd x100, Fa x1e6. Paper: " + PAPER + ", its Table 2, "
             "SIRST columns (Max-Median, MSLCM and WSLCM: the supplement's Table III). Seconds per image: the "
             "detector alone, on this machine.", ""]
    header = ["method", "detector", "images"]
    for metric in METRICS:
        header += [HEADERS[metric], "paper"]
    header.append("s / image")
    lines += markdown_table(header, [_cells(result) for result in results])
    lines += notes_section(notes)
    return "\n".join(lines) + "\n"


def _csv_line(result: ClassicResult) -> dict[str, object]:
    line: dict[str, object] = {"detector": result.detector, "method": result.method, "images": result.images,
                               "seconds_per_image": result.seconds_per_image}
    for metric in METRICS:
        line[metric] = getattr(result.ours, metric)
        line[f"paper_{metric}"] = getattr(result.paper, metric) if result.paper else None
    return line


def classic_csv(results: Sequence[ClassicResult]) -> str:
    """One line per detector in the paper's units; empty: not available."""
    return csv_table(CLASSIC_CSV_FIELDS, (_csv_line(result) for result in results))


def write_classic_results(run_dir: Path) -> Path:
    """Write results.md and results.csv of a `classic` run directory; returns the path of results.md."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    results, notes = load_classic(run_dir)
    return write_tables(run_dir, "results", classic_markdown(run_dir, results, notes), classic_csv(results))[0]
