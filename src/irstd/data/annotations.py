"""Point annotations in the export files of annotation tools, as clicks in irstd's pixel coordinates.

Coordinates follow `irstd.data.clicks`: continuous pixel coordinates (x, y), (0, 0) the top-left corner of
the top-left pixel, pixel (row i, col j) covering [j, j+1) x [i, i+1). Each object of the file gives one click:

- ``csv``: rows ``image,x,y`` in pixels (comma, tab or semicolon; decimal commas when the delimiter is not a
  comma), an optional header row naming the columns ``image``, ``x``, ``y`` and optionally ``label``; a row
  with empty x and y lists a frame without target.
- ``coco``: per annotation the mean of its visible keypoints (v > 0), else the centroid of its segmentation
  (polygons: area-weighted centroid, parts weighted by their area; RLE: the mean of the mask's pixel
  centres), else its bbox centre (x + w/2, y + h/2). Label: the category's name.
- ``cvat`` (CVAT for images 1.1 XML): every point of ``<points>``, the centre of ``<box>`` and ``<ellipse>``,
  the centroid of ``<polygon>``. Label: the shape's ``label``.
- ``labelstudio`` (Label Studio's JSON export): the latest not-cancelled annotation of each task; keypoints,
  rectangle centres (rotation applied), ellipse centres and polygon centroids, converted from percent of
  ``original_width`` / ``original_height`` to pixels. Label: the first of the region's labels.
- ``labelme`` (one LabelMe JSON file, or a folder of them): ``point`` shapes, the centre of ``rectangle``
  (mean of its two corners), the centre of ``circle`` (its first point), the centroid of ``polygon``.

Outlines of points. Within one image, a shape of the same label as a point or keypoint can be that target's
outline rather than a target of its own; it then gives no click (``AnnotationSet.outlines`` counts them):

1. a shape grouped with the point: the same non-empty ``group_id`` (CVAT, LabelMe), or in Label Studio the same
   region (results sharing an ``id``, or linked through ``parentID``). The point wins; every other shape of the
   group is an outline;
2. a polygon or box that contains the point (containing several, it is the outline of the one nearest its
   centroid);
3. a polygon whose convex hull contains a point that neither rule above gave an outline yet. A centroid always
   lies in the convex hull of its region, though outside a U- or C-shaped region itself. Each such point takes
   one polygon, the one whose centroid is nearest, so an outline drawn around another target (one with an
   outline of its own, or nearer to another polygon) stays a target.

That is how ``irstd-predict export=...`` writes each detection (a point and a polygon, grouped in CVAT), so
reviewed exports come back one click per target.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import re
import warnings
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from urllib.parse import parse_qs, unquote, urlparse

import numpy as np

__all__ = ["ANNOTATION_FORMATS", "AnnotationError", "AnnotationProblem", "AnnotationSet", "Click",
           "label_studio_image_name", "polygon_centroid", "read_annotations"]

ANNOTATION_FORMATS = ("csv", "coco", "cvat", "labelstudio", "labelme")
# sources of clicks that are the target's point itself; the others are the centre of a drawn shape
POINT_SOURCES = ("point", "keypoint")
# Label Studio prefixes an uploaded file's name with 8 hex digits and a hyphen
_LS_UPLOAD_PREFIX = re.compile(r"^[0-9a-f]{8}-")
_CSV_DELIMITERS = ("\t", ";", ",")
_CSV_SAMPLE_ROWS = 50


@dataclass(frozen=True)
class Click:
    """One target as the file gives it: ``image`` is the tool's file name (basename), x, y in pixels."""

    image: str
    x: float
    y: float
    annotation_id: str
    source: str
    label: str | None
    file: str = ""


class AnnotationError(ValueError):
    """A file that cannot be read as the format it was given as."""

    def __init__(self, file: str | os.PathLike, message: str, *, image: str | None = None,
                 annotation_id: str | None = None):
        self.file, self.image, self.annotation_id = str(file), image, annotation_id
        super().__init__(f"{file}: {_where(image, annotation_id)}{message}")


@dataclass(frozen=True)
class AnnotationProblem:
    """Something wrong with one annotation (or, with ``annotation_id`` None, an image or a file).

    ``whole_image``: the image's other clicks cannot be trusted without this one (its target would be
    trained as background), so skipping it leaves out the image.
    """

    file: str
    image: str | None
    annotation_id: str | None
    message: str
    whole_image: bool = True

    def __str__(self) -> str:
        return f"{self.file}: {_where(self.image, self.annotation_id)}{self.message}"


