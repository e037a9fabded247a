"""`irstd-data import`: clicks from CSV, COCO, CVAT, Label Studio and LabelMe files, checked into ROOT/clicks.json."""

from __future__ import annotations

import io
import json
import math
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np
import pytest
from matplotlib.path import Path as Polygon
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from irstd.cli.data import main
from irstd.data.annotations import (
    AnnotationError,
    label_studio_image_name,
    polygon_centroid,
    read_annotations,
)
from irstd.data.clicks import CLICKS_FILE, clicks_to_points, read_clicks, write_clicks
from irstd.data.importing import import_points
from irstd.data.sources import DatasetError

W, H = 40, 30
FRAMES = ("frame_001.png", "frame_002.png", "frame_003.png")
# an L-shaped hexagon whose area-weighted centroid (12.5, 7.5) differs from its vertex mean (13, 8)
L_SHAPE = [(10, 5), (16, 5), (16, 8), (13, 8), (13, 11), (10, 11)]


@pytest.fixture
def root(tmp_path) -> Path:
    folder = tmp_path / "ds" / "images"
    folder.mkdir(parents=True)
    for name in FRAMES:
        Image.new("L", (W, H)).save(folder / name)
    return tmp_path / "ds"


def imported(root: Path) -> dict:
    return read_clicks(root)


def write(path: Path, content) -> Path:
    path.write_text(content if isinstance(content, str) else json.dumps(content, indent=1), encoding="utf-8")
    return path


# ---- clicks.json ----------------------------------------------------------------------------------------------
def test_clicks_to_points_convention():
    # integer pixel indices (x=col, y=row) land on that pixel; the right/bottom edge belongs to the last pixel
    points = clicks_to_points([(3, 2), (3.99, 2.5), (0, 0), (W, H), (W - 0.5, 0)], (H, W))
    assert points.dtype == np.int64
    assert points.tolist() == [[2, 3], [2, 3], [0, 0], [H - 1, W - 1], [0, W - 1]]
    assert clicks_to_points([], (H, W)).shape == (0, 2)
    with pytest.raises(ValueError, match=r"\(40.5, 1.0\).*\(-0.1, 2.0\)"):
        clicks_to_points([(40.5, 1), (1, 1), (-0.1, 2)], (H, W))


def test_clicks_file_round_trip(tmp_path):
    path = write_clicks(tmp_path, {"b.png": [(1.5, 2.0)], "a.png": []}, {"tool_format": "csv"})
    assert path == tmp_path / CLICKS_FILE
    data = json.loads(path.read_text())
    assert data["format"] == "irstd-clicks" and data["version"] == 1 and "top-left corner" in data["convention"]
    assert data["provenance"] == {"tool_format": "csv"}
    assert list(data["images"]) == ["a.png", "b.png"]
    assert read_clicks(tmp_path) == {"a.png": [], "b.png": [(1.5, 2.0)]}
    assert not list(tmp_path.glob("*.tmp"))
    with pytest.raises(ValueError, match=r"non-finite click coordinates for image\(s\) \['c.png'\]"):
        write_clicks(tmp_path, {"c.png": [(1.0, math.nan)]}, {})
    assert read_clicks(tmp_path) == {"a.png": [], "b.png": [(1.5, 2.0)]}


@pytest.mark.parametrize("content, match", [
    (None, "not found"),
    ("{not json", "cannot read clicks"),
    ({"format": "other", "version": 1, "images": {}}, "not an irstd-clicks file"),
    ({"format": "irstd-clicks", "version": 2, "images": {}}, "unsupported version 2"),
    ({"format": "irstd-clicks", "version": 1, "images": []}, "\"images\" must be an object"),
    ({"format": "irstd-clicks", "version": 1, "images": {"a.png": [[1, 2, 3]]}}, r"'a.png', point 0"),
    ({"format": "irstd-clicks", "version": 1, "images": {"a.png": [[1, "2"]]}}, "two finite numbers"),
    ('{"format": "irstd-clicks", "version": 1, "images": {"a.png": [[1, NaN]]}}', "two finite numbers"),
    ({"format": "irstd-clicks", "version": 1, "images": {"a.png": [[True, 2]]}}, "two finite numbers"),
])
def test_read_clicks_rejects_bad_files(tmp_path, content, match):
    if content is not None:
        write(tmp_path / CLICKS_FILE, content)
    with pytest.raises(DatasetError, match=match) as err:
        read_clicks(tmp_path)
    assert str(tmp_path / CLICKS_FILE) in str(err.value)


def test_polygon_centroid_is_area_weighted():
    assert polygon_centroid(L_SHAPE) == pytest.approx((12.5, 7.5))
    assert polygon_centroid(L_SHAPE[::-1]) == pytest.approx((12.5, 7.5))
    assert polygon_centroid([(0, 0), (4, 4)]) == (2.0, 2.0)  # no area: the mean of the vertices


# ---- CSV ------------------------------------------------------------------------------------------------------
def test_csv_with_header_and_labels(root, tmp_path):
    path = write(tmp_path / "clicks.csv", "image,x,y,label,note\n"
                 "frame_001.png,3,2,target,first\n"
                 "frame_001.png,10.5,20.25,target,\n"
                 "frame_002.png,,,,no target here\n"
                 "frame_003.png,39.9,29.9,target,\n")
    report = import_points(root, "csv", path)
    assert imported(root) == {"frame_001.png": [(3.0, 2.0), (10.5, 20.25)], "frame_002.png": [],
                              "frame_003.png": [(39.9, 29.9)]}
    assert (report.images, report.points, report.images_without_points) == (3, 3, 1)
    assert report.converted == {"point": 3}
    assert report.path == root / CLICKS_FILE
    provenance = json.loads(report.path.read_text())["provenance"]
    assert provenance["tool_format"] == "csv" and provenance["source"] == str(path.resolve())
    assert provenance["counts"]["points"] == 3 and len(provenance["source_sha256"]) == 64


