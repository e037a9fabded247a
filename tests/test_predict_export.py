"""`irstd-predict export=...`: outlines, the COCO / CVAT / Label Studio files, the round trip through the
annotation readers, and 16-bit frames."""

import copy
import io
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hydra.core.global_hydra import GlobalHydra
from matplotlib.path import Path as Polygon
from PIL import Image
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from scipy import ndimage

from conftest import compose_config, read_png, run_predict, tiny_train_overrides
from irstd.data.annotations import POINT_SOURCES, read_annotations
from irstd.data.clicks import read_clicks
from irstd.data.datamodule import IRSTDDataModule
from irstd.data.importing import import_points
from irstd.data.points import label_targets
from irstd.inference.annotation_export import (
    EXPORT_FORMATS,
    ExportedImage,
    export_formats,
    outlines_of,
    polygon_area,
    to_coco,
    to_cvat,
    to_labelstudio,
    trace_outline,
    write_exports,
)
from irstd.inference.predict import detections_of, predict_images
from irstd.training.run import train

CPU = torch.device("cpu")
ALL_FORMATS = list(EXPORT_FORMATS)
# pycocotools' own use of numpy 2's __array__ protocol, not ours
COCO_NUMPY_WARNING = "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"


def random_masks(count: int, size: int = 14, seed: int = 0):
    rng = np.random.default_rng(seed)
    for _ in range(count):
        yield rng.random((size, size)) < rng.uniform(0.1, 0.6)


class BoxFilter(torch.nn.Module):
    """A 'network' with a 5 px receptive field: logits = 4 x the 5x5 mean (zero padding)."""

    def forward(self, image):
        return F.avg_pool2d(image, 5, stride=1, padding=2, count_include_pad=True) * 4


def components(mask: np.ndarray):
    labels, count = label_targets(mask)
    return [labels == number for number in range(1, count + 1)]


# ------------------------------------------------------------------------------------------------ export=


def test_export_names_are_checked():
    assert export_formats(None) == ()
    assert export_formats("cvat") == ("cvat",)
    assert export_formats(["labelstudio", "coco", "labelstudio"]) == ("labelstudio", "coco")
    for bad in ("yolo", ["coco", "voc"], True):
        with pytest.raises(ValueError, match=r"export=.*allowed values are coco, cvat, labelstudio"):
            export_formats(bad)


def test_an_unknown_export_fails_before_anything_runs(tmp_path):
    output = tmp_path / "out"
    # the checkpoint does not exist: the export error must come first, before the model loads or output is made
    with pytest.raises(ValueError, match=r"export=\['coco', 'voc'\].*\['voc'\].*allowed values"):
        run_predict(output, [f"ckpt_path={tmp_path / 'missing.ckpt'}", f"input={tmp_path}", "export=[coco,voc]"])
    assert not output.exists()


# ------------------------------------------------------------------------------------------------ outlines


def test_outline_of_simple_shapes():
    pixel = np.zeros((4, 5), bool)
    pixel[2, 3] = True
    assert trace_outline(pixel).tolist() == [[3, 2], [4, 2], [4, 3], [3, 3]]
    ell = np.zeros((4, 4), bool)
    ell[0:3, 0] = ell[2, 0:2] = True
    assert trace_outline(ell).tolist() == [[0, 0], [1, 0], [1, 2], [2, 2], [2, 3], [0, 3]]
    # two pixels touching at a corner: one polygon through that corner twice, covering both
    diagonal = np.eye(2, dtype=bool)
    outline = trace_outline(diagonal).tolist()
    assert outline.count([1, 1]) == 2 and polygon_area(np.asarray(outline)) == 2
    with pytest.raises(ValueError, match="at least one pixel"):
        trace_outline(np.zeros((3, 3), bool))