def _where(image: str | None, annotation_id: str | None) -> str:
    parts = ([f"image {image!r}"] if image is not None else []) + (
        [f"annotation {annotation_id}"] if annotation_id is not None else [])
    return ", ".join(parts) + ": " if parts else ""


@dataclass
class AnnotationSet:
    """What a file holds: clicks, the images it lists (with the (H, W) it states), the shape kinds converted
    (Counter of ``Click.source``), per-annotation problems, and outlines dropped."""

    clicks: list[Click] = field(default_factory=list)
    images_declared: dict[str, tuple[int, int] | None] = field(default_factory=dict)
    converted: Counter = field(default_factory=Counter)
    problems: list[AnnotationProblem] = field(default_factory=list)
    outlines: int = 0
    # the file that lists each image (a LabelMe folder holds many)
    declared_files: dict[str, str] = field(default_factory=dict)


class _BadRecord(ValueError):
    """One annotation that cannot be converted; becomes an AnnotationProblem."""


def _record_error(err: Exception) -> str:
    # our own messages say what is wrong; anything else is a field of an unexpected type or shape
    return str(err) if isinstance(err, _BadRecord) else f"malformed annotation ({type(err).__name__}: {err})"


@dataclass(frozen=True)
class _Region:
    """A click with the polygon(s) of its shape (None for points and shapes without one) and its group: shapes
    the file ties into one target share a group (None: not grouped)."""

    click: Click
    outline: list[np.ndarray] | None
    group: str | None


@dataclass
class _Collector:
    """Accumulates what the readers find; `finish` applies the outline and label rules."""

    file: str = ""
    regions: list[_Region] = field(default_factory=list)
    declared: dict[str, tuple[int, int] | None] = field(default_factory=dict)
    declared_files: dict[str, str] = field(default_factory=dict)
    problems: list[AnnotationProblem] = field(default_factory=list)

    def declare(self, image: str, hw: tuple[int, int] | None, annotation_id: str | None = None) -> None:
        known = self.declared.get(image)
        if hw is not None and known is not None and known != hw:
            self.problem(image, annotation_id, f"states the image size {hw[1]}x{hw[0]} (WxH) but the file stated "
                         f"{known[1]}x{known[0]} before")
        elif known is None:
            self.declared[image] = hw
            self.declared_files.setdefault(image, self.file)

    def add(self, image: str, xy: tuple[float, float], annotation_id: str, source: str, label: str | None,
            outline: list[np.ndarray] | None = None, group: str | None = None) -> None:
        click = Click(image, float(xy[0]), float(xy[1]), annotation_id, source, label, self.file)
        self.regions.append(_Region(click, outline, group))

    def problem(self, image: str | None, annotation_id: str | None, message: str, whole_image: bool = True) -> None:
        self.problems.append(AnnotationProblem(self.file, image, annotation_id, message, whole_image))

    def finish(self, labels: Collection[str] | None) -> AnnotationSet:
        result = AnnotationSet(images_declared=dict(self.declared), problems=list(self.problems),
                               declared_files=dict(self.declared_files))
        outlines = _outlines(self.regions)
        for index, region in enumerate(self.regions):
            click = region.click
            if index in outlines:
                result.outlines += 1
                continue
            if labels is not None and click.label not in labels:
                what = f"unknown label name {click.label!r}" if click.label is not None else "no label name"
                result.problems.append(AnnotationProblem(
                    click.file, click.image, click.annotation_id,
                    f"{what}; the import is restricted to the labels {sorted(labels)}", whole_image=False))
                continue
            result.clicks.append(click)
            result.converted[click.source] += 1
        return result


def read_annotations(fmt: str, path: str | os.PathLike, *, labels: Collection[str] | None = None) -> AnnotationSet:
    """Read the clicks of an annotation file (LabelMe: also a folder of files) in format ``fmt``.

    ``labels``: import only these label names; a click with any other label becomes a problem.
    Raises AnnotationError for a file that is not of the format, FileNotFoundError for a missing path.
    """
    if fmt not in ANNOTATION_FORMATS:
        raise ValueError(f"annotation format must be one of {ANNOTATION_FORMATS}, got {fmt!r}")
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"annotation file {path} not found")
    if path.is_dir() and fmt != "labelme":
        raise AnnotationError(path, f"is a folder; format {fmt} is read from one file (only labelme reads a folder)")
    out = _Collector(file=str(path))
    _READERS[fmt](path, out)
    return out.finish(None if labels is None else frozenset(labels))


# ---- outlines of points ------------------------------------------------------------------------------------