@pytest.mark.parametrize("text", [
    "frame_001.png\t3\t2\nframe_002.png\t4.5\t5\nframe_003.png\t6\t7\n",          # tab, no header
    "image;x;y\nframe_001.png;3;2\nframe_002.png;4,5;5\nframe_003.png;6;7\n",      # semicolon, decimal comma
    "\ufeffIMAGE, X ,Y\r\nframe_001.png,3,2\r\n\r\nframe_002.png,4.5,5\r\nframe_003.png,6,7\r\n",  # BOM, CRLF
    '"frame_001.png",3,2\n"frame_002.png",4.5,"5"\nframe_003.png,6,7\n',             # quoted fields
])
def test_csv_delimiters_and_headers_are_sniffed(root, tmp_path, text):
    import_points(root, "csv", write(tmp_path / "clicks.txt", text))
    assert imported(root) == {"frame_001.png": [(3.0, 2.0)], "frame_002.png": [(4.5, 5.0)],
                              "frame_003.png": [(6.0, 7.0)]}


def test_csv_header_without_required_columns(tmp_path):
    path = write(tmp_path / "bad.csv", "file,col,row\na.png,1,2\n")
    with pytest.raises(AnnotationError, match=r"bad.csv: the header row .* lacks the column\(s\) \['image', 'x', 'y'"):
        read_annotations("csv", path)


# ---- COCO -----------------------------------------------------------------------------------------------------
def coco_file(tmp_path: Path) -> Path:
    mask = np.zeros((H, W), dtype=np.uint8, order="F")
    mask[10:12, 20:24] = 1  # pixel centres: x 20.5..23.5, y 10.5..11.5 -> centroid (22, 11)
    rle = mask_utils.encode(mask)
    rle["counts"] = rle["counts"].decode("ascii")
    polygon = [float(v) for xy in L_SHAPE for v in xy]
    data = {
        "info": {"description": "test", "version": "1.0", "year": 2024, "contributor": "", "url": "",
                 "date_created": "2024-01-01"},
        "licenses": [{"id": 1, "name": "CC-BY", "url": ""}],
        "images": [
            {"id": 1, "file_name": "frame_001.png", "width": W, "height": H, "license": 1},
            {"id": 2, "file_name": "subdir/frame_002.png", "width": W, "height": H, "license": 1},
            {"id": 3, "file_name": "frame_003.png", "width": W, "height": H, "license": 1},
        ],
        "annotations": [
            # keypoints first, even with a polygon and a box
            {"id": 10, "image_id": 1, "category_id": 1, "iscrowd": 0, "area": 27.0, "num_keypoints": 1,
             "keypoints": [5.0, 6.0, 2], "segmentation": [polygon], "bbox": [10.0, 5.0, 6.0, 6.0]},
            # no keypoint: the polygon's area-weighted centroid
            {"id": 11, "image_id": 1, "category_id": 1, "iscrowd": 0, "area": 27.0,
             "segmentation": [polygon], "bbox": [10.0, 5.0, 6.0, 6.0]},
            # an invisible keypoint (v=0) and no segmentation: the bbox centre
            {"id": 12, "image_id": 1, "category_id": 1, "iscrowd": 0, "area": 12.0, "num_keypoints": 0,
             "keypoints": [1.0, 1.0, 0], "segmentation": [], "bbox": [30.0, 20.0, 4.0, 3.0]},
            # RLE: the mean of the mask's pixel centres
            {"id": 13, "image_id": 2, "category_id": 1, "iscrowd": 1, "area": 8.0, "segmentation": rle,
             "bbox": [20.0, 10.0, 4.0, 2.0]},
            # two visible keypoints: their mean
            {"id": 14, "image_id": 2, "category_id": 1, "iscrowd": 0, "area": 0.0, "num_keypoints": 2,
             "keypoints": [2.0, 2.0, 1, 4.0, 6.0, 2], "bbox": [2.0, 2.0, 2.0, 4.0]},
        ],
        "categories": [{"id": 1, "name": "target", "supercategory": "target", "keypoints": ["center"],
                        "skeleton": []}],
    }
    path = write(tmp_path / "coco.json", data)
    with redirect_stdout(io.StringIO()):
        coco = COCO(str(path))  # the file is valid COCO
    assert len(coco.getAnnIds(imgIds=[1])) == 3 and coco.loadCats(1)[0]["name"] == "target"
    return path


def test_coco_rules(root, tmp_path):
    report = import_points(root, "coco", coco_file(tmp_path))
    assert imported(root) == {"frame_001.png": [(5.0, 6.0), (12.5, 7.5), (32.0, 21.5)],
                              "frame_002.png": [(22.0, 11.0), (3.0, 4.0)],
                              "frame_003.png": []}
    assert report.converted == {"keypoint": 2, "polygon centroid": 1, "box centroid": 1, "mask centroid": 1}
    assert report.images_without_points == 1


def test_coco_uncompressed_rle(tmp_path):
    data = json.loads(coco_file(tmp_path).read_text())
    # column-major runs on a 5x6 mask: 7 off, 2 on (rows 2-3 of col 1), 3 off, 2 on (rows 2-3 of col 2), 16 off
    data["annotations"] = [{"id": 1, "image_id": 1, "category_id": 1, "iscrowd": 1, "area": 4.0, "bbox": [1, 0, 2, 4],
                            "segmentation": {"size": [5, 6], "counts": [7, 2, 3, 2, 16]}}]
    found = read_annotations("coco", write(tmp_path / "rle.json", data))
    assert [(c.x, c.y, c.source) for c in found.clicks] == [(2.0, 3.0, "mask centroid")]