def test_outlines_cover_their_components_exactly():
    """On random masks: clockwise, axis-aligned unit-grid polygons without collinear vertices whose area and
    enclosed pixel centres are the component (holes filled); for 4-connected components without holes the area
    is the pixel count."""
    checked_plain = 0
    for mask in random_masks(150):
        height, width = mask.shape
        centres = np.stack(np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5), -1).reshape(-1, 2)
        for component, outline in zip(components(mask), outlines_of(mask), strict=True):
            filled = ndimage.binary_fill_holes(component)
            assert polygon_area(outline) == filled.sum() > 0
            inside = Polygon(outline, closed=False).contains_points(centres).reshape(mask.shape)
            assert np.array_equal(inside, filled)
            edges = np.diff(np.vstack([outline, outline[:1]]), axis=0)
            assert np.all((edges == 0).sum(axis=1) == 1)  # every edge horizontal or vertical
            after = np.roll(edges, -1, axis=0)
            turns = edges[:, 0] * after[:, 1] - edges[:, 1] * after[:, 0]
            assert np.all(turns != 0)  # no collinear vertex
            if ndimage.label(component)[1] == 1 and np.array_equal(filled, component):
                assert polygon_area(outline) == component.sum()
                checked_plain += 1
    assert checked_plain > 100


# ------------------------------------------------------------------------------------------------ formats


def inside_masks() -> dict[str, np.ndarray]:
    """Images whose detections hold their centroid: a blob, a diagonal pair (centroid on the shared corner), a
    ring (centroid in the hole, which the outline covers), one at the border; and an image without any."""
    first = np.zeros((20, 30), bool)
    first[2:5, 3:7] = True
    first[10, 10] = first[11, 11] = True
    first[12:17, 20:25] = True
    first[14, 22] = False
    second = np.zeros((16, 12), bool)
    second[13:16, 0:2] = True
    return {"a.png": first, "sub/b.tif": second, "empty.png": np.zeros((8, 8), bool)}


def u_mask() -> np.ndarray:
    """A U whose centroid lies in its opening, outside its pixels and its outline."""
    mask = np.zeros((10, 10), bool)
    mask[1:6, 2] = mask[1:6, 6] = mask[5, 2:7] = True
    return mask


def exported(masks: dict[str, np.ndarray]) -> list[ExportedImage]:
    images = []
    for name, mask in masks.items():
        probs = np.where(mask, 0.6, 0.1) + 0.3 * (np.arange(mask.size).reshape(mask.shape) % 3 == 0) * mask
        images.append(ExportedImage(name, *mask.shape, detections_of(name, mask, probs), outlines_of(mask)))
    return images


@pytest.fixture
def exported_images() -> list[ExportedImage]:
    return exported(inside_masks() | {"u.png": u_mask()})


@pytest.mark.filterwarnings(COCO_NUMPY_WARNING)
def test_coco_file_loads_in_pycocotools(exported_images, tmp_path):
    path = tmp_path / "coco.json"
    path.write_text(json.dumps(to_coco(exported_images, "net")))
    coco = COCO(str(path))
    assert coco.loadCats(1)[0]["name"] == "target" and coco.loadCats(1)[0]["keypoints"] == ["center"]
    for image in exported_images:
        [entry] = [entry for entry in coco.dataset["images"] if entry["file_name"] == image.name]
        assert (entry["height"], entry["width"]) == (image.height, image.width)
        annotations = coco.loadAnns(coco.getAnnIds(imgIds=entry["id"]))
        assert len(annotations) == len(image.detections)
        mask = np.zeros((image.height, image.width), bool)
        for annotation, found in zip(annotations, image.detections, strict=True):
            assert annotation["keypoints"] == [found.centroid_col + 0.5, found.centroid_row + 0.5, 2]
            assert annotation["num_keypoints"] == 1 and annotation["iscrowd"] == 0
            assert annotation["score"] == found.peak_score and annotation["area"] == found.area
            assert annotation["bbox"] == [found.bbox_left, found.bbox_top, found.bbox_right - found.bbox_left,
                                          found.bbox_bottom - found.bbox_top]
            drawn = coco.annToMask(annotation).astype(bool)
            rows, cols = np.nonzero(drawn)
            assert (rows.min(), cols.min(), rows.max() + 1, cols.max() + 1) == (
                found.bbox_top, found.bbox_left, found.bbox_bottom, found.bbox_right)
            mask |= drawn
        # pycocotools draws the pixels back, the ring's hole filled
        assert mask.sum() == sum(found.area for found in image.detections) + (image.name == "a.png")
    # scored as detection results against itself, every polygon matches its own: AP 1
    evaluation = COCOeval(coco, coco.loadRes(copy.deepcopy(coco.dataset["annotations"])), iouType="segm")
    evaluation.evaluate()
    evaluation.accumulate()
    evaluation.summarize()
    assert evaluation.stats[0] == pytest.approx(1.0)
    assert len(coco.getAnnIds()) == sum(len(image.detections) for image in exported_images) == 5


