"""Tests of the synthetic SIRST-like dataset generator."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from irstd.data import synthetic
from irstd.data.synthetic import TARGET_KINDS, SyntheticSpec, generate_synthetic, render_scene

EIGHT = np.ones((3, 3), dtype=bool)
SMALL = SyntheticSpec(num_train=8, num_test=4, height=128, width=128, seed=3)
TINY = SyntheticSpec(num_train=3, num_test=2, height=64, width=64, max_radius=8.0, seed=11)


@pytest.fixture(scope="module")
def small_root(tmp_path_factory) -> Path:
    return generate_synthetic(tmp_path_factory.mktemp("synth") / "ds", SMALL)


def _names(spec: SyntheticSpec) -> list[str]:
    return [f"synth_{i:04d}" for i in range(spec.num_train + spec.num_test)]


def _file_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _mask(root: Path, name: str) -> np.ndarray:
    return np.asarray(Image.open(root / "masks" / f"{name}.png")) > 0


def _salient_fraction(root: Path, names: list[str]) -> float:
    """Share of mask components whose mean intensity exceeds that of a ring around them."""
    wins = []
    for name in names:
        image = np.asarray(Image.open(root / "images" / f"{name}.png")).astype(float)
        mask = _mask(root, name)
        labels, count = ndimage.label(mask, structure=EIGHT)
        for k in range(1, count + 1):
            component = labels == k
            ring = ndimage.binary_dilation(component, EIGHT, iterations=4)
            ring &= ~ndimage.binary_dilation(component, EIGHT, iterations=2) & ~mask
            wins.append(image[component].mean() > image[ring].mean())
    return float(np.mean(wins))


def test_layout_and_split_files(small_root: Path) -> None:
    names = _names(SMALL)
    assert sorted(p.stem for p in (small_root / "images").glob("*.png")) == names
    assert sorted(p.stem for p in (small_root / "masks").glob("*.png")) == names
    index = small_root / "img_idx"
    assert (index / "train_synthetic.txt").read_bytes() == "".join(f"{n}\n" for n in names[:8]).encode()
    assert (index / "test_synthetic.txt").read_bytes() == "".join(f"{n}\n" for n in names[8:]).encode()
    assert sorted(json.loads((small_root / "targets.json").read_text())) == names
    assert json.loads((small_root / "synthetic.json").read_text())["spec"]["seed"] == SMALL.seed
    # The temporary generation directory was renamed away, not left beside the root.
    assert list(small_root.parent.iterdir()) == [small_root]


def test_same_seed_gives_identical_bytes_other_seed_differs(tmp_path: Path) -> None:
    first = _file_bytes(generate_synthetic(tmp_path / "a", TINY))
    second = _file_bytes(generate_synthetic(tmp_path / "b", TINY))
    assert len(first) == 2 * 5 + 2 + 2
    assert first == second
    other = _file_bytes(generate_synthetic(tmp_path / "c", replace(TINY, seed=12)))
    for name in _names(TINY):
        assert other[f"images/{name}.png"] != first[f"images/{name}.png"]


def test_image_depends_only_on_seed_and_index(tmp_path: Path) -> None:
    full = _file_bytes(generate_synthetic(tmp_path / "full", TINY))
    part = _file_bytes(generate_synthetic(tmp_path / "part", replace(TINY, num_train=1, num_test=1)))
    for name in ("synth_0000", "synth_0001"):
        assert part[f"images/{name}.png"] == full[f"images/{name}.png"]
        assert part[f"masks/{name}.png"] == full[f"masks/{name}.png"]


def test_mask_components_match_recorded_targets(small_root: Path) -> None:
    targets = json.loads((small_root / "targets.json").read_text())
    for name in _names(SMALL):
        mask_image = Image.open(small_root / "masks" / f"{name}.png")
        assert mask_image.mode == "L"
        raw = np.asarray(mask_image)
        assert set(np.unique(raw)) <= {0, 255}
        labels, count = ndimage.label(raw > 0, structure=EIGHT)
        assert count == len(targets[name])
        assert SMALL.min_targets <= count <= SMALL.max_targets
        # Each recorded target is next to its own component: components and targets pair up one-to-one.
        distance, (near_r, near_c) = ndimage.distance_transform_edt(raw == 0, return_indices=True)
        matched = set()
        for target in targets[name]:
            r, c = round(target["row"]), round(target["col"])
            assert distance[r, c] <= target["radius"] + 1
            matched.add(labels[near_r[r, c], near_c[r, c]])
            assert SMALL.min_radius <= target["radius"] <= SMALL.max_radius
            assert target["kind"] in TARGET_KINDS
            assert target["scr"] > 0
        assert matched == set(range(1, count + 1))


def test_images_are_textured_grayscale(small_root: Path) -> None:
    means = []
    for name in _names(SMALL):
        image = Image.open(small_root / "images" / f"{name}.png")
        assert image.mode == "L"
        pixels = np.asarray(image)
        assert pixels.dtype == np.uint8 and pixels.shape == (SMALL.height, SMALL.width)
        background = pixels[~_mask(small_root, name)]
        assert background.std() > 2.0
        assert np.unique(background).size > 20
        means.append(background.mean())
    # Scenes vary in brightness rather than sharing one template.
    assert np.std(means) > 3.0


def test_targets_are_locally_salient(small_root: Path) -> None:
    assert _salient_fraction(small_root, _names(SMALL)) >= 0.9


def test_render_scene_exact_target_count() -> None:
    spec = replace(SMALL, min_targets=4, max_targets=4)
    image, mask, targets = render_scene(np.random.Generator(np.random.PCG64([5, 0])), spec)
    assert image.dtype == np.uint8 and image.shape == (128, 128)
    assert mask.dtype == bool and mask.shape == (128, 128)
    assert len(targets) == 4
    assert ndimage.label(mask, structure=EIGHT)[1] == 4
    again = render_scene(np.random.Generator(np.random.PCG64([5, 0])), spec)
    assert np.array_equal(again[0], image) and np.array_equal(again[1], mask) and again[2] == targets


def test_second_call_is_noop_and_other_spec_raises(small_root: Path, monkeypatch) -> None:
    before = {p: p.stat().st_mtime_ns for p in small_root.rglob("*")}

    def must_not_render(*args, **kwargs):
        raise AssertionError("an existing matching dataset must not be regenerated")

    monkeypatch.setattr(synthetic, "render_scene", must_not_render)
    assert generate_synthetic(small_root, SMALL) == small_root
    assert {p: p.stat().st_mtime_ns for p in small_root.rglob("*")} == before
    with pytest.raises(ValueError, match=re.escape(str(small_root))):
        generate_synthetic(small_root, replace(SMALL, seed=4))


def test_existing_root_without_json_raises_but_empty_dir_is_filled(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    (root / "images").mkdir(parents=True)
    with pytest.raises(ValueError, match=re.escape(str(root))):
        generate_synthetic(root, TINY)
    empty = tmp_path / "empty"
    empty.mkdir()
    generate_synthetic(empty, TINY, progress=True)
    assert (empty / "synthetic.json").is_file()


def test_losing_a_race_keeps_the_winners_dataset(tmp_path: Path, monkeypatch) -> None:
    root = tmp_path / "ds"
    real_render = synthetic.render_scene
    rival_spec = {"spec": TINY}

    def render_after_rival_finished(rng, spec):
        # Simulates another process completing ROOT while this one is still generating.
        if rival_spec:
            generate_synthetic(root, rival_spec.pop("spec"))
        return real_render(rng, spec)

    monkeypatch.setattr(synthetic, "render_scene", render_after_rival_finished)
    assert generate_synthetic(root, TINY) == root
    assert list(tmp_path.iterdir()) == [root]

    # A rival with other parameters wins: the loser must not accept (or overwrite) its dataset.
    other = tmp_path / "other"
    rival_spec["spec"] = replace(TINY, seed=99)
    root = other
    with pytest.raises(ValueError, match=re.escape(str(other))):
        generate_synthetic(other, TINY)
    assert json.loads((other / "synthetic.json").read_text())["spec"]["seed"] == 99
    assert sorted(tmp_path.iterdir()) == [tmp_path / "ds", other]


def test_failure_leaves_nothing_behind(tmp_path: Path, monkeypatch) -> None:
    real_render = synthetic.render_scene
    calls = []

    def failing_render(rng, spec):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("boom")
        return real_render(rng, spec)

    monkeypatch.setattr(synthetic, "render_scene", failing_render)
    with pytest.raises(RuntimeError, match="boom"):
        generate_synthetic(tmp_path / "ds", TINY)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"num_train": -1}, "num_train"),
        ({"num_test": -2}, "num_test"),
        ({"num_train": 2.5}, "num_train"),
        ({"height": 31}, "height"),
        ({"width": 16}, "width"),
        ({"min_targets": -1}, "min_targets"),
        ({"min_targets": 6, "max_targets": 5}, "max_targets"),
        ({"min_radius": 0.0}, "min_radius"),
        ({"min_radius": 5.0, "max_radius": 3.0}, "max_radius"),
        ({"max_radius": 20.0, "height": 64}, "max_radius"),
        ({"seed": -1}, "seed"),
        ({"split_name": "a/b"}, "split_name"),
        ({"split_name": ""}, "split_name"),
    ],
)
def test_spec_validation_names_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises(ValueError, match=rf"SyntheticSpec\.{field}\b"):
        SyntheticSpec(**kwargs)


def test_default_spec_generates(tmp_path: Path) -> None:
    spec = SyntheticSpec()
    root = generate_synthetic(tmp_path / "default")
    train = (root / "img_idx" / "train_synthetic.txt").read_text().splitlines()
    test = (root / "img_idx" / "test_synthetic.txt").read_text().splitlines()
    assert (len(train), len(test)) == (96, 32)
    assert Image.open(root / "images" / f"{test[-1]}.png").size == (256, 256)
    targets = json.loads((root / "targets.json").read_text())
    counts = [len(v) for v in targets.values()]
    assert min(counts) >= 1 and max(counts) <= 5 and len(set(counts)) == 5
    radii = np.array([t["radius"] for v in targets.values() for t in v])
    # Skewed towards small targets like real SIRST, but large ones do occur.
    assert np.mean(radii < 4) > 0.6 and radii.max() > 6
    assert {t["kind"] for v in targets.values() for t in v} == set(TARGET_KINDS)
    assert _salient_fraction(root, train[:16]) >= 0.9
    assert generate_synthetic(root, spec) == root


def test_default_target_areas_follow_sirst() -> None:
    # SIRST's 533 mask components: 5/50/90th percentiles 7/20/66 px, 2 % of them 4 px or less.
    spec = SyntheticSpec(height=128, width=128)
    areas = []
    for index in range(40):
        _, mask, _ = render_scene(np.random.Generator(np.random.PCG64([0, index])), spec)
        labels, _ = ndimage.label(mask, structure=EIGHT)
        areas.extend(np.bincount(labels.ravel())[1:])
    low, median, high = np.percentile(areas, [5, 50, 90])
    assert 4 <= low <= 12 and 12 <= median <= 32 and 40 <= high <= 130
    assert np.mean(np.asarray(areas) <= 4) < 0.08
