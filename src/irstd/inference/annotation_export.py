"""Detections in the files of annotation tools (COCO, CVAT, Label Studio), to review and correct there.

Each detection goes out twice: as a point at its centroid, the label the point-supervised methods learn from,
and as a polygon tracing its pixels, so the reviewer sees what the model segmented. Its peak score goes where
the format has a place for one.

Coordinates are continuous image coordinates: (0, 0) is the top-left corner of the top-left pixel and pixel
(row i, col j) covers [j, j+1) x [i, i+1), so its centre is (j + 0.5, i + 0.5). A centroid (row, col) in 0-based
pixel indices is the point (col + 0.5, row + 0.5); polygon vertices lie on pixel corners. `irstd.data.clicks`
reads points back with the same convention.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import ndimage

from irstd.data.points import label_targets
from irstd.utils.files import write_text_atomic

if TYPE_CHECKING:  # predict imports this module
    from irstd.inference.predict import Detection

EXPORT_FORMATS = {"coco": "coco.json", "cvat": "cvat.xml", "labelstudio": "labelstudio.json"}
LABEL = "target"
# Label Studio names of the controls the results belong to; docs/inference.md gives the labelling config
LABELSTUDIO_POINT, LABELSTUDIO_POLYGON, LABELSTUDIO_IMAGE = "point", "outline", "image"

# Tracing directions in screen order (y down): right, down, left, up; +1 turns right (clockwise).
_STEPS = ((1, 0), (0, 1), (-1, 0), (0, -1))
# The pixels around corner (x, y) as (row, col) offsets: NE, SE, SW, NW. Walking in direction d, the
# pixel ahead on the left is _AROUND[d], the one ahead on the right _AROUND[d + 1].
_AROUND = ((-1, 0), (0, 0), (0, -1), (-1, -1))


def export_formats(value: str | Iterable[str] | None) -> tuple[str, ...]:
    """The formats `export=` asks for (None, one name or a list), checked, in order, without repeats."""
    if value is None:
        return ()
    names = list(value) if isinstance(value, Iterable) and not isinstance(value, str) else [value]
    unknown = [name for name in names if not (isinstance(name, str) and name in EXPORT_FORMATS)]
    if unknown:
        raise ValueError(f"export={value if len(names) == 1 else names}: unknown format(s) {unknown}; "
                         f"allowed values are {', '.join(EXPORT_FORMATS)} (one, e.g. export=coco, or a list, "
                         "e.g. export=[coco,cvat]), or null for none")
    return tuple(dict.fromkeys(names))


def trace_outline(component: np.ndarray) -> np.ndarray:
    """The outer outline of the pixels of `component` (2-D, one 8-connected component of `> 0`) as a (K, 2)
    int array of (x, y) pixel corners, clockwise as displayed (y down), without collinear vertices.

    The walk keeps the component on its right and, where two pixels of it touch only at a corner, turns to
    follow the diagonal neighbour: the polygon then passes twice through that corner and covers both pixels
    (a pinched, weakly simple polygon) rather than splitting the component. Holes are not traced, so the
    polygon covers them: its area is the pixel count plus the holes'.
    """
    grid = np.pad(np.asarray(component) > 0, 1)
    rows, cols = np.nonzero(grid)
    if rows.size == 0:
        raise ValueError("trace_outline needs at least one pixel")
    # the first pixel in raster order has background above it: its top edge lies on the outer outline
    start = (int(cols[0]), int(rows[0]))
    x, y, direction = *start, 0
    vertices = []
    while True:
        x, y = x + _STEPS[direction][0], y + _STEPS[direction][1]
        left = grid[y + _AROUND[direction][0], x + _AROUND[direction][1]]
        right = grid[y + _AROUND[(direction + 1) % 4][0], x + _AROUND[(direction + 1) % 4][1]]
        # left first: a pixel ahead on the left continues the component, diagonally too (8-connectivity)
        turn = -1 if left else 0 if right else 1
        if turn:
            vertices.append((x - 1, y - 1))  # back to unpadded corners
            direction = (direction + turn) % 4
        if (x, y, direction) == (*start, 0):
            break
    # the start corner closes the walk; put it first
    return np.roll(np.asarray(vertices, dtype=np.int64), 1, axis=0)


def outlines_of(mask: np.ndarray) -> list[np.ndarray]:
    """`trace_outline` of every 8-connected component of `mask`, in the label order of `detections_of`."""
    labels, _ = label_targets(mask)
    return [trace_outline(labels[rows, cols] == number) + (cols.start, rows.start)
            for number, (rows, cols) in enumerate(ndimage.find_objects(labels), start=1)]


def polygon_area(vertices: np.ndarray) -> float:
    """Shoelace area of a closed polygon, positive for clockwise-as-displayed vertices (y down)."""
    x, y = np.asarray(vertices, dtype=np.float64).T
    return 0.5 * float(np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y))


@dataclass(frozen=True)
class ExportedImage:
    """One predicted image: its name (relative to the input), size, detections and their outlines, paired."""

    name: str
    height: int
    width: int
    detections: Sequence[Detection]
    outlines: Sequence[np.ndarray]


def point_of(found: Detection) -> tuple[float, float]:
    """(x, y) of a detection's centroid in continuous coordinates: the centre of pixel (i, j) is (j + .5, i + .5)."""
    return found.centroid_col + 0.5, found.centroid_row + 0.5


