"""Point-label rules: centroid and coarse points from masks, SIRST XML annotations, point maps."""

from __future__ import annotations

import math
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image

from irstd.data.points import (
    TargetInfo,
    centroid_points,
    coarse_points,
    label_targets,
    map_to_points,
    points_to_map,
    read_xml_points,
    rescale_points,
    target_stats,
)

SIRST = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "SIRST"


def _mask(shape, pixels):
    mask = np.zeros(shape, dtype=np.uint8)
    for r, c in pixels:
        mask[r, c] = 255
    return mask


def _box(shape, r0, c0, r1, c1):
    mask = np.zeros(shape, dtype=np.uint8)
    mask[r0:r1, c0:c1] = 1
    return mask


def _reference_labels(mask):
    """Independent 8-connected labelling by flood fill, numbered in raster order of first pixel."""
    height, width = mask.shape
    labels = np.zeros(mask.shape, dtype=np.int64)
    count = 0
    for r in range(height):
        for c in range(width):
            if mask[r, c] and not labels[r, c]:
                count += 1
                labels[r, c] = count
                stack = [(r, c)]
                while stack:
                    y, x = stack.pop()
                    for dy in (-1, 0, 1):
                        for dx in (-1, 0, 1):
                            ny, nx = y + dy, x + dx
                            if 0 <= ny < height and 0 <= nx < width and mask[ny, nx] and not labels[ny, nx]:
                                labels[ny, nx] = count
                                stack.append((ny, nx))
    return labels, count


# --- labelling and centroid points -------------------------------------------------------------


def test_2x2_target_centroid_is_floored():
    mask = _box((8, 8), 3, 3, 5, 5)
    assert target_stats(mask) == [TargetInfo(area=4, centroid=(3.5, 3.5), bbox=(3, 3, 5, 5))]
    points = centroid_points(mask)
    assert points.dtype == np.int64
    assert points.tolist() == [[3, 3]]


def test_2x2_target_at_origin():
    assert centroid_points(_box((4, 4), 0, 0, 2, 2)).tolist() == [[0, 0]]


def test_target_on_image_border():
    mask = _mask((6, 9), [(5, 6), (5, 7), (5, 8), (4, 8)])
    (info,) = target_stats(mask)
    assert info.bbox == (4, 6, 6, 9)
    assert info.centroid == pytest.approx((4.75, 7.25))
    assert centroid_points(mask).tolist() == [[4, 7]]


def test_diagonal_pixels_are_one_target():
    mask = _mask((5, 5), [(1, 1), (2, 2)])
    labels, count = label_targets(mask)
    assert labels.dtype == np.int32
    assert count == 1
    assert labels[1, 1] == labels[2, 2] == 1
    assert centroid_points(mask).tolist() == [[1, 1]]


def test_two_targets_in_raster_order():
    # B's first pixel is left of A's, so a column-major scan (MATLAB bwlabel) would number B first.
    mask = _mask((8, 10), [(0, 8), (0, 9), (5, 1)])
    labels, count = label_targets(mask)
    assert count == 2
    assert labels[0, 8] == 1 and labels[5, 1] == 2
    assert [info.area for info in target_stats(mask)] == [2, 1]
    assert centroid_points(mask).tolist() == [[0, 8], [5, 1]]


def test_non_convex_target_keeps_centroid_outside_it():
    # L shape: column 0 rows 0..4 plus row 4 columns 1..4; centroid (26/9, 10/9) is off the L.
    pixels = [(r, 0) for r in range(5)] + [(4, c) for c in range(1, 5)]
    mask = _mask((6, 6), pixels)
    (point,) = centroid_points(mask).tolist()
    assert point == [2, 1]
    assert mask[tuple(point)] == 0


def test_mask_threshold_is_strictly_positive():
    mask = np.array([[0.0, -1.0, 0.2], [0.0, 0.0, 0.0]])
    assert centroid_points(mask).tolist() == [[0, 2]]


