"""`irstd-predict`: outputs, the detection table, bad inputs, tiling, and agreement with `irstd-eval`."""

import csv
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hydra.core.global_hydra import GlobalHydra
from PIL import Image

from conftest import SIRST, compose_config, read_png, requires_sirst, run_predict, tiny_train_overrides
from irstd.inference.evaluation import RESULT_KEYS
from irstd.inference.predict import DETECTION_COLUMNS, BadInputError, predict_images
from irstd.inference.tasks import evaluate
from irstd.ops.components import find_components
from irstd.training.run import train

ACM_WEIGHTS = Path(__file__).resolve().parents[2] / "shared" / "checkpoints" / "ACM_LESPS_centroid.pth.tar"
SIRST3_NORMALIZATION = ["data.mean=95.010", "data.std=41.511"]
BAD_FILES = {"corrupt.png", "empty.png", "notes.png", "truncated.png"}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tiny_dataset) -> Path:
    run = tmp_path_factory.mktemp("train")
    train(compose_config("train", run, tiny_train_overrides(tiny_dataset) + ["test=false"]))
    GlobalHydra.instance().clear()
    return run / "checkpoints" / "last.ckpt"


def png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def messy_folder(tmp_path, tiny_dataset) -> Path:
    """Three good images (8-bit, 16-bit in a subfolder, RGB) and four files that are not images."""
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    gray = np.asarray(Image.open(sorted((tiny_dataset / "images").iterdir())[0]).convert("L"))
    (folder / "gray.png").write_bytes(png_bytes(gray))
    (folder / "sub" / "wide.png").write_bytes(png_bytes(gray.astype(np.uint16) * 257))
    Image.fromarray(np.stack([gray] * 3, axis=-1)).save(folder / "colour.bmp")
    (folder / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    (folder / "empty.png").write_bytes(b"")
    (folder / "notes.png").write_text("not an image\n")
    whole = png_bytes(gray)
    (folder / "truncated.png").write_bytes(whole[: len(whole) // 2])
    (folder / "README.txt").write_text("ignored: not an image extension\n")
    return folder


def check_detection_table(output: Path, summary: dict) -> list[dict]:
    """The table's columns, its agreement with the JSON and the masks; returns the rows."""
    with open(output / "detections.csv", newline="") as handle:
        reader = csv.DictReader(handle)
        assert tuple(reader.fieldnames) == DETECTION_COLUMNS
        rows = list(reader)
    records = json.loads((output / "detections.json").read_text())
    assert len(records) == len(rows) == summary["detections"]
    assert [str(record["area"]) for record in records] == [row["area"] for row in rows]
    for image in summary["images"]:
        mask = read_png(output / "masks" / Path(image["image"]).with_suffix(".png")) > 0
        assert mask.shape == (image["height"], image["width"])
        mine = [r for r in records if r["image"] == image["image"]]
        assert len(mine) == image["detections"] == find_components(torch.from_numpy(mask)[None]).total
        assert sum(r["area"] for r in mine) == mask.sum()
        for r in mine:
            assert r["bbox_top"] <= r["centroid_row"] < r["bbox_bottom"] <= mask.shape[0]
            assert r["bbox_left"] <= r["centroid_col"] < r["bbox_right"] <= mask.shape[1]
            assert r["peak_score"] >= r["mean_score"] > summary["threshold"]
            assert mask[r["bbox_top"]: r["bbox_bottom"], r["bbox_left"]: r["bbox_right"]].sum() >= r["area"]
    return records


def test_a_messy_folder_predicts_the_images_and_skips_the_rest(checkpoint, messy_folder, tmp_path):
    output = tmp_path / "out"
    summary = run_predict(output, [f"ckpt_path={checkpoint}", f"input={messy_folder}", "recursive=true",
                                   "batch_size=2", "threshold=0.3"])
    good = ["colour.bmp", "gray.png", "sub/wide.png"]
    assert [image["image"] for image in summary["images"]] == good
    assert summary["images_done"] == 3 and summary["images_skipped"] == 4
    reasons = {Path(entry["file"]).name: entry["reason"] for entry in summary["skipped"]}
    assert set(reasons) == BAD_FILES
    assert "empty" in reasons["empty.png"] and "truncated" in reasons["truncated.png"]
    assert json.loads((output / "summary.json").read_text()) == summary

    for name in good:
        relative = Path(name).with_suffix(".png")
        mask, overlay = read_png(output / "masks" / relative), read_png(output / "overlays" / relative)
        with Image.open(output / "probs" / relative) as probs:
            assert probs.mode == "I;16"
            prob = np.asarray(probs) / 65535
        assert set(np.unique(mask)) <= {0, 255} and overlay.shape == (*mask.shape, 3)
        decided = np.abs(prob - 0.3) > 1 / 65535  # 16-bit rounding can only move pixels this close
        assert np.array_equal((mask > 0)[decided], (prob > 0.3)[decided])
    # the RGB frame is decoded to the same gray as the 8-bit one, so it gets the same prediction
    assert np.array_equal(read_png(output / "probs" / "colour.png"), read_png(output / "probs" / "gray.png"))
    assert not np.array_equal(read_png(output / "probs" / "sub" / "wide.png"),
                              read_png(output / "probs" / "gray.png"))  # 16-bit keeps its own range
    assert not [p for p in output.rglob("*") if p.name.endswith(".tmp")]
    check_detection_table(output, summary)


def test_strict_fails_naming_the_file(checkpoint, messy_folder, tmp_path):
    with pytest.raises(BadInputError, match=r"corrupt\.png.*strict=true"):
        run_predict(tmp_path / "out", [f"ckpt_path={checkpoint}", f"input={messy_folder}", "strict=true"])
    # a truncated file passes the header check and fails when its pixels are decoded
    folder = tmp_path / "truncated_only"
    folder.mkdir()
    shutil.copy(messy_folder / "gray.png", folder)
    shutil.copy(messy_folder / "truncated.png", folder)
    with pytest.raises(BadInputError, match=r"truncated\.png: cannot decode"):
        run_predict(tmp_path / "out2", [f"ckpt_path={checkpoint}", f"input={folder}", "strict=true"])


def test_a_folder_of_nothing_readable_fails_after_writing_the_summary(checkpoint, messy_folder, tmp_path):
    for name in ["gray.png", "colour.bmp"]:
        (messy_folder / name).unlink()
    with pytest.raises(BadInputError, match="none of the 4 input file"):
        run_predict(tmp_path / "out", [f"ckpt_path={checkpoint}", f"input={messy_folder}"])
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["images_skipped"] == 4


def test_wrong_kinds_of_checkpoint_are_named_with_what_to_do(messy_folder, tmp_path):
    released = tmp_path / "ACM_like.pth.tar"
    torch.save({"state_dict": {"model.stem.0.weight": torch.zeros(1)}}, released)
    with pytest.raises(ValueError, match=r"ACM_like\.pth\.tar is not an irstd training checkpoint.*model\.weights="):
        run_predict(tmp_path / "out", [f"ckpt_path={released}", f"input={messy_folder}"])
    garbage = tmp_path / "random.ckpt"
    garbage.write_bytes(bytes(range(256)))
    with pytest.raises(ValueError, match=r"random\.ckpt is not a PyTorch checkpoint"):
        run_predict(tmp_path / "out", [f"ckpt_path={garbage}", f"input={messy_folder}"])


def test_input_mistakes_are_clear(checkpoint, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"input=.*nowhere does not exist"):
        run_predict(tmp_path / "out", [f"ckpt_path={checkpoint}", f"input={tmp_path / 'nowhere'}"])
    folder = tmp_path / "in"
    (folder / "deeper").mkdir(parents=True)
    (folder / "notes.txt").write_text("no images here\n")
    (folder / "deeper" / "frame.png").write_bytes(png_bytes(np.zeros((32, 32), np.uint8)))
    with pytest.raises(FileNotFoundError, match="holds no image files.*recursive=true"):
        run_predict(tmp_path / "out", [f"ckpt_path={checkpoint}", f"input={folder}"])
    with pytest.raises(ValueError, match="exactly one of ckpt_path"):
        run_predict(tmp_path / "out", [f"input={folder}"])
    with pytest.raises(ValueError, match="input=PATH"):
        run_predict(tmp_path / "out", [f"ckpt_path={checkpoint}"])


class BoxFilter(torch.nn.Module):
    """A 'network' with a 5 px receptive field: logits = 4 x the 5x5 mean (zero padding)."""

    def __init__(self):
        super().__init__()
        self.shapes = []

    def forward(self, image):
        self.shapes.append(tuple(image.shape))
        return F.avg_pool2d(image, 5, stride=1, padding=2, count_include_pad=True) * 4


def test_tiled_prediction_matches_the_whole_frame_and_finds_a_straddling_target_once(tmp_path):
    frame = np.zeros((300, 520), np.uint8)
    frame[125:131, 125:131] = 255  # across the first tile border (tile 128)
    frame[200:204, 400:404] = 255
    (tmp_path / "large.png").write_bytes(png_bytes(frame))
    results = {}
    for tile in (None, 128):
        model = BoxFilter()
        summary = predict_images(model, tmp_path / "large.png", tmp_path / f"out_{tile}", mean=100.0, std=50.0,
                                 device=torch.device("cpu"), tile_size=tile, tile_overlap=32)
        assert set(model.shapes) == ({(1, 1, 320, 544)} if tile is None else {(1, 1, 128, 128)})
        results[tile] = (read_png(tmp_path / f"out_{tile}" / "probs" / "large.png").astype(int),
                         json.loads((tmp_path / f"out_{tile}" / "detections.json").read_text()))
        assert summary["detections"] == 2
    (whole, whole_found), (tiled, tiled_found) = results[None], results[128]
    assert np.abs(whole - tiled).max() <= 1  # one 16-bit step: the blend equals the full-frame output
    assert whole_found == tiled_found and whole_found[0]["area"] >= 36


def test_cli_writes_everything_into_the_output_folder(checkpoint, messy_folder, tmp_path):
    output = tmp_path / "out"
    result = subprocess.run([sys.executable, "-m", "irstd.cli.predict", f"ckpt_path={checkpoint}",
                             f"input={messy_folder / 'gray.png'}", f"output={output}", "device=cpu"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (output / ".hydra" / "config.yaml").is_file() and (output / "predict.log").is_file()
    assert json.loads((output / "summary.json").read_text())["images_done"] == 1
    assert (output / "masks" / "gray.png").is_file() and not (tmp_path / "outputs").exists()


@requires_sirst
@pytest.mark.skipif(not ACM_WEIGHTS.is_file(), reason=f"released weights not found at {ACM_WEIGHTS}")
def test_predicted_masks_score_what_eval_scores_on_sirst(tmp_path):
    """The done check: released ACM weights on 20 SIRST test images; Pd/Fa of the written masks equal
    irstd-eval's, from the model directly and from the masks as saved predictions."""
    names = (SIRST / "img_idx" / "test_SIRST.txt").read_text().split()[:20]
    root = tmp_path / "subset"
    for folder in ("images", "masks", "img_idx"):
        (root / folder).mkdir(parents=True)
    for name in names:
        for folder in ("images", "masks"):
            shutil.copy(next((SIRST / folder).glob(f"{name}.*")), root / folder)
    (root / "img_idx" / "test_sub.txt").write_text("\n".join(names) + "\n")

    output = tmp_path / "predicted"
    summary = run_predict(output, ["model=acm", f"model.weights={ACM_WEIGHTS}", *SIRST3_NORMALIZATION,
                                   f"input={root / 'images'}"])
    assert summary["images_done"] == 20 and summary["images_skipped"] == 0
    records = check_detection_table(output, summary)

    data = ["data=sirst", f"data.root={root}", "data.split=sub", "data.loading.num_workers=0", "data.progress=false",
            "device=cpu", "roc=false"]
    scores = {}
    for source, overrides in {"model": ["model=acm", f"model.weights={ACM_WEIGHTS}", *SIRST3_NORMALIZATION],
                              "masks": [f"pred_dir={output / 'masks'}"]}.items():
        scores[source], _ = evaluate(compose_config("eval", tmp_path / f"eval_{source}", data + overrides))
        GlobalHydra.instance().clear()
    assert {key: scores["masks"][key] for key in RESULT_KEYS} == {key: scores["model"][key] for key in RESULT_KEYS}
    assert scores["model"]["targets"] > 0 and scores["model"]["found"] > 0
    # every detection is either a found target or a false alarm
    assert len(records) == scores["model"]["found"] + scores["model"]["false_targets"]