def _outlines(regions: list[_Region]) -> set[int]:
    """Indices of the regions that are the outline of a point (the rules of the module docstring), found
    per file, image and label."""
    targets: dict[tuple[str, str, str | None], list[int]] = {}
    for index, region in enumerate(regions):
        targets.setdefault((region.click.file, region.click.image, region.click.label), []).append(index)
    found: set[int] = set()
    for indices in targets.values():
        points = [i for i in indices if regions[i].click.source in POINT_SOURCES]
        if points:
            shapes = [i for i in indices if regions[i].click.source not in POINT_SOURCES]
            found |= _outlines_of_points(regions, points, shapes)
    return found


def _outlines_of_points(regions: list[_Region], points: list[int], shapes: list[int]) -> set[int]:
    """Which of `shapes` are outlines of `points` (indices into `regions`, one image and label)."""
    outlines: set[int] = set()
    taken: set[int] = set()  # points that have an outline

    def distance(shape: int, point: int) -> float:
        a, b = regions[shape].click, regions[point].click
        return math.hypot(a.x - b.x, a.y - b.y)

    # 1. grouped with a point: the point wins
    grouped: dict[str, list[int]] = {}
    for point in points:
        if regions[point].group is not None:
            grouped.setdefault(regions[point].group, []).append(point)
    for shape in shapes:
        if regions[shape].group in grouped:
            outlines.add(shape)
            taken.update(grouped[regions[shape].group])
    # 2. containing a point: an outline whatever else; it takes the point nearest its centroid
    polygons = [shape for shape in shapes if shape not in outlines and regions[shape].outline is not None]
    for shape in polygons:
        inside = [p for p in points if _contains(regions[shape].outline, regions[p].click.x, regions[p].click.y)]
        if inside:
            outlines.add(shape)
            taken.add(min(inside, key=lambda point: (distance(shape, point), point)))
    # 3. a convex hull around a point without an outline: one polygon per point, nearest centroids first
    hulls = {shape: [_convex_hull(np.concatenate(regions[shape].outline))] for shape in polygons
             if shape not in outlines}
    pairs = sorted((distance(shape, point), shape, point) for shape, hull in hulls.items() for point in points
                   if point not in taken and _contains(hull, regions[point].click.x, regions[point].click.y))
    for _, shape, point in pairs:
        if shape not in outlines and point not in taken:
            outlines.add(shape)
            taken.add(point)
    return outlines


# ---- geometry ---------------------------------------------------------------------------------------------


def polygon_centroid(vertices) -> tuple[float, float]:
    """Area-weighted centroid (x, y) of a polygon given as (K, 2) vertices (either orientation); the mean of
    the vertices when its area is zero (fewer than 3 vertices, or all on a line)."""
    return _parts_centroid([np.asarray(vertices, dtype=np.float64).reshape(-1, 2)])


def _parts_centroid(parts: list[np.ndarray]) -> tuple[float, float]:
    """Centroid of polygons taken together, each weighted by its area."""
    areas, centres = [], []
    for vertices in parts:
        x, y = vertices[:, 0], vertices[:, 1]
        x1, y1 = np.roll(x, -1), np.roll(y, -1)
        cross = x * y1 - x1 * y
        signed = cross.sum() / 2
        if len(vertices) >= 3 and abs(signed) > 1e-12:
            areas.append(abs(signed))
            centres.append((((x + x1) * cross).sum() / (6 * signed), ((y + y1) * cross).sum() / (6 * signed)))
    if not areas:
        every = np.concatenate(parts)
        return float(every[:, 0].mean()), float(every[:, 1].mean())
    weights = np.asarray(areas) / sum(areas)
    centre = weights @ np.asarray(centres)
    return float(centre[0]), float(centre[1])


def _contains(parts: list[np.ndarray], x: float, y: float, tolerance: float = 1e-9) -> bool:
    """(x, y) inside or on the boundary of any of the polygons (even-odd rule)."""
    for vertices in parts:
        a, b = vertices, np.roll(vertices, -1, axis=0)
        edge = b - a
        length2 = np.maximum((edge ** 2).sum(axis=1), 1e-300)
        t = np.clip(((x - a[:, 0]) * edge[:, 0] + (y - a[:, 1]) * edge[:, 1]) / length2, 0, 1)
        nearest = a + t[:, None] * edge
        if (((nearest[:, 0] - x) ** 2 + (nearest[:, 1] - y) ** 2) <= tolerance ** 2).any():
            return True
        crosses = (a[:, 1] > y) != (b[:, 1] > y)
        with np.errstate(divide="ignore", invalid="ignore"):
            x_at = a[:, 0] + (y - a[:, 1]) * edge[:, 0] / edge[:, 1]
        if np.count_nonzero(crosses & (x < x_at)) % 2:
            return True
    return False