def test_empty_mask_gives_no_points():
    mask = np.zeros((7, 5), dtype=bool)
    assert label_targets(mask)[1] == 0
    assert target_stats(mask) == []
    for points in (centroid_points(mask), coarse_points(mask, seed=0, name="empty")):
        assert points.shape == (0, 2) and points.dtype == np.int64


def test_non_2d_mask_rejected():
    with pytest.raises(ValueError, match="2-D"):
        centroid_points(np.zeros((2, 3, 4)))


# --- coarse points -----------------------------------------------------------------------------


def _many_targets():
    """Squares, bars, an L and a ring, on one image."""
    mask = np.zeros((40, 60), dtype=np.uint8)
    mask[1:9, 1:9] = 1
    mask[1:3, 12:40] = 1
    mask[12:30, 2:4] = 1
    mask[12:20, 10] = 1
    mask[19, 10:18] = 1
    mask[25:38, 25:38] = 1
    mask[27:36, 27:36] = 0
    mask[5, 50] = 1
    mask[30:35, 45:55] = 1
    return mask


def test_coarse_is_deterministic_and_seed_dependent():
    mask = _many_targets()
    first = coarse_points(mask, seed=3, name="Misc_7")
    assert first.dtype == np.int64 and first.shape == (label_targets(mask)[1], 2)
    assert np.array_equal(first, coarse_points(mask, seed=3, name="Misc_7"))
    assert not np.array_equal(first, coarse_points(mask, seed=4, name="Misc_7"))
    assert not np.array_equal(first, coarse_points(mask, seed=3, name="Misc_8"))


def test_coarse_is_independent_of_call_order():
    mask_a, mask_b = _many_targets(), _box((20, 20), 2, 2, 15, 17)
    forward = [coarse_points(mask_a, seed=1, name="a"), coarse_points(mask_b, seed=1, name="b")]
    backward = [coarse_points(mask_b, seed=1, name="b"), coarse_points(mask_a, seed=1, name="a")]
    assert np.array_equal(forward[0], backward[1])
    assert np.array_equal(forward[1], backward[0])


def test_coarse_point_inside_its_own_target():
    mask = _many_targets()
    labels, count = label_targets(mask)
    for seed in range(30):
        points = coarse_points(mask, seed=seed, name="img")
        assert labels[points[:, 0], points[:, 1]].tolist() == list(range(1, count + 1))


def test_coarse_first_draw_follows_matlab_formula():
    # 21x21 square at rows/cols 2..22: 1-based centroid 13, box extent 21; the script draws x then y.
    mask = _box((25, 25), 2, 2, 23, 23)
    rng = np.random.default_rng([7, zlib.crc32(b"Misc_1")])
    gx, gy = rng.normal(0, 0.25), rng.normal(0, 0.25)
    x1 = math.floor(13 + 21 / 2 * gx)
    y1 = math.floor(13 + 21 / 2 * gy)
    assert 3 <= x1 <= 23 and 3 <= y1 <= 23  # the draw is accepted
    assert coarse_points(mask, seed=7, name="Misc_1").tolist() == [[y1 - 1, x1 - 1]]


def test_coarse_single_pixel_target():
    mask = _mask((9, 9), [(4, 6)])
    for seed in range(5):
        assert coarse_points(mask, seed=seed, name="p").tolist() == [[4, 6]]


def test_coarse_fallback_takes_nearest_target_pixel():
    # A ring's centroid lies in its hole, so a single draw usually misses the ring.
    mask = _box((25, 25), 2, 2, 23, 23)
    mask[4:21, 4:21] = 0
    ring = np.argwhere(mask)
    misses = 0
    for seed in range(20):
        rng = np.random.default_rng([seed, zlib.crc32(b"ring")])
        gx, gy = rng.normal(0, 0.25), rng.normal(0, 0.25)
        row = min(max(math.floor(12 + 10.5 * gy), 0), 24)
        col = min(max(math.floor(12 + 10.5 * gx), 0), 24)
        if mask[row, col]:
            expected = [row, col]
        else:
            misses += 1
            expected = ring[np.argmin(((ring - [row, col]) ** 2).sum(axis=1))].tolist()
        assert coarse_points(mask, seed=seed, name="ring", max_draws=1).tolist() == [expected]
    assert misses > 10
    with pytest.raises(ValueError, match="max_draws"):
        coarse_points(mask, seed=0, name="ring", max_draws=0)