def test_cvat_file_has_a_point_and_a_polygon_per_detection(exported_images):
    root = ET.fromstring(to_cvat(exported_images, "net"))
    assert root.findtext("version") == "1.1"
    assert [label.findtext("name") for label in root.iter("label")] == ["target"]
    assert [a.findtext("name") for a in root.find("meta/task/labels/label/attributes")] == ["score"]
    elements = root.findall("image")
    assert [(e.get("name"), int(e.get("height")), int(e.get("width"))) for e in elements] == [
        (image.name, image.height, image.width) for image in exported_images]
    groups = set()
    for element, image in zip(elements, exported_images, strict=True):
        points, polygons = element.findall("points"), element.findall("polygon")
        assert len(points) == len(polygons) == len(image.detections)
        for point, polygon, found, outline in zip(points, polygons, image.detections, image.outlines, strict=True):
            assert [float(v) for v in point.get("points").split(",")] == [found.centroid_col + 0.5,
                                                                          found.centroid_row + 0.5]
            vertices = [[float(v) for v in pair.split(",")] for pair in polygon.get("points").split(";")]
            assert vertices == outline.tolist()
            for shape in (point, polygon):
                assert (shape.get("label"), shape.get("source"), shape.get("occluded")) == ("target", "auto", "0")
                assert float(shape.find("attribute[@name='score']").text) == found.peak_score
            assert point.get("group_id") == polygon.get("group_id") not in groups
            groups.add(point.get("group_id"))


def test_labelstudio_tasks_are_predictions_in_percent(exported_images):
    tasks = to_labelstudio(exported_images, "net")
    assert [task["data"]["image"] for task in tasks] == [image.name for image in exported_images]
    for task, image in zip(tasks, exported_images, strict=True):
        assert "annotations" not in task
        [prediction] = task["predictions"]
        assert prediction["model_version"] == "net"
        results = prediction["result"]
        assert len(results) == 2 * len(image.detections) and len({r["id"] for r in results}) == len(results)
        for point, polygon, found, outline in zip(results[::2], results[1::2], image.detections, image.outlines,
                                                  strict=True):
            assert point["type"] == "keypointlabels" and polygon["type"] == "polygonlabels"
            for result in (point, polygon):
                assert (result["original_width"], result["original_height"]) == (image.width, image.height)
                assert result["to_name"] == "image" and result["score"] == found.peak_score
            x = point["value"]["x"] * image.width / 100
            y = point["value"]["y"] * image.height / 100
            assert x == pytest.approx(found.centroid_col + 0.5) and y == pytest.approx(found.centroid_row + 0.5)
            corners = np.asarray(polygon["value"]["points"]) * [image.width, image.height] / 100
            assert np.allclose(corners, outline) and polygon["value"]["polygonlabels"] == ["target"]
        if image.detections:
            assert prediction["score"] == min(found.peak_score for found in image.detections)
        else:
            assert "score" not in prediction and results == []


