"""`irstd-data split`: seeded train/test split files whose frames never move when frames are added."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from irstd.cli.data import main
from irstd.data.sources import read_split_file
from irstd.data.splitting import in_test, split_dataset


def frames(root: Path, names) -> Path:
    folder = root / "images"
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        Image.new("L", (4, 3)).save(folder / name)
    return root


NAMES = [f"frame_{i:04d}.png" for i in range(200)]


def sides(root: Path, name: str) -> tuple[list[str], list[str]]:
    return (read_split_file(root / "img_idx" / f"train_{name}.txt"),
            read_split_file(root / "img_idx" / f"test_{name}.txt"))


def test_split_is_seeded_sorted_and_roughly_honours_the_fraction(tmp_path):
    root = frames(tmp_path / "mydata", NAMES)
    train_file, test_file, counts = split_dataset(root, test=0.2, seed=0)
    assert train_file == root.resolve() / "img_idx" / "train_mydata.txt"
    assert test_file == root.resolve() / "img_idx" / "test_mydata.txt"
    train, test = sides(root, "mydata")
    assert counts == {"train": len(train), "test": len(test)}
    assert sorted(train + test) == [Path(n).stem for n in NAMES] and not set(train) & set(test)
    assert train == sorted(train) and test == sorted(test)
    # binomial(200, 0.2): mean 40, sd ~5.7
    assert 25 <= len(test) <= 55
    assert test == sorted(Path(n).stem for n in NAMES if in_test(n, 0, 0.2))
    # the same call again gives the same files (and is not refused)
    before = test_file.read_bytes()
    split_dataset(root, test=0.2, seed=0)
    assert test_file.read_bytes() == before


def test_adding_frames_moves_no_existing_frame(tmp_path):
    root = frames(tmp_path / "d", NAMES[:120])
    split_dataset(root, test=0.3, seed=5)
    train, test = sides(root, "d")
    frames(root, NAMES[120:])
    split_dataset(root, test=0.3, seed=5, force=True)
    train2, test2 = sides(root, "d")
    assert set(train) <= set(train2) and set(test) <= set(test2)
    assert len(train2) + len(test2) == 200


def test_seeds_differ(tmp_path):
    root = frames(tmp_path / "d", NAMES)
    split_dataset(root, seed=0, name="a")
    split_dataset(root, seed=1, name="b")
    assert sides(root, "a")[1] != sides(root, "b")[1]


def test_refusals(tmp_path):
    root = frames(tmp_path / "d", NAMES[:50])
    for bad in (0, 1, -0.1, 1.5):
        with pytest.raises(ValueError, match="test must be a fraction in"):
            split_dataset(root, test=bad)
    with pytest.raises(ValueError, match="split name must be a plain name"):
        split_dataset(root, name="../x")
    split_dataset(root, seed=0)
    with pytest.raises(ValueError, match="already exist.*force"):
        split_dataset(root, seed=3)
    split_dataset(root, seed=3, force=True)
    assert sides(root, "d")[1] == sorted(Path(n).stem for n in NAMES[:50] if in_test(n, 3, 0.2))
    (tmp_path / "empty" / "images").mkdir(parents=True)
    with pytest.raises(ValueError, match="holds no image"):
        split_dataset(tmp_path / "empty")
    with pytest.raises(ValueError, match="images not found"):
        split_dataset(tmp_path / "nowhere")
    clash = frames(tmp_path / "clash", ["a.png", "a.bmp", "b.png"])
    with pytest.raises(ValueError, match=r"several images share one: \{'a': \['a.bmp', 'a.png'\]\}"):
        split_dataset(clash)
    with pytest.raises(ValueError, match="test split of the 1 frame"):
        split_dataset(frames(tmp_path / "one", ["x.png"]), test=0.01)


def test_cli_split(tmp_path, capsys):
    root = frames(tmp_path / "d", NAMES[:40])
    assert main(["split", str(root), "--test", "0.25", "--seed", "2", "--name", "mine"]) == 0
    out = capsys.readouterr().out
    train, test = sides(root, "mine")
    assert f"({len(train)} frames)" in out and f"({len(test)} frames)" in out
    assert main(["split", str(root), "--test", "0.25", "--seed", "3", "--name", "mine"]) == 2
    assert capsys.readouterr().err.startswith("irstd-data split: error: ")
    assert main(["split", str(root), "--test", "0.25", "--seed", "3", "--name", "mine", "--force"]) == 0
    assert main(["split", str(root), "--test", "2"]) == 2
