"""The paper's reference numbers, read from the data files in `irstd/results/paper/` (like mmsegmentation's metafiles).

`paper.yaml` names the paper, its test sets and the claim the tables are read against; `table1.yaml`,
`table2.yaml` and `table3.yaml` hold each table's rows (the experiment that reproduces a row, its method and
supervision as printed, the fully supervised experiment its ratios refer to, and the printed IoU x100, Pd x100 and
Fa x1e6 per test set or `average`); `classic.yaml` the training-free methods' SIRST figures (Table 2 and the
supplement's Table III). The figures are typed in as printed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from importlib import resources
from typing import Any

import yaml

AVERAGE = "average"
METRICS = ("iou", "pd", "fa")
# metrics.json holds fractions; the paper prints IoU and Pd x100 and Fa x1e6 (nIoU, which it does not print, x100)
UNITS = {"iou": 100.0, "niou": 100.0, "pd": 100.0, "fa": 1e6}
HEADERS = {"iou": "IoU x100", "niou": "nIoU x100", "pd": "Pd x100", "fa": "Fa x1e6"}
TABLE_NAMES = ("table1", "table2", "table3")


class PaperDataError(ValueError):
    """A paper data file is missing or malformed."""


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


@dataclasses.dataclass(frozen=True)
class ClassicReference:
    """A training-free method's printed SIRST figures."""

    detector: str  # its name in irstd.classic
    method: str
    source: str  # where the paper prints it
    paper: Figures


@dataclasses.dataclass(frozen=True)
class SingleReference:
    """A published IoU of a network trained and tested on NUAA-SIRST alone (`single.yaml`)."""

    backbone: str
    method: str
    supervision: str
    iou: float  # x100, as printed
    source: str


@dataclasses.dataclass(frozen=True)
class SingleGoal:
    """What the best point-supervised row must reach against full supervision of its backbone (`single.yaml`)."""

    iou_ratio: float  # at least this fraction of full supervision's IoU
    pd_ratio: float  # at least this fraction of its Pd
    fa_ratio: float  # at most this multiple of its Fa


def in_paper_units(metrics: Mapping[str, Any], prefix: str = "") -> Figures | None:
    """Our `<prefix>iou`, `<prefix>pd` and `<prefix>fa` (fractions, as in metrics.json) in the paper's units; None
    when one of them is missing."""
    if not all(prefix + metric in metrics for metric in METRICS):
        return None
    return Figures(*(float(metrics[prefix + metric]) * UNITS[metric] for metric in METRICS))


def load_data(name: str) -> dict[str, Any]:
    """The mapping in `irstd/results/paper/<name>.yaml`."""
    path = resources.files("irstd.results") / "paper" / f"{name}.yaml"
    if not path.is_file():
        raise PaperDataError(f"no paper data file {name}.yaml in irstd/results/paper/ (is the package installed with "
                             "its package data?)")
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(data, Mapping):
        raise PaperDataError(f"irstd/results/paper/{name}.yaml must hold a mapping, got {type(data).__name__}")
    return dict(data)


def _figures(value: Any, where: str) -> Figures:
    if not isinstance(value, Mapping) or set(value) != set(METRICS):
        raise PaperDataError(f"{where} must map exactly {', '.join(METRICS)} to numbers, got {value!r}")
    try:
        return Figures(*(float(value[metric]) for metric in METRICS))
    except (TypeError, ValueError) as error:
        raise PaperDataError(f"{where}: {error}") from None


def _field(entry: Any, key: str, where: str) -> Any:
    if not isinstance(entry, Mapping):
        raise PaperDataError(f"{where} must be a mapping, got {entry!r}")
    if key not in entry:
        raise PaperDataError(f"{where} has no `{key}`")
    return entry[key]


def _row(entry: Any, where: str) -> Row:
    paper = _field(entry, "paper", where) or {}
    if not isinstance(paper, Mapping):
        raise PaperDataError(f"{where}.paper must map test sets (or `{AVERAGE}`) to figures, got {paper!r}")
    return Row(str(_field(entry, "experiment", where)), str(_field(entry, "method", where)),
               str(_field(entry, "supervision", where)), str(_field(entry, "full", where)),
               {str(name): _figures(value, f"{where}.paper.{name}") for name, value in paper.items()})


def load_table(name: str) -> list[Row]:
    """The rows of `paper/<name>.yaml` in the order they are printed."""
    rows = load_data(name).get("rows")
    if not isinstance(rows, list) or not rows:
        raise PaperDataError(f"irstd/results/paper/{name}.yaml needs a non-empty list `rows`")
    return [_row(entry, f"{name}.yaml rows[{index}]") for index, entry in enumerate(rows)]


def load_tables() -> dict[str, list[Row]]:
    return {name: load_table(name) for name in TABLE_NAMES}


def load_classic_references() -> dict[str, ClassicReference]:
    """detector name -> its printed SIRST figures, in the paper's order."""
    entries = load_data("classic").get("detectors") or []
    references = {}
    for index, entry in enumerate(entries):
        where = f"classic.yaml detectors[{index}]"
        references[str(_field(entry, "detector", where))] = ClassicReference(
            str(entry["detector"]), str(_field(entry, "method", where)), str(_field(entry, "source", where)),
            _figures(_field(entry, "paper", where), f"{where}.paper"))
    return references


def _number(entry: Any, key: str, where: str) -> float:
    value = _field(entry, key, where)
    try:
        return float(value)
    except (TypeError, ValueError):
        raise PaperDataError(f"{where}.{key} must be a number, got {value!r}") from None


def _single_reference(entry: Any, where: str) -> SingleReference:
    backbone, method, supervision = (str(_field(entry, key, where)) for key in ("backbone", "method", "supervision"))
    return SingleReference(backbone, method, supervision, _number(entry, "iou", where),
                           str(_field(entry, "source", where)))


def load_single() -> tuple[SingleGoal, list[SingleReference], str]:
    """`single.yaml`: the goal, the published figures in their order, and the note on their protocols."""
    data = load_data("single")
    goal = _field(data, "goal", "single.yaml")
    references = _field(data, "references", "single.yaml") or []
    return (SingleGoal(*(_number(goal, key, "single.yaml goal") for key in ("iou_ratio", "pd_ratio", "fa_ratio"))),
            [_single_reference(entry, f"single.yaml references[{index}]") for index, entry in enumerate(references)],
            str(_field(data, "protocol", "single.yaml")).strip())


_PAPER = load_data("paper")
PAPER: str = str(_PAPER["citation"])
PAPER_TEST_SETS: tuple[str, ...] = tuple(_PAPER["test_sets"])
# the paper's claim (Sec. 5.3, Conclusion): with LESPS, over 70 % of the fully supervised IoU and 95 % of its Pd
CLAIMED_IOU_RATIO: float = float(_PAPER["claims"]["iou_ratio"])
CLAIMED_PD_RATIO: float = float(_PAPER["claims"]["pd_ratio"])
TABLES: dict[str, list[Row]] = load_tables()
CLASSIC: dict[str, ClassicReference] = load_classic_references()
# detector -> the method's name as printed, and -> its printed SIRST figures
CLASSIC_METHODS: dict[str, str] = {name: reference.method for name, reference in CLASSIC.items()}
CLASSIC_PAPER: dict[str, Figures] = {name: reference.paper for name, reference in CLASSIC.items()}
SINGLE_GOAL, SINGLE_REFERENCES, SINGLE_PROTOCOL = load_single()
