"""`irstd-data build`: merging datasets into one (SIRST3), atomically, with a manifest."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import SIRST, requires_sirst
from irstd.cli.data import main
from irstd.data import build as build_module
from irstd.data.build import SourceSpec, parse_source


def make_source(root: Path, split: str, train: list[str], test: list[str], seed: int, xml: bool = False,
                suffixes: dict[str, str] | None = None) -> Path:
    """A dataset whose images carry one target pixel each; `suffixes` gives some images another format."""
    rng = np.random.default_rng(seed)
    for folder in ("images", "masks", "img_idx") + (("points_xml",) if xml else ()):
        (root / folder).mkdir(parents=True, exist_ok=True)
    for name in train + test:
        image = rng.integers(0, 200, (24, 32), dtype=np.uint8)
        mask = np.zeros((24, 32), np.uint8)
        row, col = rng.integers(2, 20), rng.integers(2, 28)
        image[row, col], mask[row, col] = 255, 255
        Image.fromarray(image).save(root / "images" / f"{name}{(suffixes or {}).get(name, '.png')}")
        Image.fromarray(mask).save(root / "masks" / f"{name}.png")
        if xml:
            (root / "points_xml" / f"{name}.xml").write_text(
                f"<annotation><size><width>32</width><height>24</height></size><object><point>"
                f"<x>{col + 1}</x><y>{row + 1}</y></point></object></annotation>")
    (root / "img_idx" / f"train_{split}.txt").write_text("\r\n".join(train) + "\r\n")
    (root / "img_idx" / f"test_{split}.txt").write_text("\n".join(test) + "\n")
    return root


@pytest.fixture
def sources(tmp_path) -> tuple[Path, Path]:
    # "c" is in both; "D" and "d" differ only in case, which a case-insensitive filesystem would merge
    first = make_source(tmp_path / "first", "A", ["a", "b", "c"], ["d"], seed=1, xml=True)
    second = make_source(tmp_path / "second", "orig", ["c", "e"], ["D", "f"], seed=2, suffixes={"e": ".bmp"})
    return first, second


def build(out: Path, *args: str) -> int:
    return main(["build", str(out), *args, "--quiet"])


def read_split(root: Path, split: str) -> list[str]:
    return (root / "img_idx" / f"{split}.txt").read_text().split()


def test_build_merges_renames_collisions_and_writes_a_manifest(sources, tmp_path, capsys):
    first, second = sources
    out = tmp_path / "merged" / "M2"
    assert build(out, "--source", f"A={first}", "--source", f"B={second}:orig:orig") == 0
    assert "train_M2 5, test_M2 3" in capsys.readouterr().out

    assert read_split(out, "train_M2") == ["a", "b", "A_c", "B_c", "e"]
    assert read_split(out, "test_M2") == ["A_d", "B_D", "f"]
    assert read_split(out, "test_A") == ["A_d"] and read_split(out, "test_B") == ["B_D", "f"]
    assert read_split(out, "train_A") == ["a", "b", "A_c"] and read_split(out, "train_B") == ["B_c", "e"]
    assert sorted(p.name for p in (out / "images").iterdir()) == [
        "A_c.png", "A_d.png", "B_D.png", "B_c.png", "a.png", "b.png", "e.bmp", "f.png"]
    assert (out / "images" / "B_c.png").read_bytes() == (second / "images" / "c.png").read_bytes()
    assert (out / "images" / "A_c.png").read_bytes() == (first / "images" / "c.png").read_bytes()
    assert (out / "masks" / "e.png").read_bytes() == (second / "masks" / "e.png").read_bytes()
    # the optional folder comes from the source that has it, for that source's images only
    assert sorted(p.name for p in (out / "points_xml").iterdir()) == ["A_c.xml", "A_d.xml", "a.xml", "b.xml"]

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["name"] == "M2"
    a, b = manifest["sources"]
    assert (a["name"], a["root"], a["train_split"], a["train_images"], a["test_images"]) == (
        "A", str(first), "A", 3, 1)
    assert (b["name"], b["train_split"], b["test_split"], b["train_images"], b["test_images"]) == (
        "B", "orig", "orig", 2, 2)
    assert a["renamed"] == {"c": "A_c", "d": "A_d"} and b["renamed"] == {"c": "B_c", "D": "B_D"}
    assert b["split_files"]["train_orig.txt"]["sha256"] == hashlib.sha256(
        (second / "img_idx" / "train_orig.txt").read_bytes()).hexdigest()
    assert manifest["splits"]["test_B"] == {
        "images": 2, "sha256": hashlib.sha256((out / "img_idx" / "test_B.txt").read_bytes()).hexdigest()}
    assert manifest["folders"] == {"masks": ["A", "B"], "points_xml": ["A"]}
    assert manifest["files"]["images/e.bmp"] == {
        "source": "B", "from": "images/e.bmp",
        "sha256": hashlib.sha256((second / "images" / "e.bmp").read_bytes()).hexdigest()}
    assert len(manifest["files"]) == 8 + 8 + 4
    # on one filesystem the files are hard links, not copies
    assert manifest["transfers"] == {"linked": 20, "copied": 0}
    assert (out / "images" / "a.png").stat().st_ino == (first / "images" / "a.png").stat().st_ino

    assert main(["check", str(out), "--json", "--quiet", "--strict"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["images"] == 8 and report["targets"] == 8
    assert report["splits"] == {"test_A": 1, "test_B": 2, "test_M2": 3, "train_A": 3, "train_B": 2, "train_M2": 5}


def test_same_sources_same_dataset_and_copy_mode(sources, tmp_path, capsys):
    first, second = sources
    args = ["--source", f"A={first}", "--source", f"B={second}:orig:orig", "--name", "M"]
    assert build(tmp_path / "one", *args) == 0
    assert build(tmp_path / "two", *args, "--copy") == 0
    capsys.readouterr()
    one, two = (json.loads((tmp_path / d / "manifest.json").read_text()) for d in ("one", "two"))
    assert two["transfers"] == {"linked": 0, "copied": 20}
    assert one["files"] == two["files"] and one["splits"] == two["splits"]
    assert (tmp_path / "two" / "images" / "a.png").stat().st_ino != (first / "images" / "a.png").stat().st_ino


def test_existing_out_is_replaced_only_with_force(sources, tmp_path, capsys):
    first, second = sources
    out = tmp_path / "M"
    assert build(out, "--source", f"A={first}") == 0
    assert build(out, "--source", f"B={second}:orig:orig") == 2
    assert "already exists; pass --force" in capsys.readouterr().err
    assert json.loads((out / "manifest.json").read_text())["sources"][0]["name"] == "A"

    assert build(out, "--source", f"B={second}:orig:orig", "--force") == 0
    assert [s["name"] for s in json.loads((out / "manifest.json").read_text())["sources"]] == ["B"]
    assert sorted(p.name for p in (out / "img_idx").iterdir()) == [
        "test_B.txt", "test_M.txt", "train_B.txt", "train_M.txt"]  # nothing left of the first build
    assert sorted(p.name for p in tmp_path.iterdir()) == ["M", "first", "second"]


@pytest.mark.parametrize("force", [False, True])
def test_an_interrupted_build_leaves_no_partial_dataset(sources, tmp_path, monkeypatch, force):
    first, second = sources
    out = tmp_path / "M"
    if force:
        assert build(out, "--source", f"A={first}") == 0
        before = (out / "manifest.json").read_text()
    calls = []
    place = build_module._place

    def interrupted(*args, **kwargs):
        calls.append(args)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return place(*args, **kwargs)

    monkeypatch.setattr(build_module, "_place", interrupted)
    with pytest.raises(KeyboardInterrupt):
        build(out, "--source", f"A={first}", "--source", f"B={second}:orig:orig", *(["--force"] if force else []))
    assert len(calls) == 5
    if force:
        assert (out / "manifest.json").read_text() == before  # the old dataset is untouched
    else:
        assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["first", "second"] + (["M"] if force else []))


def test_bad_sources_are_reported_by_file_before_anything_is_written(sources, tmp_path, capsys):
    first, second = sources
    (second / "images" / "f.png").write_bytes(b"")
    (first / "masks" / "b.png").write_bytes(b"not a png")
    for source in (f"A={first}", f"B={second}:orig:orig"):
        assert build(tmp_path / "M", "--source", source) == 2
        err = capsys.readouterr().err
        bad = first / "masks" / "b.png" if source.startswith("A") else second / "images" / "f.png"
        assert str(bad) in err
    assert not (tmp_path / "M").exists()

    leak = make_source(tmp_path / "leak", "L", ["x", "y"], ["y"], seed=3)
    assert build(tmp_path / "M", "--source", f"L={leak}") == 2
    assert "also in train_L.txt" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["first", "leak", "second"]


@pytest.mark.parametrize(("args", "message"), [
    (["--source", "A=FIRST", "--name", "a"], "must differ"),
    (["--source", "A=FIRST", "--source", "A=SECOND:orig:orig"], "must differ"),
    (["--source", "A/B=FIRST"], "letters, digits"),
    (["--source", "A=FIRST:A"], "give both splits"),
    (["--source", "A=FIRST:A:missing"], "test_missing.txt not found"),
])
def test_argument_mistakes_are_named(sources, tmp_path, capsys, args, message):
    first, second = sources
    args = [a.replace("FIRST", str(first)).replace("SECOND", str(second)) for a in args]
    assert build(tmp_path / "M", *args) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "M").exists()


def test_out_must_not_hold_a_source(sources, capsys):
    first, _ = sources
    assert build(first.parent, "--source", f"A={first}", "--force") == 2
    assert "would contain source A" in capsys.readouterr().err
    assert (first / "images" / "a.png").is_file()


def test_parse_source():
    assert parse_source("SIRST=/data/SIRST") == SourceSpec("SIRST", Path("/data/SIRST"), "SIRST", "SIRST")
    assert parse_source("N=/d/NUDT:trainN:testN") == SourceSpec("N", Path("/d/NUDT"), "trainN", "testN")
    assert parse_source("N=C:/d:tr:te") == SourceSpec("N", Path("C:/d"), "tr", "te")
    for bad in ("SIRST", "=/x", "N=", "N=/x::te"):
        with pytest.raises(ValueError):
            parse_source(bad)


@requires_sirst
def test_build_with_sirst_then_check(tmp_path, capsys):
    tiny = make_source(tmp_path / "tiny", "tiny", ["Misc_1", "t1"], ["t2"], seed=4)  # Misc_1 is a SIRST name too
    out = tmp_path / "SIRST2"
    assert build(out, "--source", f"SIRST={SIRST}", "--source", f"tiny={tiny}") == 0
    capsys.readouterr()
    train = read_split(out, "train_SIRST2")
    assert len(train) == 213 + 2 and train[-2:] == ["tiny_Misc_1", "t1"]
    assert ("SIRST_Misc_1" in train) != ("SIRST_Misc_1" in read_split(out, "test_SIRST"))
    assert len(read_split(out, "test_SIRST")) == 214
    assert main(["check", str(out), "--json", "--quiet"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["images"] == 427 + 3 and report["targets"] == 533 + 3
    [problem] = report["problems"]
    assert "Misc_111" in problem  # the known mask-size mismatch travels with the files
