"""Point clicks imported from an annotation tool: ``ROOT/clicks.json``.

Coordinates are continuous pixel coordinates ``(x, y)``: ``(0, 0)`` is the top-left
corner of the top-left pixel, x grows to the right and y downwards, so pixel
``(row i, col j)`` covers ``[j, j+1) x [i, i+1)`` and its centre is ``(j + 0.5, i + 0.5)``.
A click maps to the pixel ``(floor(y), floor(x))``; integer pixel indices given as
``x = col, y = row`` therefore land on that pixel. A click exactly on the right or
bottom edge of the image (``x == W`` or ``y == H``) belongs to the last pixel.

The file::

    {"format": "irstd-clicks", "version": 1, "convention": "...",
     "provenance": {...},                        # where the clicks came from
     "images": {"frame_001.png": [[x, y], ...],  # name relative to ROOT/images, with extension
                "frame_002.png": []}}            # a frame without targets (all background)
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np

from irstd.data.sources import DatasetError
from irstd.utils.files import write_text_atomic

__all__ = ["CLICKS_FILE", "CONVENTION", "FORMAT", "VERSION", "clicks_path", "clicks_to_points", "read_clicks",
           "write_clicks"]

CLICKS_FILE = "clicks.json"
FORMAT = "irstd-clicks"
VERSION = 1
CONVENTION = ("continuous pixel coordinates (x, y): (0, 0) is the top-left corner of the top-left pixel; "
              "pixel (row i, col j) covers [j, j+1) x [i, i+1), its centre is (j + 0.5, i + 0.5)")


def clicks_path(root: str | os.PathLike) -> Path:
    return Path(root) / CLICKS_FILE


def _number(value: object) -> float | None:
    # bool is an int subclass, but `true` is no coordinate
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _parse_points(path: Path, name: str, points: object) -> list[tuple[float, float]]:
    if not isinstance(points, list):
        raise DatasetError(f"{path}: image {name!r}: expected a list of [x, y] pairs, got {type(points).__name__}")
    parsed = []
    for index, point in enumerate(points):
        xy = [_number(v) for v in point] if isinstance(point, list) and len(point) == 2 else [None]
        if None in xy:
            raise DatasetError(f"{path}: image {name!r}, point {index}: expected [x, y] with two finite numbers, "
                               f"got {json.dumps(point)}")
        parsed.append((xy[0], xy[1]))
    return parsed


def read_clicks(root: str | os.PathLike) -> dict[str, list[tuple[float, float]]]:
    """The clicks of every image listed in ``ROOT/clicks.json``: ``{name: [(x, y), ...]}``.

    Raises DatasetError naming the file when it is missing, not JSON, or not of this format.
    """
    path = clicks_path(root)
    if not path.is_file():
        raise DatasetError(f"{path} not found; import clicks with `irstd-data import {root} --from FORMAT FILE`")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DatasetError(f"{path}: cannot read clicks: {err}") from err
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise DatasetError(f"{path}: not an {FORMAT} file (expected an object with \"format\": \"{FORMAT}\"); "
                           "write it with `irstd-data import`")
    if data.get("version") != VERSION:
        raise DatasetError(f"{path}: unsupported version {data.get('version')!r}, this irstd reads version {VERSION}")
    images = data.get("images")
    if not isinstance(images, dict):
        raise DatasetError(f"{path}: \"images\" must be an object mapping image names to lists of [x, y]")
    return {name: _parse_points(path, name, points) for name, points in images.items()}


def write_clicks(root: str | os.PathLike, clicks: dict[str, list[tuple[float, float]]], provenance: dict) -> Path:
    """Write ``ROOT/clicks.json`` atomically (replacing any previous one); returns its path."""
    bad = [name for name, points in clicks.items()
           for x, y in points if not (math.isfinite(x) and math.isfinite(y))]
    if bad:
        raise ValueError(f"non-finite click coordinates for image(s) {sorted(set(bad))}")
    header = {"format": FORMAT, "version": VERSION, "convention": CONVENTION, "provenance": provenance}
    # one line per image keeps large files readable and diffable
    images = ",\n".join(f"  {json.dumps(name)}: {json.dumps([[float(x), float(y)] for x, y in clicks[name]])}"
                        for name in sorted(clicks))
    text = json.dumps(header, indent=1)[:-2] + f',\n "images": {{\n{images}\n }}\n}}\n' if images else (
        json.dumps({**header, "images": {}}, indent=1) + "\n")
    path = clicks_path(root)
    write_text_atomic(path, text)
    return path


def clicks_to_points(xy, image_hw: tuple[int, int]) -> np.ndarray:
    """``(N, 2)`` int64 ``(row, col)`` pixels of ``(x, y)`` clicks on an image of size ``(H, W)``.

    Raises ValueError listing the clicks outside ``[0, W] x [0, H]``.
    """
    height, width = image_hw
    xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    inside = (xy[:, 0] >= 0) & (xy[:, 0] <= width) & (xy[:, 1] >= 0) & (xy[:, 1] <= height)
    if not inside.all():
        outside = [(float(x), float(y)) for x, y in xy[~inside]]
        raise ValueError(f"click(s) (x, y) {outside} lie outside the image's [0, {width}] x [0, {height}]")
    # the edge x == W (y == H) belongs to the last column (row)
    rows = np.minimum(np.floor(xy[:, 1]), height - 1)
    cols = np.minimum(np.floor(xy[:, 0]), width - 1)
    return np.stack([rows, cols], axis=1).astype(np.int64)
