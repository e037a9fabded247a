"""Your own data, end to end, as the README's "Your own data" commands run it: a folder of frames and a CSV of
clicks (no masks) -> `irstd-data import` -> `irstd-data split` -> `irstd-train` with the default point-supervised
recipe -> `irstd-predict` on held-out frames, whose detections must be the targets. The frames are 16-bit, the
common radiometric case: TIFF to train on, PNG to predict, both in their native units throughout."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from irstd.cli.data import main as irstd_data

SIZE = 64
TRAIN_FRAMES = 24
NEW_FRAMES = 4


def write_frames(folder: Path, count: int, seed: int, ext: str) -> dict[str, tuple[int, int]]:
    """`count` noisy 16-bit frames, each with one bright 3x3 target; returns each frame's target centre (row, col)."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    centres = {}
    for index in range(count):
        frame = rng.normal(20000, 1500, (SIZE, SIZE))
        row, col = (int(v) for v in rng.integers(6, SIZE - 6, 2))
        frame[row - 1:row + 2, col - 1:col + 2] = 56000
        name = f"frame_{seed}_{index:03d}{ext}"
        Image.fromarray(np.clip(frame, 0, 65535).astype(np.uint16)).save(folder / name)
        assert Image.open(folder / name).mode.startswith("I;16")
        centres[name] = (row, col)
    return centres


def run(*command: str, cwd: Path) -> None:
    done = subprocess.run([sys.executable, "-m", *command], cwd=cwd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{command[:1]} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"


def test_frames_and_a_csv_of_clicks_train_a_detector_that_finds_new_targets(tmp_path):
    root = tmp_path / "frames"
    centres = write_frames(root / "images", TRAIN_FRAMES, seed=0, ext=".tif")
    # one click per target at its pixel's centre, written as a user's CSV with a header
    with open(tmp_path / "clicks.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "x", "y"])
        writer.writerows([name, col + 0.5, row + 0.5] for name, (row, col) in centres.items())

    assert irstd_data(["import", str(root), "--from", "csv", str(tmp_path / "clicks.csv"), "--quiet"]) == 0
    assert irstd_data(["split", str(root), "--test", "0.2", "--seed", "0"]) == 0
    assert not (root / "masks").exists() and (root / "clicks.json").is_file()

    # normalised in native units: the statistics are those of the 16-bit frames
    run_dir = tmp_path / "run"
    run("irstd.cli.train", "data=folder", f"data.root={root}", "trainer=cpu", "trainer.max_epochs=40",
        "data.patch_size=32", "data.batch_size=4", "data.loading.num_workers=0", "data.progress=false",
        "model.backbone.width=8", "model.backbone.depth=2", "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false", f"hydra.run.dir={run_dir}", cwd=tmp_path)

    assert json.loads((run_dir / "normalization.json").read_text())["mean"] > 255
    new_centres = write_frames(tmp_path / "new", NEW_FRAMES, seed=1, ext=".png")
    out = tmp_path / "predicted"
    run("irstd.cli.predict", f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}", f"input={tmp_path / 'new'}",
        f"output={out}", "export=cvat", "progress=false", cwd=tmp_path)

    detections = json.loads((out / "detections.json").read_text())
    for name, (row, col) in new_centres.items():
        found = [d for d in detections if d["image"] == name]
        assert any(abs(d["centroid_row"] - row) <= 1.5 and abs(d["centroid_col"] - col) <= 1.5 for d in found), \
            (name, (row, col), found)
    # no more than one false detection per frame on average
    assert len(detections) <= 2 * NEW_FRAMES, detections
    assert (out / "export" / "cvat.xml").is_file()