def test_coco_errors_name_file_image_and_annotation(root, tmp_path):
    data = json.loads(coco_file(tmp_path).read_text())
    data["annotations"].append({"id": 99, "image_id": 1, "category_id": 7, "iscrowd": 0, "bbox": [1, 1, 1, 1]})
    data["annotations"].append({"id": 98, "image_id": 42, "category_id": 1, "iscrowd": 0, "bbox": [1, 1, 1, 1]})
    path = write(tmp_path / "broken.json", data)
    with pytest.raises(DatasetError) as err:
        import_points(root, "coco", path)
    message = str(err.value)
    assert f"{path}: image 'frame_001.png', annotation id 99: category_id 7 is not in \"categories\"" in message
    assert f"{path}: annotation id 98: image_id 42 is not in \"images\"" in message
    assert not (root / CLICKS_FILE).exists()


def test_coco_malformed_file_is_rejected_via_pycocotools(root, tmp_path):
    bad = write(tmp_path / "bad.json", {"images": [{"id": 1, "file_name": "a.png"}],
                                        "annotations": [{"id": 1, "category_id": 1}]})  # no image_id
    with pytest.raises(AnnotationError, match=r"bad.json: not a valid COCO file \(pycocotools: KeyError"):
        read_annotations("coco", bad)
    with pytest.raises(DatasetError, match="cannot read JSON|not a valid COCO"):
        import_points(root, "coco", write(tmp_path / "trunc.json", '{"images": ['))


# ---- CVAT -----------------------------------------------------------------------------------------------------
CVAT = """<?xml version="1.0" encoding="utf-8"?>
<annotations>
  <version>1.1</version>
  <meta>
    <task>
      <id>7</id><name>ir</name><size>3</size><mode>annotation</mode><overlap>0</overlap>
      <created>2024-01-01 00:00:00+00:00</created><updated>2024-01-01 00:00:00+00:00</updated>
      <labels><label><name>target</name><color>#ff0000</color><type>any</type><attributes/></label></labels>
      <segments><segment><id>1</id><start>0</start><stop>2</stop><url>http://localhost/?id=1</url></segment></segments>
      <owner><username>me</username><email></email></owner>
    </task>
    <dumped>2024-01-01 00:00:00+00:00</dumped>
  </meta>
  <image id="0" name="frame_001.png" width="40" height="30">
    <points label="target" source="manual" occluded="0" points="3.00,2.00;10.50,20.25" z_order="0"/>
    <box label="target" source="manual" occluded="0" xtl="30.00" ytl="20.00" xbr="34.00" ybr="23.00" z_order="0"/>
    <tag label="target" source="manual"/>
  </image>
  <image id="1" name="frame_002.png" width="40" height="30">
    <polygon label="target" source="manual" occluded="0" points="{polygon}" z_order="0"/>
  </image>
  <image id="2" name="frame_003.png" width="40" height="30">
  </image>
</annotations>
""".replace("{polygon}", ";".join(f"{x},{y}" for x, y in L_SHAPE))


def test_cvat_rules(root, tmp_path):
    report = import_points(root, "cvat", write(tmp_path / "annotations.xml", CVAT))
    assert imported(root) == {"frame_001.png": [(3.0, 2.0), (10.5, 20.25), (32.0, 21.5)],
                              "frame_002.png": [(12.5, 7.5)], "frame_003.png": []}
    assert report.converted == {"point": 2, "box centroid": 1, "polygon centroid": 1}


def test_cvat_refuses_dtd_and_other_exports(tmp_path):
    bomb = '<?xml version="1.0"?>\n<!DOCTYPE a [<!ENTITY x "xx">]>\n<annotations><version>1.1</version></annotations>'
    with pytest.raises(AnnotationError, match="bomb.xml: contains a DTD"):
        read_annotations("cvat", write(tmp_path / "bomb.xml", bomb))
    with pytest.raises(AnnotationError, match="not a CVAT 1.1 export"):
        read_annotations("cvat", write(tmp_path / "voc.xml", "<annotation><folder/></annotation>"))
    video = "<annotations><version>1.1</version><track id='0' label='t'/></annotations>"
    with pytest.raises(AnnotationError, match="CVAT for video"):
        read_annotations("cvat", write(tmp_path / "video.xml", video))
    with pytest.raises(AnnotationError, match="not well-formed"):
        read_annotations("cvat", write(tmp_path / "cut.xml", CVAT[:300]))


def test_cvat_bad_shape_names_image_and_shape(root, tmp_path):
    text = CVAT.replace('points="3.00,2.00;10.50,20.25"', 'points="3.00;oops"')
    path = write(tmp_path / "annotations.xml", text)
    with pytest.raises(DatasetError, match=r"annotations.xml: image 'frame_001.png', annotation <points> #1 of "
                                           r"image id 0: points must be"):
        import_points(root, "cvat", path)
    report = import_points(root, "cvat", path, policy="skip")
    # the image lost a target: it is left out whole rather than trained with that target as background
    assert sorted(imported(root)) == ["frame_002.png", "frame_003.png"]
    assert [p.image for p in report.skipped] == ["frame_001.png"]


# ---- Label Studio ---------------------------------------------------------------------------------------------
def ls_result(kind: str, value: dict, result_id: str, label: str = "target") -> dict:
    return {"original_width": W, "original_height": H, "image_rotation": 0, "value": {**value, kind: [label]},
            "id": result_id, "from_name": "label", "to_name": "image", "type": kind, "origin": "manual"}


