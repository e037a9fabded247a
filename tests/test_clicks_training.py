"""Training from imported point clicks (ROOT/clicks.json) on a folder without masks: label=clicks, label=auto,
data=folder, the no-mask policy (validation, testing and label quality skipped, no NaN written), 16-bit frames."""

import csv
import json
import logging
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.core.global_hydra import GlobalHydra
from PIL import Image

from conftest import compose_config
from irstd.data.label_bank import LabelBank
from irstd.data.points import map_to_points
from irstd.data.sources import DatasetError, decode_image, resolve_label_kind, scan_split
from irstd.training.run import train

SIZE = 64
FRAMES = 12
# frames without a target: their entry in clicks.json is an empty list
EMPTY = {"f03.png", "f07.png"}


def write_frame(path: Path, centre: tuple[int, int] | None, bits: int, seed: int) -> None:
    """A noisy background with a bright 5x5 blob at `centre` (row, col), at 8 or 16 bits."""
    rng = np.random.default_rng(seed)
    scale = 1 if bits == 8 else 200
    frame = rng.normal(60, 8, (SIZE, SIZE)) * scale
    if centre is not None:
        row, col = centre
        frame[row - 2:row + 3, col - 2:col + 3] = 240 * scale
    dtype = np.uint8 if bits == 8 else np.uint16
    Image.fromarray(np.clip(frame, 0, np.iinfo(dtype).max).astype(dtype)).save(path)


def make_folder(root: Path, bits: int = 8, ext: str = ".png") -> Path:
    """FRAMES frames, their clicks (x, y) at each blob's centre and split files named after the folder; no masks."""
    (root / "images").mkdir(parents=True)
    clicks, names = {}, []
    rng = np.random.default_rng(bits)
    for i in range(FRAMES):
        name = f"f{i:02d}{ext}"
        centre = None if f"f{i:02d}.png" in EMPTY else tuple(int(v) for v in rng.integers(6, SIZE - 6, 2))
        write_frame(root / "images" / name, centre, bits, seed=i)
        # a click lands anywhere in its pixel: x, y = col + 0.4, row + 0.7
        clicks[name] = [] if centre is None else [[centre[1] + 0.4, centre[0] + 0.7]]
        names.append(Path(name).stem)
    write_clicks_json(root, clicks)
    (root / "img_idx").mkdir()
    (root / "img_idx" / f"train_{root.name}.txt").write_text("\n".join(names[:9]) + "\n")
    (root / "img_idx" / f"test_{root.name}.txt").write_text("\n".join(names[9:]) + "\n")
    return root


def write_clicks_json(root: Path, clicks: dict[str, list[list[float]]]) -> None:
    (root / "clicks.json").write_text(json.dumps({"format": "irstd-clicks", "version": 1, "images": clicks}))


def read_clicks_json(root: Path) -> dict[str, list[list[float]]]:
    return json.loads((root / "clicks.json").read_text())["images"]


@pytest.fixture
def folder(tmp_path) -> Path:
    return make_folder(tmp_path / "frames")


def folder_overrides(root: Path, evolve: bool = True) -> list[str]:
    """A few seconds of CPU training on `root` through data=folder, with no label= option (auto); `evolve`: LESPS
    rounds from the second epoch on, so that the rounds' columns are written too, else fixed labels."""
    lesps = ["lesps=default", "start=epoch", "start.Tepoch=1", "label_update.f=1"] if evolve else ["lesps=off"]
    return [*lesps,
        "data=folder", f"data.root={root}",
        "data.patch_size=32", "data.batch_size=4", "data.loading.eval_batch_size=2", "data.loading.num_workers=0",
        "data.loading.persistent_workers=false", "data.progress=false",
        "model.backbone.width=4", "model.backbone.depth=2",
        "trainer=cpu", "trainer.max_epochs=2", "trainer.check_val_every_n_epoch=1",
        "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false", "trainer.log_every_n_steps=1",
    ]


def assert_no_nan_written(run: Path) -> None:
    """Every number the run wrote (metrics.json, the CSV logger's file, the LESPS rounds) is finite."""
    saved = json.loads((run / "metrics.json").read_text(), parse_constant=lambda name: pytest.fail(name))
    assert saved and all(math.isfinite(value) for value in saved.values())
    for path in (run / "csv" / "metrics.csv", run / "lesps_rounds.csv"):
        cells = [cell for row in csv.reader(path.read_text().splitlines()[1:]) for cell in row]
        assert cells and not [cell for cell in cells if cell.lower() in ("nan", "inf", "-inf")], path


# ---- the scan --------------------------------------------------------------------------------
def test_the_scan_reads_the_clicks_as_point_labels(folder):
    scan = scan_split(folder, "train", "frames", label="clicks")
    assert not scan.masks_available and not scan.problems
    assert len(scan.samples) == 9
    clicks = read_clicks_json(folder)
    for sample in scan.samples:
        points = map_to_points(sample.load_label("clicks")).tolist()
        expected = [[math.floor(y), math.floor(x)] for x, y in clicks[sample.image.name]]
        assert points == expected
        assert sample.load_mask() is None
    assert [s.image.name for s in scan.samples if not s.load_label("clicks").any()] == ["f03.png", "f07.png"]