def accepted_in_labelstudio(path: Path) -> None:
    """What Label Studio exports once a reviewer accepts every prediction as it is: each task's prediction
    result becomes its annotation (the reader reads annotations, the people's word, not predictions)."""
    tasks = json.loads(path.read_text())
    for number, task in enumerate(tasks, start=1):
        task["id"] = number
        task["annotations"] = [{"id": number, "result": task["predictions"][0]["result"], "was_cancelled": False}]
    path.write_text(json.dumps(tasks))


def check_round_trip(fmt: str, images: list[ExportedImage], folder: Path) -> None:
    """Each detection comes back as exactly one click at its point: the polygon is recognised as its outline."""
    path = Path(write_exports(folder, [fmt], images, "net")[fmt])
    if fmt == "labelstudio":
        accepted_in_labelstudio(path)
    read = read_annotations(fmt, path, labels=["target"])
    assert read.problems == []
    # COCO holds point and polygon in one annotation; the others as two shapes, the polygon dropped as outline
    count = sum(len(image.detections) for image in images)
    assert len(read.clicks) == count and read.outlines == (0 if fmt == "coco" else count)
    assert {click.source for click in read.clicks} <= set(POINT_SOURCES)
    assert {click.label for click in read.clicks} == {"target"}
    # the readers name images by their basename (the tools' file names)
    expected = sorted((Path(image.name).name, found.centroid_col + 0.5, found.centroid_row + 0.5)
                      for image in images for found in image.detections)
    back = sorted((click.image, click.x, click.y) for click in read.clicks)
    assert [name for name, *_ in back] == [name for name, *_ in expected]
    assert np.allclose([xy for _, *xy in back], [xy for _, *xy in expected], rtol=0, atol=1e-6)


@pytest.mark.parametrize("fmt", ALL_FORMATS)
def test_exported_points_come_back_through_the_readers(fmt, tmp_path):
    check_round_trip(fmt, exported(inside_masks()), tmp_path)


@pytest.mark.parametrize("fmt", ALL_FORMATS)
def test_a_detection_with_its_centroid_outside_comes_back_once(fmt, tmp_path):
    [image] = exported({"u.png": u_mask()})
    [found] = image.detections
    x, y = found.centroid_col + 0.5, found.centroid_row + 0.5
    assert not Polygon(image.outlines[0]).contains_point((x, y))
    check_round_trip(fmt, [image], tmp_path)


# ------------------------------------------------------------------------------------------------ predict


def png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def frame_with_targets(height: int = 60, width: int = 80) -> np.ndarray:
    rng = np.random.default_rng(5)
    frame = rng.integers(0, 60, (height, width)).astype(np.uint8)
    frame[10:14, 10:15] = 250
    frame[40:43, 60:62] = 230
    frame[30:32, 30:32] = 255
    return frame


@pytest.mark.filterwarnings(COCO_NUMPY_WARNING)
def test_predict_writes_the_exports_and_lists_them(tmp_path):
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    frame = frame_with_targets()
    (folder / "one.png").write_bytes(png_bytes(frame))
    (folder / "sub" / "two.png").write_bytes(png_bytes(frame[:40, :50].copy()))
    output = tmp_path / "out"
    summary = predict_images(BoxFilter(), folder, output, mean=60.0, std=40.0, device=CPU, recursive=True,
                             export=ALL_FORMATS, run_info={"model": "box"})
    assert summary["export"] == {fmt: str(output / "export" / name) for fmt, name in EXPORT_FORMATS.items()}
    assert json.loads((output / "summary.json").read_text())["export"] == summary["export"]
    assert not list(output.rglob("*.tmp"))
    records = json.loads((output / "detections.json").read_text())
    assert len(records) == summary["detections"] >= 3

    coco = COCO(summary["export"]["coco"])
    assert [(e["file_name"], e["height"], e["width"]) for e in coco.dataset["images"]] == [
        (e["image"], e["height"], e["width"]) for e in summary["images"]]
    assert [a["keypoints"][:2] for a in coco.dataset["annotations"]] == [
        [r["centroid_col"] + 0.5, r["centroid_row"] + 0.5] for r in records]
    for annotation in coco.dataset["annotations"]:
        name = coco.imgs[annotation["image_id"]]["file_name"]
        mask = read_png(output / "masks" / name) > 0
        drawn = coco.annToMask(annotation).astype(bool)
        assert drawn.sum() == annotation["area"] and np.all(mask[drawn])  # no holes in these blobs
    root = ET.parse(summary["export"]["cvat"]).getroot()
    assert len(root.findall("image/points")) == len(root.findall("image/polygon")) == len(records)
    tasks = json.loads(Path(summary["export"]["labelstudio"]).read_text())
    assert {task["predictions"][0]["model_version"] for task in tasks} == {"box"}
    assert sum(len(task["predictions"][0]["result"]) for task in tasks) == 2 * len(records)