def ls_task(task_id: int, image: str, annotations: list[dict]) -> dict:
    return {"id": task_id, "annotations": annotations, "file_upload": image.rsplit("/", 1)[-1], "drafts": [],
            "predictions": [], "data": {"image": image}, "meta": {}, "created_at": "2024-01-01T00:00:00.000000Z",
            "updated_at": "2024-01-02T00:00:00.000000Z", "inner_id": task_id, "total_annotations": len(annotations),
            "cancelled_annotations": 0, "total_predictions": 0, "comment_count": 0, "unresolved_comment_count": 0,
            "last_comment_updated_at": None, "project": 1, "updated_by": 1, "comment_authors": []}


def ls_annotation(annotation_id: int, results: list[dict], updated: str, cancelled: bool = False) -> dict:
    return {"id": annotation_id, "completed_by": 1, "result": results, "was_cancelled": cancelled,
            "ground_truth": False, "created_at": "2024-01-01T00:00:00.000000Z", "updated_at": updated,
            "draft_created_at": None, "lead_time": 12.5, "prediction": {}, "result_count": len(results),
            "unique_id": f"u{annotation_id}", "import_id": None, "last_action": None, "task": 1, "project": 1,
            "updated_by": 1, "parent_prediction": None, "parent_annotation": None, "last_created_by": None}


def labelstudio_file(tmp_path: Path) -> Path:
    percent = [[100 * x / W, 100 * y / H] for x, y in L_SHAPE]
    tasks = [
        ls_task(1, "/data/upload/1/1a2b3c4d-frame_001.png", [
            ls_annotation(1, [ls_result("keypointlabels", {"x": 90.0, "y": 90.0, "width": 0.5}, "old")],
                          "2024-01-02T00:00:00.000000Z"),
            ls_annotation(2, [
                # 25% of 40 = 10, 50% of 30 = 15
                ls_result("keypointlabels", {"x": 25.0, "y": 50.0, "width": 0.5}, "kp"),
                # x 4, y 3, w 8, h 6 -> centre (8, 6)
                ls_result("rectanglelabels", {"x": 10.0, "y": 10.0, "width": 20.0, "height": 20.0,
                                              "rotation": 0}, "box"),
                # turned 90 degrees clockwise about its top-left corner (20, 3): centre (20 - 3, 3 + 4)
                ls_result("rectanglelabels", {"x": 50.0, "y": 10.0, "width": 20.0, "height": 20.0,
                                              "rotation": 90}, "turned"),
            ], "2024-01-03T00:00:00.000000Z"),
            ls_annotation(3, [], "2024-01-04T00:00:00.000000Z", cancelled=True),
        ]),
        ls_task(2, "/data/local-files/?d=ir%20frames/frame_002.png", [
            ls_annotation(4, [ls_result("polygonlabels", {"points": percent, "closed": True}, "poly")],
                          "2024-01-03T00:00:00.000000Z")]),
        ls_task(3, "http://example.com/img/frame_003.png", [ls_annotation(5, [], "2024-01-03T00:00:00.000000Z")]),
    ]
    return write(tmp_path / "project-1-at-2024.json", tasks)


def test_labelstudio_rules(root, tmp_path):
    report = import_points(root, "labelstudio", labelstudio_file(tmp_path))
    clicks = imported(root)
    assert sorted(clicks) == list(FRAMES)
    assert np.array(clicks["frame_001.png"]) == pytest.approx(np.array([(10.0, 15.0), (8.0, 6.0), (17.0, 7.0)]))
    assert np.array(clicks["frame_002.png"]) == pytest.approx(np.array([(12.5, 7.5)]))
    assert clicks["frame_003.png"] == []
    assert report.converted == {"keypoint": 1, "box centroid": 2, "polygon centroid": 1}


def test_labelstudio_image_names():
    assert label_studio_image_name("/data/upload/12/0a1b2c3d-frame_9.png") == "frame_9.png"
    assert label_studio_image_name("/data/local-files/?d=data/0a1b2c3d-frame_9.png") == "0a1b2c3d-frame_9.png"
    assert label_studio_image_name("s3://bucket/dir/frame%201.png") == "frame 1.png"


def test_labelstudio_unannotated_task_and_size_mismatch(root, tmp_path):
    tasks = json.loads(labelstudio_file(tmp_path).read_text())
    tasks[2]["annotations"] = [ls_annotation(6, [], "2024-01-03T00:00:00.000000Z", cancelled=True)]
    tasks[1]["annotations"][0]["result"][0]["original_width"] = 80
    path = write(tmp_path / "ls.json", tasks)
    with pytest.raises(DatasetError) as err:
        import_points(root, "labelstudio", path)
    message = str(err.value)
    assert "image 'frame_002.png': the file states the size 80x30 (WxH)" in message
    # only cancelled annotations: the task is not annotated
    assert "image 'frame_003.png': no annotation in" in message
    assert not (root / CLICKS_FILE).exists()


# ---- LabelMe --------------------------------------------------------------------------------------------------
def labelme(image: str, shapes: list[dict], width: int = W, height: int = H) -> dict:
    return {"version": "5.4.1", "flags": {}, "shapes": shapes, "imagePath": image, "imageData": None,
            "imageHeight": height, "imageWidth": width}


def shape(kind: str, points: list, label: str = "target") -> dict:
    return {"label": label, "points": [list(map(float, p)) for p in points], "group_id": None, "description": "",
            "shape_type": kind, "flags": {}, "mask": None}


