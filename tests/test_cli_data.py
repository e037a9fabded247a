"""`irstd-data check|points|synthetic`: dataset report, point-label PNGs, the console script."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from irstd.cli.data import main
from irstd.data.sources import decode_image, scan_split

SIRST = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "SIRST"
requires_sirst = pytest.mark.skipif(not SIRST.is_dir(), reason=f"real SIRST dataset not found at {SIRST}")

H, W = 40, 48


def _pixels(shape, *boxes) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    for r0, c0, h, w in boxes:
        mask[r0:r0 + h, c0:c0 + w] = True
    return mask


def _save(path: Path, array: np.ndarray, mode: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if array.dtype == bool:
        array = array.astype(np.uint8) * 255
    image = Image.fromarray(array)
    (image.convert(mode) if mode else image).save(path)


def _noise(seed: int, shape=(H, W)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def _diagonal_pair() -> np.ndarray:
    mask = np.zeros((H, W), dtype=bool)
    mask[5, 5] = mask[6, 6] = True  # one 8-connected target (two 4-connected ones)
    return mask


def _singles(shape) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[2, 2] = mask[20, 30] = mask[50, 60] = True
    return mask


# name -> (image HxW, image mode, mask); targets 1 + 2 + 0 + 1 + 3 = 7,
# areas [2] + [9, 4] + [] + [25] + [1, 1, 1]
LAYOUT = {
    "a": ((H, W), "RGB", _diagonal_pair()),
    "b": ((H, W), "P", _pixels((H, W), (10, 20, 3, 3), (30, 5, 2, 2))),
    "c": ((H, W), "L", _pixels((H, W))),
    "d": ((H, W), "L", _pixels((H, W), (8, 8, 5, 5))),
    "e": ((60, 72), "L", _singles((60, 72))),
}
CENTROIDS = {"a": [(5, 5)], "b": [(11, 21), (30, 5)], "c": [], "d": [(10, 10)],
             "e": [(2, 2), (20, 30), (50, 60)]}


def make_dataset(root: Path, layout=LAYOUT, train=("a", "b", "c"), test=("d", "e"), masks=True) -> Path:
    for i, (name, (shape, mode, mask)) in enumerate(layout.items()):
        rgb = np.random.default_rng(i).integers(0, 256, (*shape, 3), dtype=np.uint8)
        image = Image.fromarray(rgb, mode="RGB")
        image = image.quantize(32) if mode == "P" else image.convert(mode)
        (root / "images").mkdir(parents=True, exist_ok=True)
        image.save(root / "images" / f"{name}.png")
        if masks:
            _save(root / "masks" / f"{name}.png", mask)
    (root / "img_idx").mkdir(parents=True, exist_ok=True)
    (root / "img_idx" / "train_tiny.txt").write_text("\r\n".join(train) + "\r\n\r\n")
    (root / "img_idx" / "test_tiny.txt").write_text("\n".join(test) + "\n")
    return root


@pytest.fixture
def dataset(tmp_path) -> Path:
    return make_dataset(tmp_path / "ds")


def run_json(capsys, *args) -> tuple[int, dict]:
    code = main(["check", *map(str, args), "--json", "--quiet"])
    return code, json.loads(capsys.readouterr().out)


# ---- check -----------------------------------------------------------------------------------
def test_check_reports_counts_sizes_modes_and_targets(dataset, capsys):
    code, report = run_json(capsys, dataset)
    assert code == 0
    assert report["root"] == str(dataset)
    assert report["images"] == 5
    assert report["splits"] == {"train_tiny": 3, "test_tiny": 2}
    assert report["sizes_wxh"] == {"48x40": 4, "72x60": 1}
    assert report["modes"] == {"L": 3, "RGB": 1, "P": 1}
    assert report["targets"] == 7
    assert report["targets_per_image"] == {"0": 1, "1": 2, "2": 1, "3": 1}
    areas = report["target_area_px"]
    assert areas["min"] == 1 and areas["max"] == 25 and areas["median"] == 2
    assert areas["mean"] == pytest.approx(43 / 7)
    assert report["problems"] == []


def test_check_text_output_and_strict(dataset, capsys):
    assert main(["check", str(dataset), "--quiet", "--strict"]) == 0
    text = capsys.readouterr().out
    assert "images: 5" in text
    assert "train_tiny: 3" in text and "test_tiny: 2" in text
    assert "48x40 (4)" in text and "72x60 (1)" in text
    assert "L (3)" in text and "RGB (1)" in text and "P (1)" in text
    assert "targets (8-connected): 7" in text
    assert "problems: 0" in text


def test_check_lists_every_problem(dataset, capsys):
    big = np.kron(LAYOUT["a"][2], np.ones((2, 2), dtype=bool))
    _save(dataset / "masks" / "a.png", big)  # same aspect: resized, a note
    _save(dataset / "masks" / "d.png", np.zeros((H, 80), dtype=bool))  # another aspect: an error
    (dataset / "images" / "c.png").write_bytes(b"")  # empty
    Image.fromarray(_noise(9), mode="L").save(dataset / "images" / "stray.png")  # in no split
    (dataset / "img_idx" / "test_tiny.txt").write_text("d\ne\nb\n")  # b in train and test

    assert main(["check", str(dataset), "--quiet", "--strict"]) == 1
    text = capsys.readouterr().out
    assert "problems: 5" in text
    for fragment in (str(dataset / "masks" / "a.png"), "mask resized", str(dataset / "masks" / "d.png"),
                     "aspect", str(dataset / "images" / "c.png"), "empty", "1 image(s) are in no split file",
                     "['stray']",
                     "in both train_tiny and test_tiny", "'b'"):
        assert fragment in text, fragment

    code, report = run_json(capsys, dataset)
    assert code == 0  # problems only change the exit status with --strict
    assert len(report["problems"]) == 5
    assert report["splits"] == {"train_tiny": 2, "test_tiny": 2}  # c and d are left out
    assert report["images"] == 3
    assert report["targets"] == 1 + 2 + 3  # a (resized back), b, e


def test_check_size_mismatch_option(dataset, capsys):
    big = np.kron(LAYOUT["b"][2], np.ones((2, 2), dtype=bool))
    _save(dataset / "masks" / "b.png", big)
    _, resized = run_json(capsys, dataset)
    _, cropped = run_json(capsys, dataset, "--size-mismatch", "crop")
    _, skipped = run_json(capsys, dataset, "--size-mismatch", "skip")
    _, errored = run_json(capsys, dataset, "--size-mismatch", "error")
    assert "mask resized" in resized["problems"][0] and resized["targets"] == 7
    # the top-left quarter of the doubled mask holds only the first (3x3 -> 6x6) target
    assert "mask cropped" in cropped["problems"][0] and cropped["targets"] == 6
    assert cropped["targets_per_image"]["1"] == 3
    assert skipped["splits"]["train_tiny"] == 2 and "skip" in skipped["problems"][0]
    assert errored["splits"]["train_tiny"] == 2 and "size_mismatch=error" in errored["problems"][0]
    for report in (resized, cropped, skipped, errored):
        [problem] = report["problems"]
        assert problem.startswith(str(dataset / "masks" / "b.png"))


def test_check_without_masks(tmp_path, capsys):
    root = make_dataset(tmp_path / "nomasks", masks=False)
    assert main(["check", str(root), "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "images: 5" in text and "no masks/ folder" in text
    _, report = run_json(capsys, root)
    assert report["targets"] == 0 and report["target_area_px"] == {}


def test_check_on_a_folder_that_is_not_a_dataset(tmp_path, capsys):
    assert main(["check", str(tmp_path / "missing"), "--quiet"]) == 2
    captured = capsys.readouterr()
    assert "no images/ folder" in captured.err and str(tmp_path / "missing") in captured.err
    assert captured.out == ""


def test_check_reports_missing_split_files(tmp_path, capsys):
    root = make_dataset(tmp_path / "nosplits")
    shutil.rmtree(root / "img_idx")
    assert main(["check", str(root), "--quiet", "--strict"]) == 1
    assert "no train_X.txt / test_X.txt split files" in capsys.readouterr().out


# ---- points ----------------------------------------------------------------------------------
def _read_points(folder: Path) -> dict[str, np.ndarray]:
    out = {}
    for path in sorted(folder.glob("*.png")):
        with Image.open(path) as image:
            assert image.mode == "L"
            out[path.stem] = np.asarray(image).copy()
    return out


def test_points_centroid_writes_official_pngs(dataset, capsys):
    assert main(["points", str(dataset), "--type", "centroid", "--quiet"]) == 0
    assert "wrote 5" in capsys.readouterr().out
    written = _read_points(dataset / "masks_centroid")
    assert sorted(written) == sorted(LAYOUT)
    for name, array in written.items():
        assert array.shape == LAYOUT[name][0]
        assert set(np.unique(array).tolist()) <= {0, 255}
        assert sorted(map(tuple, np.argwhere(array).tolist())) == sorted(CENTROIDS[name])
    assert not (dataset / "masks_coarse").exists()


def test_point_pngs_read_back_as_the_computed_labels(dataset, capsys):
    big = np.kron(LAYOUT["b"][2], np.ones((2, 2), dtype=bool))
    _save(dataset / "masks" / "b.png", big)  # points are written at the image size
    assert main(["points", str(dataset), "--type", "centroid", "--quiet"]) == 0
    assert main(["points", str(dataset), "--type", "coarse", "--seed", "3", "--quiet"]) == 0
    capsys.readouterr()
    for stage in ("train", "test"):
        for kind, computed, seed in (("centroid_png", "centroid", 0), ("coarse_png", "coarse", 3)):
            scan = scan_split(dataset, stage, "tiny", label=kind)
            scan.raise_if_fatal()
            assert len(scan.samples) == (3 if stage == "train" else 2)
            for sample in scan.samples:
                from_png = sample.load_label(kind)
                assert from_png.shape == sample.image_hw
                np.testing.assert_array_equal(from_png, sample.load_label(computed, seed=seed))
                assert from_png.sum() == len(CENTROIDS[sample.name])


def test_points_coarse_same_seed_same_files(dataset, capsys):
    def run(seed: int) -> dict[str, bytes]:
        assert main(["points", str(dataset), "--type", "coarse", "--seed", str(seed), "--quiet"]) == 0
        return {p.name: p.read_bytes() for p in sorted((dataset / "masks_coarse").glob("*.png"))}

    first, again = run(0), run(0)
    assert len(first) == 5 and first == again
    other = run(1)
    assert other != first
    for name, array in _read_points(dataset / "masks_coarse").items():
        mask = LAYOUT[name][2]
        assert set(np.unique(array).tolist()) <= {0, 255}
        assert mask[array > 0].all()  # every coarse point lies on a target
        assert (array > 0).sum() == len(CENTROIDS[name])
    capsys.readouterr()


def test_points_needs_masks_and_sound_files(tmp_path, capsys):
    root = make_dataset(tmp_path / "nomasks", masks=False)
    assert main(["points", str(root), "--type", "centroid", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "irstd-data points: error" in err and "no masks/ folder" in err
    assert not (root / "masks_centroid").exists()

    broken = make_dataset(tmp_path / "broken")
    (broken / "masks" / "d.png").write_text("not a png")
    assert main(["points", str(broken), "--type", "centroid", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert str(broken / "masks" / "d.png") in err and str(broken) in err


def test_argument_errors_exit_non_zero(dataset, capsys):
    with pytest.raises(SystemExit) as info:
        main(["points", str(dataset), "--type", "middle"])
    assert info.value.code != 0
    with pytest.raises(SystemExit):
        main(["check", str(dataset), "--size-mismatch", "stretch"])
    with pytest.raises(SystemExit):
        main([])
    capsys.readouterr()


# ---- synthetic -------------------------------------------------------------------------------
def test_synthetic_then_check(tmp_path, capsys):
    root = tmp_path / "syn"
    assert main(["synthetic", str(root), "--num-train", "3", "--num-test", "2", "--size", "64", "--quiet"]) == 0
    assert str(root) in capsys.readouterr().out
    code, report = run_json(capsys, root)
    assert code == 0 and report["images"] == 5 and report["sizes_wxh"] == {"64x64": 5}
    assert sorted(report["splits"].values()) == [2, 3] and report["problems"] == []


# ---- the installed console script ------------------------------------------------------------
def _console() -> list[str]:
    script = shutil.which("irstd-data", path=str(Path(sys.executable).parent)) or shutil.which("irstd-data")
    return [script] if script else [sys.executable, "-m", "irstd.cli.data"]


def test_console_script(dataset):
    result = subprocess.run([*_console(), "check", str(dataset), "--json", "--quiet"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["images"] == 5 and report["targets"] == 7
    result = subprocess.run([*_console(), "check", str(dataset / "nope")], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 2 and "no images/ folder" in result.stderr


# ---- the real SIRST dataset ------------------------------------------------------------------
@requires_sirst
def test_check_on_sirst(capsys):
    code, report = run_json(capsys, SIRST, "--strict")
    assert code == 1  # the Misc_111 mismatch is a problem
    assert report["images"] == 427
    assert report["splits"] == {"train_SIRST": 213, "test_SIRST": 214}
    assert report["targets"] == 533
    assert sum(report["targets_per_image"].values()) == 427
    assert set(report["modes"]) <= {"L", "RGB", "P"}
    [problem] = report["problems"]
    assert "Misc_111" in problem and "592x400" in problem and "325x220" in problem


@requires_sirst
def test_points_on_sirst_read_back_as_centroids(tmp_path, capsys):
    root = tmp_path / "SIRST"
    root.mkdir()
    for folder in ("images", "masks", "img_idx"):
        (root / folder).symlink_to(SIRST / folder, target_is_directory=True)
    assert main(["points", str(root), "--type", "centroid", "--quiet"]) == 0
    assert "wrote 427" in capsys.readouterr().out
    written = sorted((root / "masks_centroid").glob("*.png"))
    assert len(written) == 427
    # read back the split holding Misc_111 (mask 592x400 resized to its 325x220 image); the other
    # split is left out to keep the test fast
    stage = next(s for s in ("train", "test") if "Misc_111" in (root / "img_idx" / f"{s}_SIRST.txt").read_text())
    scan = scan_split(root, stage, "SIRST", label="centroid_png")
    scan.raise_if_fatal()
    assert len(scan.samples) in (213, 214)
    total = 0
    for sample in scan.samples:
        from_png = sample.load_label("centroid_png")
        np.testing.assert_array_equal(from_png, sample.load_label("centroid"))
        assert from_png.sum() >= 1  # every SIRST image holds a target
        total += int(from_png.sum())
        if sample.name == "Misc_111":
            assert decode_image(sample.point_png).shape == (220, 325)
            assert from_png.shape == (220, 325) and from_png.sum() >= 1
    assert total <= 533
