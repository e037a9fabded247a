"""Single point labels derived from pixel masks, or read from human annotations.

The rules follow the MATLAB scripts released with LESPS (Ying et al., CVPR 2023),
translated from MATLAB's 1-based indexing to numpy's 0-based indexing.

Targets are the 8-connected components of ``mask > 0``. They are numbered in the
order :func:`scipy.ndimage.label` finds them: raster (row-major) order of each
component's first pixel. MATLAB's ``bwlabel`` scans column-major, so in images with
several targets the numbering can differ from the reference. For centroid points
this changes only the row order of the result; for coarse points it changes which
random draws a target gets, which is immaterial because MATLAB's random stream is
not reproduced anyway.

All points are ``(row, col)`` pairs.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
import zlib
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from irstd.ops.components import EIGHT_CONNECTED

__all__ = [
    "TargetInfo",
    "XmlPoints",
    "centroid_points",
    "coarse_points",
    "label_targets",
    "map_to_points",
    "points_outside",
    "points_to_map",
    "read_xml_points",
    "rescale_points",
    "target_stats",
]



@dataclass(frozen=True)
class TargetInfo:
    """One target: pixel count, 0-based mean (row, col), and its (r0, c0, r1, c1) box, r1/c1 exclusive."""

    area: int
    centroid: tuple[float, float]
    bbox: tuple[int, int, int, int]


@dataclass(frozen=True)
class XmlPoints:
    """Points of one annotation file.

    ``points`` are 0-based ``(row, col)`` pixels (int64, shape (N, 2)), clipped to the
    image only when the file states its size; ``raw`` are the file's ``(yc, xc)``
    values unchanged; ``width``/``height`` come from ``<size>`` (None if absent).
    """

    points: np.ndarray
    raw: np.ndarray
    width: int | None
    height: int | None


def _check_2d(array: np.ndarray, what: str) -> np.ndarray:
    array = np.asarray(array)
    if array.ndim != 2:
        raise ValueError(f"{what} must be 2-D, got shape {array.shape}")
    return array


def label_targets(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """Label the 8-connected components of ``mask > 0``.

    Returns an int32 label image (0 = background, targets 1..N) and N.
    """
    binary = _check_2d(mask, "mask") > 0
    labels, count = ndi.label(binary, structure=EIGHT_CONNECTED, output=np.int32)
    return labels, int(count)


def _stats_from_labels(labels: np.ndarray, count: int) -> list[TargetInfo]:
    if count == 0:
        return []
    index = np.arange(1, count + 1)
    foreground = labels > 0
    areas = ndi.sum_labels(foreground, labels, index)
    centroids = ndi.center_of_mass(foreground, labels, index)
    boxes = ndi.find_objects(labels)
    return [
        TargetInfo(
            area=int(area),
            centroid=(float(cy), float(cx)),
            bbox=(rows.start, cols.start, rows.stop, cols.stop),
        )
        for area, (cy, cx), (rows, cols) in zip(areas, centroids, boxes, strict=True)
    ]


def target_stats(mask: np.ndarray) -> list[TargetInfo]:
    """Area, 0-based centroid and bounding box of every target, in label order."""
    return _stats_from_labels(*label_targets(mask))


def _as_points(values: list | np.ndarray) -> np.ndarray:
    return np.asarray(values, dtype=np.int64).reshape(-1, 2)


def centroid_points(mask: np.ndarray) -> np.ndarray:
    """One point per target: the pixel at the floor of its 0-based centroid, shape (N, 2) int64.

    The released script floors MATLAB's 1-based centroid; ``floor(c + 1) - 1 == floor(c)``
    so this is the same pixel. For a non-convex target (an L, a ring) that pixel can
    lie outside the target; it is kept, as the reference does.
    """
    stats = target_stats(mask)
    return _as_points([np.floor(info.centroid) for info in stats])


def _image_rng(seed: int, name: str) -> np.random.Generator:
    # crc32 rather than hash(): Python salts str hashes per process, which would make
    # the points change from run to run.
    return np.random.default_rng([seed, zlib.crc32(name.encode("utf-8"))])


def coarse_points(
    mask: np.ndarray, *, seed: int, name: str, std: float = 0.25, max_draws: int = 10_000
) -> np.ndarray:
    """One randomly offset point per target, as LESPS ``coarse_anno.m`` makes them.

    Per target and axis the point is ``floor(centroid + g * extent / 2)`` with
    ``g ~ Normal(0, std)`` drawn for x (column) first, then y (row), ``centroid`` the
    0-based mean pixel position (``floor(c1 + d) - 1 == floor(c0 + d)`` converts the
    script's 1-based arithmetic) and ``extent`` the bounding-box size along that axis.
    The point is clipped to the image and redrawn until it falls inside *this* target.
    The MATLAB script accepts a point inside *any* target of the mask, which for
    touching-box targets can hand a target a point on its neighbour; we do not.

    After ``max_draws`` rejected draws the target pixel nearest (Euclidean, first in
    raster order on ties) to the last clipped draw is used, so a ring-shaped target
    whose centroid falls in its hole cannot stall the loop.

    Randomness comes from a generator seeded with ``(seed, crc32(name))``: the same
    image always gets the same points regardless of the order images are processed.
    Returns shape (N, 2) int64 in label order.
    """
    if max_draws < 1:
        raise ValueError(f"max_draws must be >= 1, got {max_draws}")
    labels, count = label_targets(mask)
    height, width = labels.shape
    rng = _image_rng(seed, name)
    points = []
    for label, info in enumerate(_stats_from_labels(labels, count), start=1):
        cy, cx = info.centroid
        r0, c0, r1, c1 = info.bbox
        half_h, half_w = (r1 - r0) / 2, (c1 - c0) / 2
        for _ in range(max_draws):
            gx = rng.normal(0.0, std)
            gy = rng.normal(0.0, std)
            col = min(max(int(np.floor(cx + half_w * gx)), 0), width - 1)
            row = min(max(int(np.floor(cy + half_h * gy)), 0), height - 1)
            if labels[row, col] == label:
                break
        else:
            rows, cols = np.nonzero(labels[r0:r1, c0:c1] == label)
            nearest = np.argmin((rows + r0 - row) ** 2 + (cols + c0 - col) ** 2)
            row, col = int(rows[nearest]) + r0, int(cols[nearest]) + c0
        points.append((row, col))
    return _as_points(points)


def _xml_number(element: ET.Element, tag: str, path: str, kind: type) -> float | int:
    node = element.find(tag)
    if node is None or node.text is None or not node.text.strip():
        raise ValueError(f"{path}: missing <{tag}> in <{element.tag}>")
    try:
        return kind(node.text.strip())
    except ValueError:
        raise ValueError(f"{path}: <{tag}> is not a valid {kind.__name__}: {node.text!r}") from None


def read_xml_points(path: str | os.PathLike) -> XmlPoints:
    """Read SIRST human centroid annotations (``points_xml/NAME.xml``).

    Every ``<object>`` holds ``<centroid><yc>..</yc><xc>..</xc></centroid>`` as floats.
    These are MATLAB-style 1-based coordinates, so the pixel is
    ``floor(v - 1)``. Evidence on the 427 SIRST images (533 objects, one per
    8-connected mask target): the median offset of ``(yc, xc)`` from the nearest mask
    centroid is (+1.007, +1.000), and ``floor(v - 1)`` equals our centroid pixel for
    434 points versus 9 for ``floor(v)``. Inside-target counts barely discriminate
    (529/533 inside their own target as 1-based, 531/533 as 0-based) because targets
    are usually several pixels wide.

    ``<size><width>/<height>`` is optional; when present the points are clipped to it and
    callers can compare it with the image. Unparsable XML or a missing/invalid
    centroid field raises ValueError naming the file and the element.
    """
    where = os.fspath(path)
    try:
        root = ET.parse(where).getroot()
    except ET.ParseError as err:
        raise ValueError(f"{where}: malformed XML ({err})") from None
    width = height = None
    size = root.find("size")
    if size is not None:
        width = _xml_number(size, "width", where, int)
        height = _xml_number(size, "height", where, int)
    raw = []
    for obj in root.iter("object"):
        centroid = obj.find("centroid")
        if centroid is None:
            raise ValueError(f"{where}: missing <centroid> in <object>")
        raw.append((_xml_number(centroid, "yc", where, float), _xml_number(centroid, "xc", where, float)))
    raw_array = np.asarray(raw, dtype=np.float64).reshape(-1, 2)
    points = np.floor(raw_array - 1.0).astype(np.int64)
    if width is not None:
        points = np.clip(points, 0, [height - 1, width - 1])
    return XmlPoints(points=points, raw=raw_array, width=width, height=height)


def points_outside(points: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The points that fall outside an image of ``shape`` (HxW), shape (M, 2) int64."""
    points = _as_points(points)
    height, width = shape
    outside = (points[:, 0] < 0) | (points[:, 0] >= height) | (points[:, 1] < 0) | (points[:, 1] >= width)
    return points[outside]


def points_to_map(points: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Rasterise points into a float32 map of ``shape`` with 1.0 at each point."""
    points = _as_points(points)
    height, width = shape
    outside = points_outside(points, shape)
    if len(outside):
        raise ValueError(f"points outside shape {tuple(shape)}: {outside.tolist()}")
    point_map = np.zeros((height, width), dtype=np.float32)
    point_map[points[:, 0], points[:, 1]] = 1.0
    return point_map


def map_to_points(point_map: np.ndarray) -> np.ndarray:
    """(row, col) of every non-zero pixel of a point map, in raster order, shape (N, 2) int64."""
    return np.argwhere(_check_2d(point_map, "point_map") != 0).astype(np.int64)


def rescale_points(points: np.ndarray, src_shape: tuple[int, int], dst_shape: tuple[int, int]) -> np.ndarray:
    """Map points of an image of ``src_shape`` onto one of ``dst_shape``.

    ``floor(p * dst / src)`` per axis (the multiplication comes first, so integer
    inputs are floored exactly), clipped to the destination. Used when a point-label
    PNG does not have the size of its image.
    """
    src = np.asarray(src_shape, dtype=np.float64)
    dst = np.asarray(dst_shape, dtype=np.int64)
    scaled = np.floor(np.asarray(points, dtype=np.float64).reshape(-1, 2) * dst / src).astype(np.int64)
    return np.clip(scaled, 0, dst - 1)