def test_clicks_json_is_read_once_per_scan(folder, monkeypatch):
    import irstd.data.clicks as clicks_module

    calls = []
    read = clicks_module.read_clicks
    monkeypatch.setattr(clicks_module, "read_clicks", lambda root: calls.append(root) or read(root))
    scan_split(folder, "train", "frames", label="clicks")
    assert len(calls) == 1


def test_an_image_without_an_entry_is_fatal_and_can_be_skipped(folder):
    clicks = read_clicks_json(folder)
    del clicks["f01.png"]
    write_clicks_json(folder, clicks)
    scan = scan_split(folder, "train", "frames", label="clicks")
    [problem] = scan.fatal
    assert problem.file == str(folder / "clicks.json") and "f01.png" in problem.message
    with pytest.raises(DatasetError, match=r"clicks\.json.*f01\.png"):
        scan.raise_if_fatal()
    skipped = scan_split(folder, "train", "frames", label="clicks", bad_files="skip")
    assert not skipped.fatal and "f01" not in [s.name for s in skipped.samples] and len(skipped.samples) == 8


def test_a_click_outside_the_image_names_the_file_and_the_image(folder):
    clicks = read_clicks_json(folder)
    clicks["f02.png"] = [[70.0, 10.0]]  # x beyond the 64 columns
    write_clicks_json(folder, clicks)
    scan = scan_split(folder, "train", "frames", label="clicks")
    [problem] = scan.fatal
    assert problem.file == str(folder / "clicks.json")
    assert str(folder / "images" / "f02.png") in problem.message and "64x64" in problem.message
    assert [s.name for s in scan_split(folder, "train", "frames", label="clicks", bad_files="skip").samples
            if s.name == "f02"] == []


def test_the_test_split_needs_no_clicks(folder):
    (folder / "clicks.json").unlink()
    evaluation = scan_split(folder, "test", "frames")
    assert len(evaluation.samples) == 3 and not evaluation.masks_available


# ---- label=auto --------------------------------------------------------------------------------
def test_auto_picks_centroid_with_masks_else_clicks_else_says_what_to_add(folder):
    assert resolve_label_kind(folder, "auto") == "clicks"
    assert resolve_label_kind(folder, "xml") == "xml"
    (folder / "masks").mkdir()
    assert resolve_label_kind(folder, "auto") == "centroid"
    (folder / "masks").rmdir()
    (folder / "clicks.json").unlink()
    with pytest.raises(DatasetError) as info:
        resolve_label_kind(folder, "auto")
    message = str(info.value)
    for needed in (str(folder), "masks/", "clicks.json", "irstd-data import", "points_xml/", "label=xml"):
        assert needed in message, needed


# ---- split files and data=folder ---------------------------------------------------------------------
def test_a_missing_split_file_says_which_command_makes_it(folder, tmp_path):
    for split_file in (folder / "img_idx").iterdir():
        split_file.unlink()
    with pytest.raises(DatasetError, match=rf"irstd-data split {folder} --test 0\.2"):
        scan_split(folder, "train", "frames", label="clicks")
    (folder / "img_idx").rmdir()
    cfg = compose_config("train", tmp_path / "run", folder_overrides(folder))
    with pytest.raises(DatasetError, match=r"train_frames\.txt not found.*irstd-data split"):
        train(cfg)
    GlobalHydra.instance().clear()


def test_data_folder_takes_the_split_name_from_the_folder(folder, tmp_path):
    cfg = compose_config("train", tmp_path / "run", ["data=folder", f"data.root={folder}/../frames/"])
    assert cfg.data.split == "frames" and cfg.label.kind == "auto"
    GlobalHydra.instance().clear()


# ---- training with no masks --------------------------------------------------------------------------
def test_training_from_clicks_without_masks_validates_and_tests_nothing_and_writes_no_nan(folder, tmp_path, caplog):
    run = tmp_path / "run"
    cfg = compose_config("train", run, folder_overrides(folder))
    assert cfg.test and cfg.data.holdout.split == "test"  # the defaults would validate and test
    with caplog.at_level(logging.INFO):
        metrics, objects = train(cfg)
    GlobalHydra.instance().clear()
    assert objects["trainer"].current_epoch == 2 and objects["datamodule"].label_kind == "clicks"
    assert not [key for key in metrics if key.startswith(("val/", "test/", "labels/", "lesps/label_"))]
    warnings = [message for r in caplog.records if r.levelno == logging.WARNING
                and "no masks/" in (message := r.getMessage())]
    assert len(warnings) == 1 and "irstd-predict" in warnings[0] and "held-out" in warnings[0]
    assert "label=auto: training from label=clicks" in caplog.text

    assert_no_nan_written(run)
    rounds = list(csv.DictReader((run / "lesps_rounds.csv").open()))
    assert rounds and "label_iou" not in rounds[0] and float(rounds[0]["labelled_pixels"]) > 0
    # the resolved kind, wherever the run records it
    assert LabelBank(run / "label_bank").round_meta(0)["label"] == "clicks"
    resolved = (run / "config_resolved.yaml").read_text()
    assert "kind: clicks" in resolved and "requested: auto" in resolved and "label: clicks" in resolved
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert checkpoint["IRSTDDataModule"]["label"] == "clicks"
    # round 0 holds exactly the clicks
    clicks = read_clicks_json(folder)
    round_zero = LabelBank(run / "label_bank").read_round(0)
    assert map_to_points(round_zero["f00"]).tolist() == [[math.floor(y), math.floor(x)] for x, y in clicks["f00.png"]]