def _convex_hull(vertices: np.ndarray) -> np.ndarray:
    """The convex hull of (K, 2) vertices (Andrew's monotone chain): its corners, counter-clockwise in (x, y);
    one or two points when the vertices are all one point or on one line."""
    unique = [tuple(v) for v in np.unique(vertices, axis=0)]  # sorted by x, then y
    if len(unique) < 3:
        return np.asarray(unique, dtype=np.float64)

    def chain(ordered: list[tuple[float, float]]) -> list[tuple[float, float]]:
        kept: list[tuple[float, float]] = []
        for x, y in ordered:
            # drop the last corner while it does not turn left (collinear corners go too)
            while len(kept) >= 2 and ((kept[-1][0] - kept[-2][0]) * (y - kept[-2][1])
                                      - (kept[-1][1] - kept[-2][1]) * (x - kept[-2][0])) <= 0:
                kept.pop()
            kept.append((x, y))
        return kept

    return np.asarray(chain(unique)[:-1] + chain(unique[::-1])[:-1], dtype=np.float64)


def _box(x0: float, y0: float, x1: float, y1: float) -> list[np.ndarray]:
    return [np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=np.float64)]


# ---- value parsing ----------------------------------------------------------------------------------------


def _number(value: object, what: str) -> float:
    """A JSON number or a numeric string (XML attributes); NaN and inf pass, the import reports them."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise _BadRecord(f"{what} must be a number, got {json.dumps(value)}")
    try:
        return float(value)
    except ValueError:
        raise _BadRecord(f"{what} must be a number, got {value!r}") from None


def _vertices(pairs: object, what: str) -> np.ndarray:
    """[[x, y], ...] as a (K, 2) float array."""
    if not isinstance(pairs, list) or not pairs or not all(isinstance(p, list) and len(p) == 2 for p in pairs):
        raise _BadRecord(f"{what} must be a non-empty list of [x, y] pairs, got {json.dumps(pairs)[:80]}")
    return np.array([[_number(x, what), _number(y, what)] for x, y in pairs], dtype=np.float64)


def _size(width: object, height: object) -> tuple[int, int] | None:
    """(H, W) when both are positive integers (numbers or numeric strings), else None."""
    try:
        hw = int(str(height)), int(str(width))
    except ValueError:
        return None
    return hw if min(hw) > 0 else None


def _basename(name: str) -> str:
    # tools running on Windows write backslashes
    return PurePosixPath(name.replace("\\", "/")).name


def _load_json(path: Path) -> object:
    try:
        return json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise AnnotationError(path, f"cannot read JSON: {err}") from err


# ---- CSV ----------------------------------------------------------------------------------------------------


def _csv_number(text: str, delimiter: str) -> float:
    text = text.strip()
    if delimiter != ",":
        text = text.replace(",", ".")
    return float(text)


def _numeric(text: str, delimiter: str) -> bool:
    try:
        _csv_number(text, delimiter)
    except ValueError:
        return False
    return True


def _header(first: list[str], delimiter: str) -> list[str] | None:
    """The column names when the first row is a header (x or y not a number), else None."""
    if _numeric(first[1], delimiter) or _numeric(first[2], delimiter):
        return None
    return [name.strip().lower() for name in first]


def _columns(path: Path, names: list[str] | None) -> dict[str, int]:
    if names is None:
        return {"image": 0, "x": 1, "y": 2}
    missing = [name for name in ("image", "x", "y") if name not in names]
    if missing:
        raise AnnotationError(path, f"the header row {names} lacks the column(s) {missing}; name the columns "
                              "image, x, y (and optionally label)")
    return {name: names.index(name) for name in ("image", "x", "y", "label") if name in names}


def _sniff(path: Path, text: str) -> tuple[str, list[str] | None]:
    """The delimiter and header: the first of tab, semicolon, comma under which the first rows split into
    the same number (>= 3) of fields and the first data row's x and y are numbers."""
    header_error = None
    for delimiter in _CSV_DELIMITERS:
        rows = [row for row in csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
                if any(field.strip() for field in row)][:_CSV_SAMPLE_ROWS]
        if not rows or len({len(row) for row in rows}) != 1 or len(rows[0]) < 3:
            continue
        names = _header(rows[0], delimiter)
        try:
            columns = _columns(path, names)
        except AnnotationError as err:
            header_error = header_error or err
            continue
        x, y = columns["x"], columns["y"]
        filled = [row for row in rows[names is not None:] if row[x].strip() or row[y].strip()]
        if not filled or (_numeric(filled[0][x], delimiter) and _numeric(filled[0][y], delimiter)):
            return delimiter, names
    raise header_error or AnnotationError(
        path, "not a CSV of image,x,y rows: no delimiter (tab, semicolon or comma) splits the first rows into "
        "the same number (at least 3) of fields with numeric x and y")