def test_labelme_folder(root, tmp_path):
    folder = tmp_path / "labelme"
    folder.mkdir()
    write(folder / "frame_001.json", labelme("..\\images\\frame_001.png", [
        shape("point", [(3, 2)]),
        shape("rectangle", [(34, 23), (30, 20)]),   # corners in any order: centre (32, 21.5)
        shape("circle", [(20, 10), (22, 10)]),      # first point is the centre
    ]))
    write(folder / "frame_002.json", labelme("frame_002.png", [shape("polygon", L_SHAPE)]))
    write(folder / "frame_003.json", labelme("../images/frame_003.png", []))
    report = import_points(root, "labelme", folder)
    assert imported(root) == {"frame_001.png": [(3.0, 2.0), (32.0, 21.5), (20.0, 10.0)],
                              "frame_002.png": [(12.5, 7.5)], "frame_003.png": []}
    assert report.converted == {"point": 1, "box centroid": 1, "circle centroid": 1, "polygon centroid": 1}
    # a single file reads as well
    found = read_annotations("labelme", folder / "frame_002.json")
    assert [(c.image, c.annotation_id, c.source) for c in found.clicks] == [
        ("frame_002.png", "shape 1", "polygon centroid")]


def test_labelme_bad_file_in_folder_and_size_mismatch(root, tmp_path):
    folder = tmp_path / "labelme"
    folder.mkdir()
    write(folder / "frame_001.json", labelme("frame_001.png", [shape("point", [(3, 2)])]))
    write(folder / "frame_002.json", labelme("frame_002.png", [shape("point", [(3, 2)])], width=80))
    write(folder / "frame_003.json", "{ truncated")
    with pytest.raises(DatasetError) as err:
        import_points(root, "labelme", folder)
    message = str(err.value)
    assert f"{folder / 'frame_002.json'}: image 'frame_002.png': the file states the size 80x30" in message
    assert f"{folder / 'frame_003.json'}: cannot read JSON" in message
    report = import_points(root, "labelme", folder, policy="skip", unannotated="background")
    assert imported(root) == {"frame_001.png": [(3.0, 2.0)], "frame_003.png": []}
    assert len(report.skipped) == 2


# ---- outlines of points ---------------------------------------------------------------------------------------
def test_outline_containing_a_point_is_not_a_second_target(root, tmp_path):
    # how irstd-predict exports a detection: its point and the polygon tracing its pixels
    text = CVAT.replace('<polygon label="target"', '<points label="target" source="auto" occluded="0" '
                        'points="12.5,7.5" z_order="0" group_id="1"/>\n    <polygon label="target" group_id="1"')
    report = import_points(root, "cvat", write(tmp_path / "annotations.xml", text))
    assert imported(root)["frame_002.png"] == [(12.5, 7.5)]
    assert report.outlines == 1
    # a polygon of another label is not that point's outline
    other = text.replace('<polygon label="target"', '<polygon label="cloud"')
    found = read_annotations("cvat", write(tmp_path / "other.xml", other))
    assert sum(c.image == "frame_002.png" for c in found.clicks) == 2


# A U whose centroid (4.5, 51.5/13) lies in its opening, outside it; shifted by (8, 8) into frame_001.png
U_SHAPE = [(x + 8, y + 8) for x, y in [(2, 1), (3, 1), (3, 5), (6, 5), (6, 1), (7, 1), (7, 6), (2, 6)]]
U_CENTROID = (12.5, 8 + 51.5 / 13)
# a C around the U, open to the right: its centroid (888/88, 12) lies in its opening too
C_SHAPE = [(4, 4), (20, 4), (20, 6), (6, 6), (6, 18), (20, 18), (20, 20), (4, 20)]
C_CENTROID = (888 / 88, 12.0)
FAR_POINT = (32.0, 25.0)
OUTLINE_FORMATS = ["cvat", "labelstudio", "labelme", "coco"]


def shapes_file(fmt: str, tmp_path: Path, shapes: list[tuple[str, object]]) -> Path:
    """frame_001.png (40x30) holding `shapes`, each ("point", (x, y)) or ("polygon", vertices), label target, as
    the format writes them when nothing ties them together (no group_id, one region and result id each)."""
    if fmt == "cvat":
        tags = [f'<points label="target" occluded="0" points="{xy[0]},{xy[1]}" z_order="0"/>' if kind == "point"
                else f'<polygon label="target" occluded="0" points="{";".join(f"{x},{y}" for x, y in xy)}"/>'
                for kind, xy in shapes]
        start = CVAT.index('<image id="0"')
        text = CVAT[:CVAT.index(">", start) + 1] + "\n    " + "\n    ".join(tags) + "\n  " + CVAT[
            CVAT.index("</image>", start):]
        return write(tmp_path / "annotations.xml", text)
    if fmt == "labelstudio":
        results = [ls_result("keypointlabels", {"x": 100 * xy[0] / W, "y": 100 * xy[1] / H}, f"r{number}")
                   if kind == "point" else ls_result("polygonlabels", {"points": [[100 * x / W, 100 * y / H]
                                                                                  for x, y in xy]}, f"r{number}")
                   for number, (kind, xy) in enumerate(shapes)]
        tasks = [ls_task(1, "/data/upload/1/1a2b3c4d-frame_001.png",
                         [ls_annotation(1, results, "2024-01-03T00:00:00.000000Z")])]
        return write(tmp_path / "ls.json", tasks)
    if fmt == "labelme":
        return write(tmp_path / "frame_001.json", labelme("frame_001.png", [
            shape("point", [xy]) if kind == "point" else shape("polygon", xy) for kind, xy in shapes]))
    data = json.loads(coco_file(tmp_path).read_text())
    data["annotations"] = [
        {"id": number, "image_id": 1, "category_id": 1, "iscrowd": 0, "area": 0.0, "bbox": [xy[0], xy[1], 0, 0],
         "keypoints": [xy[0], xy[1], 2], "num_keypoints": 1} if kind == "point" else
        {"id": number, "image_id": 1, "category_id": 1, "iscrowd": 0, "area": abs(polygon_area(xy)),
         "bbox": [0, 0, 1, 1], "segmentation": [[float(v) for vertex in xy for v in vertex]]}
        for number, (kind, xy) in enumerate(shapes, start=1)]
    return write(tmp_path / "coco_shapes.json", data)