def test_coarse_offset_distribution():
    # 9x41 bar, centroid (6, 22): offsets before flooring are Normal(0, extent/2 * 1/4) per axis.
    mask = _box((13, 45), 2, 2, 11, 43)
    points = np.array([coarse_points(mask, seed=11, name=f"img{i}")[0] for i in range(1500)])
    # +0.5 undoes the mean shift of flooring; flooring adds 1/12 variance.
    offsets = points + 0.5 - np.array([6.0, 22.0])
    sigma = np.sqrt((np.array([9.0, 41.0]) / 2 * 0.25) ** 2 + 1 / 12)
    n = len(points)
    assert np.all(np.abs(offsets.mean(axis=0)) < 6 * sigma / np.sqrt(n))
    assert np.all(np.abs(offsets.std(axis=0) / sigma - 1) < 0.15)
    assert abs(np.corrcoef(offsets.T)[0, 1]) < 0.15


# --- XML annotations ---------------------------------------------------------------------------

EXAMPLE_XML = """<annotation><filename>Misc_1</filename>
<size><width>320</width><height>240</height><depth>1</depth></size>
<object><name>Target</name><centroid><yc>75.4940119760479</yc><xc>71.50898203592814</xc></centroid></object>
<object><name>Target</name><centroid><yc>134.33390557939913</yc><xc>220.9725321888412</xc></centroid></object>
</annotation>"""


def test_read_xml_points(tmp_path):
    path = tmp_path / "Misc_1.xml"
    path.write_text(EXAMPLE_XML)
    parsed = read_xml_points(path)
    assert (parsed.width, parsed.height) == (320, 240)
    assert parsed.raw == pytest.approx(
        np.array([[75.4940119760479, 71.50898203592814], [134.33390557939913, 220.9725321888412]])
    )
    assert parsed.points.dtype == np.int64
    # 1-based MATLAB coordinates: pixel = floor(v - 1).
    assert parsed.points.tolist() == [[74, 70], [133, 219]]


def test_read_xml_clips_to_size_only_when_known(tmp_path):
    objects = "".join(
        f"<object><centroid><yc>{y}</yc><xc>{x}</xc></centroid></object>"
        for y, x in [(0.5, 12.0), (7.9, 3.2)]
    )
    sized = tmp_path / "sized.xml"
    sized.write_text(f"<annotation><size><width>10</width><height>6</height></size>{objects}</annotation>")
    assert read_xml_points(sized).points.tolist() == [[0, 9], [5, 2]]
    unsized = tmp_path / "unsized.xml"
    unsized.write_text(f"<annotation>{objects}</annotation>")
    parsed = read_xml_points(unsized)
    assert (parsed.width, parsed.height) == (None, None)
    assert parsed.points.tolist() == [[-1, 11], [6, 2]]


def test_read_xml_without_objects(tmp_path):
    path = tmp_path / "none.xml"
    path.write_text("<annotation><size><width>4</width><height>4</height></size></annotation>")
    parsed = read_xml_points(path)
    assert parsed.points.shape == (0, 2) and parsed.raw.shape == (0, 2)


@pytest.mark.parametrize(
    ("text", "element"),
    [
        ("<annotation><object><centroid><yc>1", "malformed"),
        ("<annotation><object><centroid><yc>3</yc></centroid></object></annotation>", "<xc>"),
        ("<annotation><object><name>Target</name></object></annotation>", "<centroid>"),
        ("<annotation><object><centroid><yc>3</yc><xc>abc</xc></centroid></object></annotation>", "<xc>"),
        ("<annotation><size><width>3</width></size></annotation>", "<height>"),
    ],
)
def test_read_xml_errors_name_file_and_element(tmp_path, text, element):
    path = tmp_path / "Broken_3.xml"
    path.write_text(text)
    with pytest.raises(ValueError) as info:
        read_xml_points(path)
    assert "Broken_3.xml" in str(info.value)
    assert element in str(info.value)