def _read_csv(path: Path, out: _Collector) -> None:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise AnnotationError(path, f"cannot read: {err}") from err
    delimiter, names = _sniff(path, text)
    columns = _columns(path, names)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    header_pending = names is not None
    for row in reader:
        if not any(field.strip() for field in row):
            continue
        if header_pending:
            header_pending = False
            continue
        _csv_row(row, f"line {reader.line_num}", columns, delimiter, out)


def _csv_row(row: list[str], line: str, columns: dict[str, int], delimiter: str, out: _Collector) -> None:
    if len(row) <= max(columns.values()):
        out.problem(None, line, f"has {len(row)} field(s), expected at least {max(columns.values()) + 1}")
        return
    image = row[columns["image"]].strip()
    if not image:
        out.problem(None, line, "has no image name")
        return
    out.declare(image, None)
    x, y = row[columns["x"]].strip(), row[columns["y"]].strip()
    if not x and not y:
        return  # a frame without target
    try:
        xy = _csv_number(x, delimiter), _csv_number(y, delimiter)
    except ValueError:
        out.problem(image, line, f"x and y must be numbers, got {x!r}, {y!r}")
        return
    label = row[columns["label"]].strip() if "label" in columns else None
    out.add(image, xy, line, "point", label or None)


# ---- COCO ---------------------------------------------------------------------------------------------------


def _read_coco(path: Path, out: _Collector) -> None:
    from pycocotools.coco import COCO

    try:
        # COCO() prints progress to stdout
        with contextlib.redirect_stdout(io.StringIO()):
            coco = COCO(str(path))
    except (OSError, ValueError, KeyError, TypeError, AssertionError) as err:
        raise AnnotationError(path, f"not a valid COCO file (pycocotools: {type(err).__name__}: {err})") from err
    if not isinstance(coco.dataset.get("images"), list):
        raise AnnotationError(path, "not a COCO file: it has no \"images\" list")
    names = {}
    for index, image in enumerate(coco.dataset["images"]):
        if not isinstance(image, dict) or not isinstance(image.get("file_name"), str):
            raise AnnotationError(path, f"images[{index}] has no \"file_name\"")
        names[image.get("id")] = name = _basename(image["file_name"])
        out.declare(name, _size(image.get("width"), image.get("height")))
    for ann in coco.dataset.get("annotations", []):
        annotation_id = f"id {ann.get('id')}"
        image = names.get(ann.get("image_id"))
        if image is None:
            out.problem(None, annotation_id, f"image_id {ann.get('image_id')!r} is not in \"images\"")
            continue
        category = coco.cats.get(ann.get("category_id"))
        try:
            if category is None:
                raise _BadRecord(f"category_id {ann.get('category_id')!r} is not in \"categories\"")
            xy, source, outline = _coco_point(ann)
        except (ValueError, TypeError, KeyError) as err:
            out.problem(image, annotation_id, _record_error(err))
            continue
        out.add(image, xy, annotation_id, source, category.get("name"), outline)


def _coco_point(ann: dict) -> tuple[tuple[float, float], str, list[np.ndarray] | None]:
    keypoints = ann.get("keypoints")
    if keypoints:
        triples = np.asarray([_number(v, "keypoints") for v in keypoints], dtype=np.float64)
        if triples.size % 3:
            raise _BadRecord(f"keypoints must be x, y, v triples, got {len(keypoints)} values")
        triples = triples.reshape(-1, 3)
        visible = triples[triples[:, 2] > 0]
        if len(visible):
            return (float(visible[:, 0].mean()), float(visible[:, 1].mean())), "keypoint", None
    segmentation = ann.get("segmentation")
    if isinstance(segmentation, list) and segmentation:
        parts = [np.asarray([_number(v, "segmentation") for v in polygon], dtype=np.float64).reshape(-1, 2)
                 for polygon in segmentation]
        return _parts_centroid(parts), "polygon centroid", parts
    if isinstance(segmentation, dict):
        xy = _rle_centroid(segmentation)
        if xy is not None:
            return xy, "mask centroid", None
    bbox = ann.get("bbox")
    if isinstance(bbox, list) and len(bbox) == 4:
        x, y, w, h = (_number(v, "bbox") for v in bbox)
        return (x + w / 2, y + h / 2), "box centroid", _box(x, y, x + w, y + h)
    raise _BadRecord("has no visible keypoint, segmentation or bbox [x, y, w, h] to take a point from")