@pytest.mark.filterwarnings(COCO_NUMPY_WARNING)
def test_reviewed_exports_import_as_the_detections_points(tmp_path):
    """The whole loop on a dataset folder: predict its images, accept every detection in the tool, import the
    tool's file with `irstd-data import`'s function: clicks.json holds each detection's point, and the frame
    without detections comes back as a frame without target."""
    root = tmp_path / "frames"
    (root / "images").mkdir(parents=True)
    (root / "images" / "busy.png").write_bytes(png_bytes(frame_with_targets()))
    (root / "images" / "quiet.png").write_bytes(png_bytes(np.full((40, 40), 20, np.uint8)))
    output = tmp_path / "out"
    summary = predict_images(BoxFilter(), root / "images", output, mean=60.0, std=40.0, device=CPU,
                             export=ALL_FORMATS)
    records = json.loads((output / "detections.json").read_text())
    expected = sorted((r["centroid_col"] + 0.5, r["centroid_row"] + 0.5) for r in records)
    assert {r["image"] for r in records} == {"busy.png"} and len(expected) >= 3
    accepted_in_labelstudio(Path(summary["export"]["labelstudio"]))
    for fmt, path in summary["export"].items():
        report = import_points(root, fmt, path, labels=["target"])
        assert report.skipped == [] and report.points == len(expected), fmt
        clicks = read_clicks(root)
        assert clicks["quiet.png"] == [], fmt
        assert np.allclose(sorted(clicks["busy.png"]), expected, rtol=0, atol=1e-6), fmt


def test_no_export_writes_no_export_folder(tmp_path):
    (tmp_path / "frame.png").write_bytes(png_bytes(frame_with_targets()))
    summary = predict_images(BoxFilter(), tmp_path / "frame.png", tmp_path / "out", mean=60.0, std=40.0, device=CPU)
    assert summary["export"] == {} and not (tmp_path / "out" / "export").exists()
    assert summary["detections"] >= 3


# ------------------------------------------------------------------------------------------------ 16-bit


def write_16bit(folder: Path, frame16: np.ndarray) -> list[str]:
    """The frame as a 16-bit PNG, a little-endian TIFF and a big-endian TIFF; returns their names."""
    folder.mkdir(parents=True)
    Image.fromarray(frame16).save(folder / "png16.png")
    Image.fromarray(frame16).save(folder / "tif16.tif")
    Image.frombytes("I;16B", frame16.shape[::-1], frame16.astype(">u2").tobytes()).save(folder / "tif16b.tif")
    for name in ("png16.png", "tif16.tif"):
        with Image.open(folder / name) as image:
            assert image.mode == "I;16"
    return ["png16.png", "tif16.tif", "tif16b.tif"]