def to_coco(images: Sequence[ExportedImage], model: str) -> dict[str, Any]:
    """A COCO dataset: one category `target` with the keypoint `center`; per detection an annotation with the
    polygon (segmentation), box, pixel area, the centroid as its visible keypoint, and the peak score."""
    annotations = []
    for image_id, image in enumerate(images, start=1):
        for found, outline in zip(image.detections, image.outlines, strict=True):
            x, y = point_of(found)
            annotations.append({
                "id": len(annotations) + 1, "image_id": image_id, "category_id": 1,
                "segmentation": [[float(v) for v in outline.ravel()]], "area": float(found.area),
                "bbox": [float(found.bbox_left), float(found.bbox_top), float(found.bbox_right - found.bbox_left),
                         float(found.bbox_bottom - found.bbox_top)],
                "iscrowd": 0, "keypoints": [x, y, 2], "num_keypoints": 1, "score": found.peak_score})
    return {
        "info": {"description": f"irstd-predict detections of {model}", "version": "1.0",
                 "date_created": datetime.now(timezone.utc).isoformat(timespec="seconds")},
        "licenses": [],
        "images": [{"id": image_id, "file_name": image.name, "width": image.width, "height": image.height}
                   for image_id, image in enumerate(images, start=1)],
        "categories": [{"id": 1, "name": LABEL, "supercategory": LABEL, "keypoints": ["center"], "skeleton": []}],
        "annotations": annotations}


def to_cvat(images: Sequence[ExportedImage], model: str) -> str:
    """CVAT for images 1.1 XML: per detection a `points` shape and a `polygon` shape sharing a group_id, each
    with the peak score as the attribute `score`."""
    root = ET.Element("annotations")
    ET.SubElement(root, "version").text = "1.1"
    task = ET.SubElement(ET.SubElement(root, "meta"), "task")
    ET.SubElement(task, "name").text = f"irstd-predict {model}"
    ET.SubElement(task, "size").text = str(len(images))
    ET.SubElement(task, "mode").text = "annotation"
    label = ET.SubElement(ET.SubElement(task, "labels"), "label")
    ET.SubElement(label, "name").text = LABEL
    ET.SubElement(label, "type").text = "any"
    attribute = ET.SubElement(ET.SubElement(label, "attributes"), "attribute")
    for key, text in {"name": "score", "mutable": "False", "input_type": "text", "default_value": "",
                      "values": ""}.items():
        ET.SubElement(attribute, key).text = text
    group = 0
    for image_id, image in enumerate(images):
        element = ET.SubElement(root, "image", id=str(image_id), name=image.name, width=str(image.width),
                                height=str(image.height))
        for found, outline in zip(image.detections, image.outlines, strict=True):
            group += 1
            shapes = {"points": "{},{}".format(*point_of(found)),
                      "polygon": ";".join(f"{float(x)},{float(y)}" for x, y in outline)}
            for kind, points in shapes.items():
                shape = ET.SubElement(element, kind, label=LABEL, source="auto", occluded="0", points=points,
                                      z_order="0", group_id=str(group))
                ET.SubElement(shape, "attribute", name="score").text = repr(found.peak_score)
    ET.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def to_labelstudio(images: Sequence[ExportedImage], model: str) -> list[dict[str, Any]]:
    """Label Studio tasks, one per image, each with one prediction (model output, for review): per detection
    a `keypointlabels` and a `polygonlabels` result in percent of the image size, each with the peak score.
    The prediction's score is the lowest peak score of its detections (absent without detections), so sorting
    tasks by it puts the most doubtful first."""
    tasks = []
    for image in images:
        results = []
        for number, (found, outline) in enumerate(zip(image.detections, image.outlines, strict=True), start=1):
            x, y = point_of(found)
            common = {"to_name": LABELSTUDIO_IMAGE, "original_width": image.width,
                      "original_height": image.height, "image_rotation": 0, "score": found.peak_score}
            results.append(common | {
                "id": f"d{number}p", "from_name": LABELSTUDIO_POINT, "type": "keypointlabels",
                "value": {"x": 100 * x / image.width, "y": 100 * y / image.height, "keypointlabels": [LABEL]}})
            results.append(common | {
                "id": f"d{number}o", "from_name": LABELSTUDIO_POLYGON, "type": "polygonlabels",
                "value": {"points": [[100 * float(px) / image.width, 100 * float(py) / image.height]
                                     for px, py in outline], "closed": True, "polygonlabels": [LABEL]}})
        prediction = {"model_version": model, "result": results}
        if image.detections:
            prediction["score"] = min(found.peak_score for found in image.detections)
        tasks.append({"data": {"image": image.name}, "predictions": [prediction]})
    return tasks


def write_exports(folder: str | Path, formats: Sequence[str], images: Sequence[ExportedImage],
                  model: str) -> dict[str, str]:
    """Write each format's file into `folder` (atomically); format -> path written."""
    folder = Path(folder)
    written = {}
    for fmt in export_formats(formats):
        path = folder / EXPORT_FORMATS[fmt]
        if fmt == "cvat":
            text = to_cvat(images, model)
        else:
            data = to_coco(images, model) if fmt == "coco" else to_labelstudio(images, model)
            text = json.dumps(data, indent=1) + "\n"
        write_text_atomic(path, text)
        written[fmt] = str(path)
    return written