def polygon_area(vertices) -> float:
    x, y = np.asarray(vertices, dtype=np.float64).T
    return 0.5 * float(np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y))


def clicks_of(fmt: str, tmp_path: Path, shapes: list[tuple[str, object]]) -> tuple[list[tuple[float, float]], int]:
    """The clicks read from `shapes` on frame_001.png, sorted, and the number of outlines dropped."""
    found = read_annotations(fmt, shapes_file(fmt, tmp_path, shapes))
    assert found.problems == []
    return sorted((c.x, c.y) for c in found.clicks if c.image == "frame_001.png"), found.outlines


def square(x: float, y: float, half: float = 1.0) -> list[tuple[float, float]]:
    return [(x - half, y - half), (x + half, y - half), (x + half, y + half), (x - half, y + half)]


def same_points(clicks, expected) -> bool:
    return np.asarray(clicks).shape == np.asarray(expected).shape and np.allclose(clicks, expected, rtol=0, atol=1e-9)


def test_the_shapes_of_these_tests_hold_their_centroids_outside():
    u, c = Polygon(U_SHAPE), Polygon(C_SHAPE)
    assert polygon_centroid(U_SHAPE) == pytest.approx(U_CENTROID)
    assert polygon_centroid(C_SHAPE) == pytest.approx(C_CENTROID)
    assert not u.contains_point(U_CENTROID) and not c.contains_point(C_CENTROID)
    # the U and its centroid lie in the C's opening
    assert not c.contains_point(U_CENTROID) and not c.contains_points(U_SHAPE).any()


@pytest.mark.parametrize("fmt", OUTLINE_FORMATS)
def test_a_polygon_around_its_point_by_the_convex_hull_is_its_outline(fmt, tmp_path):
    # a U-shaped target: its centroid, the point, lies outside the polygon, inside its convex hull
    clicks, outlines = clicks_of(fmt, tmp_path, [("point", U_CENTROID), ("polygon", U_SHAPE)])
    assert same_points(clicks, [U_CENTROID]) and outlines == 1
    # with another target, point and outline, in the U's opening and over the U's centroid: the inner outline
    # contains both points but is the outline of the nearer, its own; the U's point takes the U
    inner = (12.5, 11.5)
    clicks, outlines = clicks_of(fmt, tmp_path, [("point", U_CENTROID), ("polygon", U_SHAPE), ("point", inner),
                                                 ("polygon", square(*inner))])
    assert same_points(clicks, [inner, U_CENTROID]) and outlines == 2


@pytest.mark.parametrize("fmt", OUTLINE_FORMATS)
def test_a_clicked_target_and_an_outlined_one_far_apart_stay_two(fmt, tmp_path):
    clicks, outlines = clicks_of(fmt, tmp_path, [("point", FAR_POINT), ("polygon", U_SHAPE)])
    assert same_points(clicks, [U_CENTROID, FAR_POINT]) and outlines == 0
    # the clicked one with its own outline too
    clicks, outlines = clicks_of(fmt, tmp_path, [("point", FAR_POINT), ("polygon", square(*FAR_POINT)),
                                                 ("polygon", U_SHAPE)])
    assert same_points(clicks, [U_CENTROID, FAR_POINT]) and outlines == 1


@pytest.mark.parametrize("fmt", OUTLINE_FORMATS)
def test_an_outline_around_another_target_stays_a_target(fmt, tmp_path):
    # a clicked target, outlined, inside the opening of an outlined-only C: the point has its outline already
    inner = (14.0, 12.0)
    clicks, outlines = clicks_of(fmt, tmp_path, [("polygon", C_SHAPE), ("point", inner), ("polygon", square(*inner))])
    assert same_points(clicks, [C_CENTROID, inner]) and outlines == 1
    # a U-shaped target with its point in the C's opening: the point takes one polygon, the nearest (its own)
    clicks, outlines = clicks_of(fmt, tmp_path, [("polygon", C_SHAPE), ("point", U_CENTROID), ("polygon", U_SHAPE)])
    assert same_points(clicks, [C_CENTROID, U_CENTROID]) and outlines == 1
    # a point alone in the C's opening reads as the C's centroid: indistinguishable from a C-shaped target
    clicks, outlines = clicks_of(fmt, tmp_path, [("polygon", C_SHAPE), ("point", inner)])
    assert same_points(clicks, [inner]) and outlines == 1


def cvat_shapes(tmp_path: Path, tags: list[str]) -> list[tuple[float, float, str]]:
    start = CVAT.index('<image id="0"')
    text = CVAT[:CVAT.index(">", start) + 1] + "\n    ".join(tags) + CVAT[CVAT.index("</image>", start):]
    found = read_annotations("cvat", write(tmp_path / "grouped.xml", text))
    return sorted((c.x, c.y, c.source) for c in found.clicks if c.image == "frame_001.png")