def _rle_centroid(rle: dict) -> tuple[float, float] | None:
    """Mean pixel centre of an RLE mask (compressed or not); None for an empty mask."""
    from pycocotools import mask as mask_utils

    height, width = rle["size"]
    if isinstance(rle.get("counts"), list):
        rle = mask_utils.frPyObjects(rle, height, width)
    with warnings.catch_warnings():
        # pycocotools' decode trips numpy 2's __array__ copy deprecation; the mask is right either way
        warnings.simplefilter("ignore", DeprecationWarning)
        rows, cols = np.nonzero(mask_utils.decode(rle))
    if rows.size == 0:
        return None
    return float(cols.mean() + 0.5), float(rows.mean() + 0.5)


# ---- CVAT ---------------------------------------------------------------------------------------------------


def _read_cvat(path: Path, out: _Collector) -> None:
    try:
        text = path.read_bytes()
    except OSError as err:
        raise AnnotationError(path, f"cannot read: {err}") from err
    # ElementTree expands internal entities: refuse DTDs rather than risk an entity bomb
    if re.search(rb"<!(DOCTYPE|ENTITY)", text, re.IGNORECASE):
        raise AnnotationError(path, "contains a DTD or entity declaration (<!DOCTYPE/<!ENTITY), which CVAT never "
                              "writes; refused for safety")
    try:
        root = ET.fromstring(text)
    except ET.ParseError as err:
        raise AnnotationError(path, f"not well-formed XML: {err}") from err
    version = (root.findtext("version") or "").strip()
    if root.tag != "annotations" or version != "1.1":
        raise AnnotationError(path, f"not a CVAT 1.1 export (root <{root.tag}>, version {version!r}); export the "
                              "task as \"CVAT for images 1.1\"")
    if root.find("image") is None and root.find("track") is not None:
        raise AnnotationError(path, "is a \"CVAT for video 1.1\" export (tracks); export as \"CVAT for images 1.1\"")
    for element in root.findall("image"):
        name = element.get("name")
        if not name:
            raise AnnotationError(path, f"an <image> (id {element.get('id')!r}) has no name attribute")
        image = _basename(name)
        out.declare(image, _size(element.get("width"), element.get("height")))
        for number, shape in enumerate(element, start=1):
            annotation_id = f"<{shape.tag}> #{number} of image id {element.get('id')}"
            try:
                _cvat_shape(shape, image, annotation_id, out, _cvat_group(shape, element))
            except _BadRecord as err:
                out.problem(image, annotation_id, str(err))


def _cvat_points(text: str | None) -> np.ndarray:
    if not text:
        raise _BadRecord("has no points attribute")
    try:
        return np.array([[float(v) for v in pair.split(",")] for pair in text.split(";")],
                        dtype=np.float64).reshape(-1, 2)
    except ValueError:
        raise _BadRecord(f"points must be \"x1,y1;x2,y2;...\", got {text[:80]!r}") from None


def _cvat_group(shape: ET.Element, image: ET.Element) -> str | None:
    """The shape's group within its <image>: CVAT writes group_id for grouped shapes (0 or none: not grouped)."""
    group = (shape.get("group_id") or "").strip()
    return f"image id {image.get('id')}, group_id {group}" if group not in ("", "0") else None


def _cvat_shape(shape: ET.Element, image: str, annotation_id: str, out: _Collector, group: str | None) -> None:
    label = shape.get("label")
    if shape.tag == "points":
        for index, xy in enumerate(_cvat_points(shape.get("points")), start=1):
            out.add(image, tuple(xy), f"{annotation_id}, point {index}", "point", label, group=group)
    elif shape.tag == "polygon":
        vertices = _cvat_points(shape.get("points"))
        out.add(image, polygon_centroid(vertices), annotation_id, "polygon centroid", label, [vertices], group)
    elif shape.tag == "box":
        x0, y0, x1, y1 = (_number(shape.get(key), key) for key in ("xtl", "ytl", "xbr", "ybr"))
        # a rotated box turns about its centre, which stays put
        out.add(image, ((x0 + x1) / 2, (y0 + y1) / 2), annotation_id, "box centroid", label,
                _box(x0, y0, x1, y1) if not float(shape.get("rotation") or 0) else None, group)
    elif shape.tag == "ellipse":
        out.add(image, (_number(shape.get("cx"), "cx"), _number(shape.get("cy"), "cy")), annotation_id,
                "ellipse centroid", label, group=group)
    elif shape.tag != "tag":  # tags label the whole frame, they are not targets
        raise _BadRecord(f"shape <{shape.tag}> is not supported (points, box, polygon and ellipse are)")


