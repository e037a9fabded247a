"""The one table writer of the results layer: Markdown and CSV text from rows, written atomically.

A missing value (None, NaN) is an empty cell in both; Markdown cells escape `|`, so a value holding one does not
split its row.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from irstd.utils.files import write_text_atomic


def is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[Any]],
                   cell: Callable[[Any], str] = str) -> list[str]:
    """The lines of a Markdown table: header, separator, one line per row; `cell` formats a present value."""
    def text(value: Any) -> str:
        return "" if is_missing(value) else cell(value).replace("|", "\\|")

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(text(value) for value in row) + " |" for row in rows]
    return lines


def csv_table(fields: Sequence[str], rows: Iterable[Mapping[str, Any]]) -> str:
    """CSV text with a header line and `\\n` line ends; a missing value is an empty cell."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(fields), lineterminator="\n")
    writer.writeheader()
    writer.writerows({key: "" if is_missing(value) else value for key, value in row.items()} for row in rows)
    return buffer.getvalue()


def write_tables(directory: Path, stem: str, markdown: str, csv_text: str) -> tuple[Path, Path]:
    """Write `<stem>.csv` then `<stem>.md` into `directory`, each by an atomic rename; returns (md, csv)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    write_text_atomic(directory / f"{stem}.csv", csv_text)
    write_text_atomic(directory / f"{stem}.md", markdown)
    return directory / f"{stem}.md", directory / f"{stem}.csv"


def number(value: float | None, digits: int = 2) -> str:
    """A figure with `digits` decimals; '' when missing."""
    return "" if is_missing(value) else f"{value:.{digits}f}"


def percent(value: float | None) -> str:
    """A fraction as a percentage with one decimal ('0.738' -> '73.8 %'); '' when missing."""
    return "" if is_missing(value) else f"{100 * value:.1f} %"


def notes_section(notes: Sequence[str], title: str = "Missing results") -> list[str]:
    """A Markdown section listing `notes` (no lines when there are none)."""
    return ["", f"## {title}", ""] + [f"- {note}" for note in notes] if notes else []