def test_cvat_group_id_ties_a_point_to_its_shapes(tmp_path):
    polygon = ";".join(f"{x},{y}" for x, y in U_SHAPE)
    # far from the point, yet of its group: the point wins, whatever the shapes
    assert cvat_shapes(tmp_path, [
        '<points label="target" points="32,25" group_id="4"/>', f'<polygon label="target" points="{polygon}" '
        'group_id="4"/>', '<ellipse label="target" cx="5" cy="5" rx="1" ry="1" group_id="4"/>',
        '<box label="target" xtl="1" ytl="20" xbr="3" ybr="22" rotation="10" group_id="4"/>']) == [(32, 25, "point")]
    # another group, group_id 0 (CVAT's "none") and another label are not the point's
    for tags in ([' group_id="4"', ' group_id="5"'], [' group_id="0"', ' group_id="0"'], ["", ""]):
        assert cvat_shapes(tmp_path, [f'<points label="target" points="32,25"{tags[0]}/>',
                                      f'<polygon label="target" points="{polygon}"{tags[1]}/>']) == [
            (*U_CENTROID, "polygon centroid"), (32, 25, "point")]
    assert len(cvat_shapes(tmp_path, ['<points label="target" points="32,25" group_id="4"/>',
                                      f'<polygon label="cloud" points="{polygon}" group_id="4"/>'])) == 2


def test_labelstudio_results_of_one_region_are_one_target(tmp_path):
    far = [[100 * x / W, 100 * y / H] for x, y in U_SHAPE]
    point = {"x": 100 * FAR_POINT[0] / W, "y": 100 * FAR_POINT[1] / H}
    nested = ls_result("polygonlabels", {"points": far}, "o") | {"parentID": "k"}
    results = [
        ls_result("keypointlabels", point, "k"),
        ls_result("polygonlabels", {"points": far}, "k"),       # the same id: the same region
        nested,                                                   # nested under the keypoint's region
        ls_result("rectanglelabels", {"x": 0, "y": 0, "width": 5, "height": 5}, "b") | {"parentID": "o"},
        ls_result("polygonlabels", {"points": far}, "x") | {"parentID": "gone"},  # no such region: its own
        ls_result("polygonlabels", {"points": far}, "c1") | {"parentID": "c2"},   # a loop, no point: two targets
        ls_result("polygonlabels", {"points": far}, "c2") | {"parentID": "c1"},
    ]
    path = write(tmp_path / "ls.json", [ls_task(1, "frame_001.png", [ls_annotation(1, results, "2024-01-03")])])
    found = read_annotations("labelstudio", path)
    assert [c.annotation_id.rsplit(" ", 1)[-1] for c in found.clicks] == ["k", "x", "c1", "c2"]
    assert found.outlines == 3


def test_labelme_group_id_ties_a_point_to_its_shapes(tmp_path):
    def grouped(kind: str, points: list, group) -> dict:
        return shape(kind, points) | {"group_id": group}

    for point_group, polygon_group, count in ((1, 1, 1), (1, 2, 2), (None, None, 2)):
        path = write(tmp_path / "frame_001.json", labelme("frame_001.png", [
            grouped("point", [FAR_POINT], point_group), grouped("polygon", U_SHAPE, polygon_group)]))
        found = read_annotations("labelme", path)
        assert len(found.clicks) == count and found.outlines == 2 - count
        assert (FAR_POINT[0], FAR_POINT[1]) in [(c.x, c.y) for c in found.clicks]


# ---- problems and policies ------------------------------------------------------------------------------------
def csv_file(tmp_path: Path, rows: str) -> Path:
    return write(tmp_path / "clicks.csv", "image,x,y,label\n" + rows)


GOOD = "frame_001.png,3,2,target\nframe_002.png,4,5,target\nframe_003.png,6,7,target\n"


@pytest.mark.parametrize("row, message", [
    ("frame_002.png,41,5,target", "(point) (x=41, y=5) lies outside the image, which is 40x30 (WxH)"),
    ("frame_002.png,4,30.5,target", "(point) (x=4, y=30.5) lies outside the image"),
    ("frame_002.png,-1,5,target", "negative coordinate (x=-1, y=5)"),
    ("frame_002.png,nan,5,target", "coordinates are not finite numbers (x=nan, y=5.0)"),
    ("frame_002.png,4,inf,target", "coordinates are not finite numbers (x=4.0, y=inf)"),
    ("frame_002.png,four,5,target", "x and y must be numbers, got 'four', '5'"),
    ("frame_002.png,4.2,5.9,target", "duplicate: on the pixel (row 5, col 4) of annotation line 3"),
    ("frame_002.png,9,9,cloud", "unknown label name 'cloud'; the import is restricted to the labels ['target']"),
    ("frame_009.png,9,9,target", "no such image in"),
])
def test_error_policy_names_file_image_annotation_and_writes_nothing(root, tmp_path, row, message):
    path = csv_file(tmp_path, GOOD + row + "\n")
    previous = write(root / CLICKS_FILE, "previous contents")
    with pytest.raises(DatasetError) as err:
        import_points(root, "csv", path, labels=["target"])
    image = row.split(",")[0]
    assert f"{path}: image '{image}', annotation line 5: {message}" in str(err.value)
    assert "nothing was written" in str(err.value)
    assert previous.read_text() == "previous contents"
    assert not list(root.glob("*.tmp"))


def test_skip_policy_leaves_out_the_image_of_a_bad_click(root, tmp_path):
    path = csv_file(tmp_path, GOOD + "frame_002.png,41,5,target\n")
    report = import_points(root, "csv", path, policy="skip")
    assert imported(root) == {"frame_001.png": [(3.0, 2.0)], "frame_003.png": [(6.0, 7.0)]}
    assert [(p.image, p.annotation_id) for p in report.skipped] == [("frame_002.png", "line 5")]
    assert "skipped 1 problem(s)" in report.to_text() and "line 5" in report.to_text()
    assert report.to_dict()["skipped"][0]["annotation_id"] == "line 5"