def test_16bit_frames_predict_as_their_8bit_originals_in_native_units(tmp_path):
    frame = frame_with_targets()
    (tmp_path / "eight").mkdir()
    (tmp_path / "eight" / "frame.png").write_bytes(png_bytes(frame))
    names = write_16bit(tmp_path / "sixteen", frame.astype(np.uint16) * 257)
    eight = predict_images(BoxFilter(), tmp_path / "eight", tmp_path / "out8", mean=60.0, std=40.0, device=CPU)
    sixteen = predict_images(BoxFilter(), tmp_path / "sixteen", tmp_path / "out16", mean=60.0 * 257,
                             std=40.0 * 257, device=CPU)
    reference = read_png(tmp_path / "out8" / "probs" / "frame.png").astype(int)
    assert 0 < reference.min() < reference.max()  # not saturated: a wrong scale would show
    records8 = json.loads((tmp_path / "out8" / "detections.json").read_text())
    records16 = json.loads((tmp_path / "out16" / "detections.json").read_text())
    assert eight["detections"] >= 3 and sixteen["detections"] == 3 * eight["detections"]
    for name in names:
        probs = read_png(tmp_path / "out16" / "probs" / Path(name).with_suffix(".png")).astype(int)
        assert np.abs(probs - reference).max() <= 1  # one 16-bit step of float rounding
        mine = [{k: v for k, v in r.items() if k != "image"} for r in records16 if r["image"] == name]
        assert mine == [{k: v for k, v in r.items() if k != "image"} for r in records8]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tiny_dataset) -> Path:
    run = tmp_path_factory.mktemp("train")
    train(compose_config("train", run, tiny_train_overrides(tiny_dataset) + ["test=false"]))
    GlobalHydra.instance().clear()
    return run / "checkpoints" / "last.ckpt"


def test_16bit_frames_take_the_normalisation_of_a_16bit_checkpoint(checkpoint, tiny_dataset, tmp_path):
    """A checkpoint trained on 16-bit data carries its statistics in 16-bit units: simulated by scaling an 8-bit
    checkpoint's x257, which must predict the x257 frames as the original predicts the 8-bit ones."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    normalization = state[IRSTDDataModule.__qualname__]
    normalization["mean"], normalization["std"] = normalization["mean"] * 257, normalization["std"] * 257
    wide = tmp_path / "wide.ckpt"
    torch.save(state, wide)
    gray = np.asarray(Image.open(sorted((tiny_dataset / "images").iterdir())[0]).convert("L"))
    (tmp_path / "eight").mkdir()
    (tmp_path / "eight" / "frame.png").write_bytes(png_bytes(gray))
    names = write_16bit(tmp_path / "sixteen", gray.astype(np.uint16) * 257)
    eight = run_predict(tmp_path / "out8", [f"ckpt_path={checkpoint}", f"input={tmp_path / 'eight'}"])
    sixteen = run_predict(tmp_path / "out16", [f"ckpt_path={wide}", f"input={tmp_path / 'sixteen'}"])
    assert sixteen["mean"] == pytest.approx(eight["mean"] * 257) and sixteen["images_done"] == 3
    reference = read_png(tmp_path / "out8" / "probs" / "frame.png").astype(int)
    assert reference.max() > reference.min()
    for name in names:
        probs = read_png(tmp_path / "out16" / "probs" / Path(name).with_suffix(".png")).astype(int)
        assert np.abs(probs - reference).max() <= 1


def test_irstd_predict_takes_export_as_one_name_or_a_list(checkpoint, tiny_dataset, tmp_path):
    images = tiny_dataset / "images"
    one = run_predict(tmp_path / "one", [f"ckpt_path={checkpoint}", f"input={images}", "export=coco"])
    assert list(one["export"]) == ["coco"] and Path(one["export"]["coco"]).is_file()
    both = run_predict(tmp_path / "both", [f"ckpt_path={checkpoint}", f"input={images}", "export=[cvat,labelstudio]"])
    assert list(both["export"]) == ["cvat", "labelstudio"]
    tasks = json.loads(Path(both["export"]["labelstudio"]).read_text())
    assert [task["data"]["image"] for task in tasks] == [image["image"] for image in both["images"]]
    assert {task["predictions"][0]["model_version"] for task in tasks} == {"last"}