# ---- Label Studio -------------------------------------------------------------------------------------------


def label_studio_image_name(url: str) -> str:
    """The file name Label Studio's ``data.image`` refers to: the basename of the URL's path, or of its
    ``?d=`` parameter (local storage); for uploads (``/data/upload/...``) without the 8-hex-digit prefix
    Label Studio adds (``/data/upload/3/1a2b3c4d-frame_001.png`` -> ``frame_001.png``)."""
    parsed = urlparse(url)
    local = parse_qs(parsed.query).get("d")
    name = _basename(unquote(local[0] if local else parsed.path))
    if parsed.path.startswith("/data/upload/"):
        name = _LS_UPLOAD_PREFIX.sub("", name)
    return name


def _latest_annotation(task: dict) -> dict | None:
    annotations = [a for a in task.get("annotations") or [] if isinstance(a, dict) and not a.get("was_cancelled")]
    if not annotations:
        return None
    return max(annotations, key=lambda a: (str(a.get("updated_at") or a.get("created_at") or ""),
                                           a.get("id") if isinstance(a.get("id"), int) else 0))


def _read_labelstudio(path: Path, out: _Collector) -> None:
    tasks = _load_json(path)
    if not isinstance(tasks, list):
        raise AnnotationError(path, "not a Label Studio JSON export (expected a list of tasks; export with "
                              "\"JSON\", not \"JSON-MIN\" or COCO)")
    for index, task in enumerate(tasks):
        task_id = f"task {task.get('id', index + 1) if isinstance(task, dict) else index + 1}"
        data = task.get("data") if isinstance(task, dict) else None
        url = data.get("image") if isinstance(data, dict) else None
        if not isinstance(url, str):
            out.problem(None, task_id, "has no data.image (the image URL)")
            continue
        image = label_studio_image_name(url)
        annotation = _latest_annotation(task)
        if annotation is None:
            continue  # not annotated (yet): the image is not declared
        out.declare(image, None)
        results = annotation.get("result") or []
        regions = _labelstudio_regions(results)
        for number, result in enumerate(results, start=1):
            result_id = result.get("id", number) if isinstance(result, dict) else number
            annotation_id = f"{task_id}, annotation {annotation.get('id')}, result {result_id}"
            region = regions.get(result_id) if isinstance(result_id, str) else None
            group = f"{task_id}, annotation {annotation.get('id')}, region {region}" if region else None
            try:
                _labelstudio_result(result, image, annotation_id, out, group)
            except (ValueError, TypeError, KeyError, AttributeError) as err:
                out.problem(image, annotation_id, _record_error(err))


def _labelstudio_regions(results: object) -> dict[str, str]:
    """Result id -> the id of its region. Label Studio gives the results of one region the same ``id``; a region
    nested under another (its ``parentID``) belongs to that one's region, up to the outermost."""
    parents = {}
    for result in results if isinstance(results, list) else []:
        if isinstance(result, dict) and isinstance(result.get("id"), str) and result["id"]:
            parent = result.get("parentID")
            parents.setdefault(result["id"], parent if isinstance(parent, str) and parent else None)
    regions = {}
    for result_id in parents:
        region, seen = result_id, {result_id}
        while parents.get(region) in parents and parents[region] not in seen:  # a parent of this annotation
            region = parents[region]
            seen.add(region)
        regions[result_id] = region
    return regions


_LS_REGIONS = {"keypoint": "keypoint", "rectangle": "box centroid", "polygon": "polygon centroid",
               "ellipse": "ellipse centroid"}