def test_skip_policy_drops_only_duplicates_and_unknown_labels(root, tmp_path):
    path = csv_file(tmp_path, GOOD + "frame_002.png,4.5,5.5,target\nframe_003.png,1,1,cloud\nframe_7.png,1,1,target\n")
    report = import_points(root, "csv", path, policy="skip", labels=["target"])
    assert imported(root) == {"frame_001.png": [(3.0, 2.0)], "frame_002.png": [(4.0, 5.0)],
                              "frame_003.png": [(6.0, 7.0)]}
    assert [p.annotation_id for p in report.skipped] == ["line 6", "line 5", "line 7"]


def test_merge_radius_merges_nearby_clicks(root, tmp_path):
    path = csv_file(tmp_path, GOOD + "frame_002.png,5.5,5,target\nframe_002.png,20,20,target\n")
    report = import_points(root, "csv", path, merge_radius=1.5)
    assert imported(root)["frame_002.png"] == [(4.0, 5.0), (20.0, 20.0)]
    assert report.merged == 1 and not report.skipped


@pytest.mark.parametrize("unannotated, expected", [
    ("skip", {"frame_001.png": [(3.0, 2.0)], "frame_002.png": [(4.0, 5.0)]}),
    ("background", {"frame_001.png": [(3.0, 2.0)], "frame_002.png": [(4.0, 5.0)], "frame_003.png": []}),
])
def test_unannotated_images(root, tmp_path, unannotated, expected):
    path = csv_file(tmp_path, "frame_001.png,3,2,target\nframe_002.png,4,5,target\n")
    with pytest.raises(DatasetError, match=r"images: image 'frame_003.png': no annotation in .* names this image"):
        import_points(root, "csv", path)
    report = import_points(root, "csv", path, unannotated=unannotated)
    assert imported(root) == expected
    assert report.unannotated == (["frame_003.png"] if unannotated == "skip" else [])
    assert not report.skipped


def test_images_match_by_stem_and_ambiguity_is_reported(root, tmp_path):
    path = csv_file(tmp_path, "frame_001.jpg,3,2,target\nframe_002,4,5,target\nframe_003.bmp,6,7,target\n")
    import_points(root, "csv", path)
    assert sorted(imported(root)) == list(FRAMES)
    Image.new("L", (W, H)).save(root / "images" / "frame_001.bmp")
    with pytest.raises(DatasetError, match=r"image 'frame_001.jpg', annotation line 2: matches several files"):
        import_points(root, "csv", path, unannotated="skip")


def test_unreadable_image_is_a_problem(root, tmp_path):
    (root / "images" / "frame_002.png").write_bytes(b"not a png")
    path = csv_file(tmp_path, GOOD)
    with pytest.raises(DatasetError, match=r"frame_002.png: image 'frame_002.png': cannot read the image"):
        import_points(root, "csv", path)
    import_points(root, "csv", path, policy="skip")
    assert sorted(imported(root)) == ["frame_001.png", "frame_003.png"]


def test_problem_list_is_capped(root, tmp_path):
    rows = "".join(f"frame_001.png,{100 + i},1,target\n" for i in range(60))
    with pytest.raises(DatasetError, match=r"(?s)60 problem\(s\).*\.\.\. and 10 more") as err:
        import_points(root, "csv", csv_file(tmp_path, rows), unannotated="skip")
    assert str(err.value).count("lies outside") == 50


def test_nothing_left_is_an_error(root, tmp_path):
    with pytest.raises(DatasetError, match="every image was left out"):
        import_points(root, "csv", csv_file(tmp_path, "frame_001.png,99,1,target\n"), policy="skip",
                      unannotated="skip")
    assert not (root / CLICKS_FILE).exists()


def test_imported_clicks_map_onto_pixels(root, tmp_path):
    import_points(root, "coco", coco_file(tmp_path))
    points = {name: clicks_to_points(xy, (H, W)).tolist() for name, xy in imported(root).items()}
    assert points["frame_001.png"] == [[6, 5], [7, 12], [21, 32]]
    assert all(math.isfinite(v) for xy in imported(root).values() for p in xy for v in p)


# ---- CLI ------------------------------------------------------------------------------------------------------
def test_cli_import_json_and_text(root, tmp_path, capsys):
    path = csv_file(tmp_path, GOOD)
    assert main(["import", str(root), "--from", "csv", str(path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["points"] == 3 and report["path"] == str(root / CLICKS_FILE) and report["skipped"] == []
    assert main(["import", str(root), "--from", "csv", str(path), "--labels", "target,other"]) == 0
    assert "imported 3 point(s) on 3 image(s)" in capsys.readouterr().out
    assert main(["import", str(root), "--from", "csv", str(path), "--quiet"]) == 0
    assert capsys.readouterr().out == ""


def test_cli_import_errors_exit_2(root, tmp_path, capsys):
    path = csv_file(tmp_path, GOOD + "frame_002.png,41,5,target\n")
    assert main(["import", str(root), "--from", "csv", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("irstd-data import: error: 1 problem(s)") and "line 5" in err
    assert main(["import", str(root), "--from", "yolo", str(path)]) == 2
    assert "the format must be one of csv, coco, cvat, labelstudio, labelme" in capsys.readouterr().err
    assert main(["import", str(root), "--from", "coco", str(tmp_path / "missing.json")]) == 2
    assert "missing.json not found" in capsys.readouterr().err
    assert main(["import", str(root), "--from", "csv", str(path), "--policy", "skip"]) == 0
    assert sorted(imported(root)) == ["frame_001.png", "frame_003.png"]
