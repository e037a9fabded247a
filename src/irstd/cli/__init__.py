"""Command-line entry points (Hydra for train/eval, argparse for dataset tools)."""

from __future__ import annotations

import os
from pathlib import Path

from irstd.cli import resolvers  # noqa: F401  (registers the ${irstd.*} resolvers before any config is composed)


def config_dir() -> str:
    """The repository's conf/ (editable install) unless IRSTD_CONFIG_DIR points elsewhere."""
    override = os.environ.get("IRSTD_CONFIG_DIR")
    if override:
        return str(Path(override).resolve())
    return str(Path(__file__).resolve().parents[3] / "conf")