# --- point maps --------------------------------------------------------------------------------


def test_points_to_map_and_back():
    points = np.array([[3, 1], [0, 4], [3, 0]])
    point_map = points_to_map(points, (4, 5))
    assert point_map.dtype == np.float32 and point_map.shape == (4, 5)
    assert point_map.sum() == 3 and point_map[3, 1] == 1.0
    assert map_to_points(point_map).tolist() == [[0, 4], [3, 0], [3, 1]]
    assert points_to_map(np.zeros((0, 2), dtype=np.int64), (2, 2)).sum() == 0


def test_points_to_map_rejects_outside_points():
    with pytest.raises(ValueError, match=r"\[\[4, 0\], \[0, -1\]\]"):
        points_to_map(np.array([[1, 1], [4, 0], [0, -1]]), (4, 5))


def test_rescale_points():
    points = np.array([[0, 0], [5, 9], [9, 3]])
    assert rescale_points(points, (10, 10), (5, 20)).tolist() == [[0, 0], [2, 18], [4, 6]]
    # Misc_111: 592x400 (w x h) mask onto its 325x220 image.
    assert rescale_points(np.array([[399, 591], [200, 300]]), (400, 592), (220, 325)).tolist() == [
        [219, 324],
        [110, 164],
    ]
    assert rescale_points(np.array([[10, -2]]), (10, 10), (5, 5)).tolist() == [[4, 0]]


# --- properties --------------------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(arrays(np.bool_, st.tuples(st.integers(1, 12), st.integers(1, 12))))
def test_one_point_per_component_and_map_round_trip(mask):
    expected_labels, count = _reference_labels(mask)
    labels, n = label_targets(mask)
    assert n == count
    assert np.array_equal(labels, expected_labels)
    points = centroid_points(mask)
    assert points.shape == (count, 2)
    for info, point in zip(target_stats(mask), points, strict=True):
        r0, c0, r1, c1 = info.bbox
        assert r0 <= point[0] < r1 and c0 <= point[1] < c1
    # Distinct targets can share a centroid pixel (a dot inside a ring), hence unique.
    round_trip = map_to_points(points_to_map(points, mask.shape))
    assert np.array_equal(round_trip, np.unique(points.reshape(-1, 2), axis=0))


# --- the real SIRST dataset --------------------------------------------------------------------


@pytest.mark.skipif(not SIRST.is_dir(), reason=f"SIRST dataset not found at {SIRST}")
def test_sirst_xml_points_match_mask_targets():
    total_targets = inside = centroid_match_1based = centroid_match_0based = 0
    resized = []
    for mask_path in sorted((SIRST / "masks").glob("*.png")):
        name = mask_path.stem
        image_size = Image.open(SIRST / "images" / f"{name}.png").size
        mask_image = Image.open(mask_path)
        if mask_image.size != image_size:
            resized.append(name)
            mask_image = mask_image.resize(image_size, Image.NEAREST)
        mask = np.array(mask_image) > 0
        labels, count = label_targets(mask)
        total_targets += count

        xml = read_xml_points(SIRST / "points_xml" / f"{name}.xml")
        assert (xml.width, xml.height) == image_size, name
        assert len(xml.points) == count, name
        inside += int(mask[xml.points[:, 0], xml.points[:, 1]].sum())
        centroids = {tuple(p) for p in centroid_points(mask).tolist()}
        centroid_match_1based += sum(tuple(p) in centroids for p in xml.points.tolist())
        zero_based = np.clip(np.floor(xml.raw).astype(np.int64), 0, [xml.height - 1, xml.width - 1])
        centroid_match_0based += sum(tuple(p) in centroids for p in zero_based.tolist())

    assert resized == ["Misc_111"]
    assert total_targets == 533
    assert inside >= 0.95 * total_targets
    # The 1-based reading lands on the mask centroid pixel for most targets; the 0-based one rarely.
    assert centroid_match_1based >= 0.75 * total_targets
    assert centroid_match_0based <= 0.1 * total_targets