@pytest.mark.parametrize("overrides", [
    ["select=best", "data.holdout.fraction=0.25"],
    ["data.holdout.split=null", "label=clicks"],
], ids=["select-best-holdout", "fixed-labels-no-validation"])
def test_other_settings_that_score_against_masks_skip_too(folder, tmp_path, overrides):
    run = tmp_path / "run"
    evolve = "label=clicks" not in overrides
    metrics, objects = train(compose_config("train", run, folder_overrides(folder, evolve) + overrides))
    GlobalHydra.instance().clear()
    # nothing held out: every training image is trained on
    assert len(objects["datamodule"].train_scan.samples) == 9 and objects["datamodule"].val_scan is None
    assert not [key for key in metrics if key.startswith(("val/", "test/", "labels/", "select/"))]
    saved = json.loads((run / "metrics.json").read_text())
    assert saved and all(math.isfinite(value) for value in saved.values())
    assert "nan" not in (run / "csv" / "metrics.csv").read_text().lower()


def test_resume_keeps_the_label_kind_the_bank_was_made_from(folder, tmp_path):
    run = tmp_path / "run"
    overrides = folder_overrides(folder, evolve=False) + ["test=false"]
    train(compose_config("train", run, overrides))
    # masks appear in the folder afterwards: auto would now choose centroid, the resumed run keeps clicks
    (folder / "masks").mkdir()
    for path in (folder / "images").iterdir():
        Image.fromarray(((decode_image(path) > 200) * 255).astype(np.uint8)).save(folder / "masks" / path.name)
    last = run / "checkpoints" / "last.ckpt"
    _, objects = train(compose_config("train", run, overrides + ["trainer.max_epochs=3", f"ckpt_path={last}"]))
    assert objects["datamodule"].label_kind == "clicks" and objects["trainer"].current_epoch == 3
    with pytest.raises(DatasetError, match="made from label=clicks.*label=centroid"):
        train(compose_config("train", run, overrides + ["label=centroid", "trainer.max_epochs=4",
                                                        f"ckpt_path={last}"]))
    GlobalHydra.instance().clear()


# ---- 16-bit frames ------------------------------------------------------------------------------
@pytest.mark.parametrize("ext", [".png", ".tif"])
def test_sixteen_bit_frames_train_in_native_units(tmp_path, ext):
    root = make_folder(tmp_path / "frames16", bits=16, ext=ext)
    frames = [decode_image(path) for path in sorted((root / "images").iterdir())]
    with Image.open(next((root / "images").iterdir())) as image:
        assert image.mode.startswith("I")  # 16-bit, not squeezed to 8 bits on the way
    assert max(frame.max() for frame in frames) > 255
    run = tmp_path / "run"
    metrics, objects = train(compose_config("train", run, folder_overrides(root)))
    GlobalHydra.instance().clear()
    train_frames = frames[:9]
    stats = json.loads((run / "normalization.json").read_text())
    assert stats["mean"] == pytest.approx(np.mean([f.mean() for f in train_frames]), rel=1e-5)
    assert stats["std"] == pytest.approx(np.mean([f.std() for f in train_frames]), rel=1e-5)
    assert stats["mean"] > 255  # native units, not 0-255
    assert objects["datamodule"].label_kind == "clicks"
    # a normalised training crop is O(1), so the network saw the frames on the scale the statistics imply
    batch = next(iter(objects["datamodule"].train_dataloader()))
    assert batch["image"].abs().max() < 50 and batch["image"].std() > 0.1
    assert np.isfinite(metrics["train/loss_epoch"])
    assert_no_nan_written(run)


# ---- the command line -------------------------------------------------------------------------------------
def test_the_cli_trains_a_folder_of_clicks_with_no_label_option(folder, tmp_path):
    overrides = [o for o in folder_overrides(folder, evolve=False) if not o.startswith("trainer.max_epochs")]
    result = subprocess.run([sys.executable, "-m", "irstd.cli.train", *overrides, "trainer.max_epochs=1",
                             f"hydra.run.dir={tmp_path / 'run'}"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "irstd-predict" in result.stderr + result.stdout
    assert LabelBank(tmp_path / "run" / "label_bank").round_meta(0)["label"] == "clicks"