def _labelstudio_result(result: dict, image: str, annotation_id: str, out: _Collector, group: str | None) -> None:
    kind = str(result.get("type", ""))
    base = kind.removesuffix("labels")
    if base not in _LS_REGIONS:
        if base in ("brush", "polyline"):
            raise _BadRecord(f"result type {kind!r} is not supported (keypoint, rectangle, polygon, ellipse are)")
        return  # choices, text areas and the like describe the task, not targets
    width, height = (_number(result.get(k), k) for k in ("original_width", "original_height"))
    if _number(result.get("image_rotation", 0), "image_rotation"):
        raise _BadRecord("image_rotation is not 0; undo the rotation in Label Studio")
    out.declare(image, _size(int(width), int(height)), annotation_id)
    value = result["value"]
    names = value.get(kind) if kind.endswith("labels") else None
    label = str(names[0]) if isinstance(names, list) and names else None
    scale = np.array([width / 100, height / 100])
    if base == "polygon":
        vertices = _vertices(value.get("points"), "value.points") * scale
        out.add(image, polygon_centroid(vertices), annotation_id, _LS_REGIONS[base], label, [vertices], group)
        return
    x, y = _number(value.get("x"), "value.x") * scale[0], _number(value.get("y"), "value.y") * scale[1]
    if base != "rectangle":  # keypoints are points; an ellipse's x, y is its centre
        out.add(image, (x, y), annotation_id, _LS_REGIONS[base], label, group=group)
        return
    w = _number(value.get("width"), "value.width") * scale[0]
    h = _number(value.get("height"), "value.height") * scale[1]
    # Label Studio turns a rectangle clockwise about its top-left corner (x, y)
    angle = math.radians(_number(value.get("rotation", 0), "value.rotation"))
    corners = np.array([[0, 0], [w, 0], [w, h], [0, h]]) @ np.array(
        [[math.cos(angle), math.sin(angle)], [-math.sin(angle), math.cos(angle)]]) + [x, y]
    out.add(image, tuple(corners.mean(axis=0)), annotation_id, _LS_REGIONS[base], label, [corners], group)


# ---- LabelMe ------------------------------------------------------------------------------------------------


def _read_labelme(path: Path, out: _Collector) -> None:
    if path.is_file():
        _read_labelme_file(path, out)
        return
    files = sorted(path.glob("*.json"))
    if not files:
        raise AnnotationError(path, "holds no LabelMe .json file")
    for file in files:
        out.file = str(file)
        try:
            _read_labelme_file(file, out)
        except AnnotationError as err:
            # one bad file of a folder: the others stay importable
            out.problem(None, None, str(err).removeprefix(f"{file}: "))
    out.file = str(path)


def _read_labelme_file(path: Path, out: _Collector) -> None:
    data = _load_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("shapes"), list) or not isinstance(
            data.get("imagePath"), str):
        raise AnnotationError(path, "not a LabelMe file (expected an object with \"imagePath\" and \"shapes\")")
    image = _basename(data["imagePath"])
    out.declare(image, _size(data.get("imageWidth"), data.get("imageHeight")))
    for number, shape in enumerate(data["shapes"], start=1):
        annotation_id = f"shape {number}"
        try:
            _labelme_shape(shape, image, annotation_id, out)
        except _BadRecord as err:
            out.problem(image, annotation_id, str(err))


def _labelme_shape(shape: object, image: str, annotation_id: str, out: _Collector) -> None:
    if not isinstance(shape, dict):
        raise _BadRecord(f"a shape must be an object, got {json.dumps(shape)[:80]}")
    kind = shape.get("shape_type") or "polygon"  # LabelMe's default when the key is missing or null
    vertices = _vertices(shape.get("points"), "points")
    label = shape.get("label") if isinstance(shape.get("label"), str) else None
    # LabelMe ties the shapes of one object by a group_id (null: not grouped)
    number = shape.get("group_id")
    grouped = isinstance(number, int) and not isinstance(number, bool) or isinstance(number, str) and number.strip()
    group = f"group_id {number}" if grouped else None
    if kind == "point" and len(vertices) == 1:
        out.add(image, tuple(vertices[0]), annotation_id, "point", label, group=group)
    elif kind == "rectangle" and len(vertices) == 2:
        (x0, y0), (x1, y1) = vertices
        out.add(image, tuple(vertices.mean(axis=0)), annotation_id, "box centroid", label,
                _box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)), group)
    elif kind == "circle" and len(vertices) == 2:
        out.add(image, tuple(vertices[0]), annotation_id, "circle centroid", label, group=group)
    elif kind == "polygon":
        out.add(image, polygon_centroid(vertices), annotation_id, "polygon centroid", label, [vertices], group)
    elif kind in ("point", "rectangle", "circle"):
        raise _BadRecord(f"a {kind} has {len(vertices)} point(s), expected {1 if kind == 'point' else 2}")
    else:
        raise _BadRecord(f"shape_type {kind!r} is not supported (point, rectangle, circle, polygon are)")


_READERS = {"csv": _read_csv, "coco": _read_coco, "cvat": _read_cvat, "labelstudio": _read_labelstudio,
            "labelme": _read_labelme}

