"""Dataset sources: image decoding, split files, size-mismatch policy, validation, labels, statistics."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from irstd.data.sources import (
    DatasetError,
    Problem,
    Sample,
    SplitScan,
    bit_depth,
    decode_image,
    find_file,
    fit_mask,
    mismatch_action,
    normalization_stats,
    read_split_file,
    scan_split,
)

SIRST = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "SIRST"
requires_sirst = pytest.mark.skipif(not SIRST.is_dir(), reason=f"real SIRST dataset not found at {SIRST}")

H, W = 40, 48
# (r0, c0, height, width) of the targets every default mask holds: a 3x3 square with its
# centroid pixel at (11, 21) and a 2x2 square whose centroid (30.5, 5.5) floors to (30, 5).
TARGETS = [(10, 20, 3, 3), (30, 5, 2, 2)]
CENTROIDS = [(11, 21), (30, 5)]


# ---- helpers ---------------------------------------------------------------------------------
def box_mask(boxes=TARGETS, shape=(H, W)) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    for r0, c0, h, w in boxes:
        mask[r0:r0 + h, c0:c0 + w] = True
    return mask


def save_mask(path: Path, mask: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(mask.astype(np.uint8) * 255, mode="L").save(path)


def noise(seed: int, shape=(H, W)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def point_png(path: Path, points, shape=(H, W)) -> None:
    array = np.zeros(shape, dtype=np.uint8)
    for r, c in points:
        array[r, c] = 255
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode="L").save(path)


def write_xml(path: Path, centroids_1based, size=None) -> None:
    size_xml = (f"<size><width>{size[1]}</width><height>{size[0]}</height><depth>1</depth></size>"
                if size else "")
    objects = "".join(f"<object><name>Target</name><centroid><yc>{yc}</yc><xc>{xc}</xc></centroid></object>"
                      for yc, xc in centroids_1based)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"<annotation><filename>{path.stem}</filename>{size_xml}{objects}</annotation>")


def make_dataset(root: Path, train=("a", "b", "c"), test=("d", "e"), masks: bool = True,
                 split: str = "tiny") -> Path:
    """images/ (8-bit L noise), masks/ (TARGETS), img_idx/train_tiny.txt and test_tiny.txt."""
    (root / "images").mkdir(parents=True)
    (root / "img_idx").mkdir()
    for i, name in enumerate([*train, *test]):
        Image.fromarray(noise(i), mode="L").save(root / "images" / f"{name}.png")
        if masks:
            save_mask(root / "masks" / f"{name}.png", box_mask())
    (root / "img_idx" / f"train_{split}.txt").write_text("\n".join(train) + "\n")
    (root / "img_idx" / f"test_{split}.txt").write_text("\n".join(test) + "\n")
    return root


@pytest.fixture
def dataset(tmp_path) -> Path:
    return make_dataset(tmp_path / "ds")


def expected_map(points, shape=(H, W)) -> np.ndarray:
    out = np.zeros(shape, dtype=np.float32)
    for r, c in points:
        out[r, c] = 1.0
    return out


# ---- decoding --------------------------------------------------------------------------------
def _rgb(seed=1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (H, W, 3), dtype=np.uint8)


def _images_8bit() -> dict[str, Image.Image]:
    rgb = Image.fromarray(_rgb(), mode="RGB")
    palette = Image.new("P", (W, H))
    palette.putpalette([v for i in range(256) for v in ((i * 7) % 256, (i * 13) % 256, (255 - i) % 256)])
    palette.putdata(noise(2).ravel().tolist())
    rgba = rgb.copy()
    rgba.putalpha(Image.fromarray(noise(3), mode="L"))
    la = Image.merge("LA", (Image.fromarray(noise(4), mode="L"), Image.fromarray(noise(5), mode="L")))
    binary = Image.fromarray(box_mask()).convert("1")
    return {"L": Image.fromarray(noise(0), mode="L"), "P": palette, "RGB": rgb, "RGBA": rgba, "LA": la,
            "1": binary}


@pytest.mark.parametrize("mode", ["L", "P", "RGB", "RGBA", "LA", "1"])
@pytest.mark.parametrize("ext", [".png", ".tif"])
def test_8bit_modes_decode_to_pil_luma(tmp_path, mode, ext):
    image = _images_8bit()[mode]
    assert image.mode == mode
    path = tmp_path / f"x{ext}"
    image.save(path)
    with Image.open(path) as reopened:
        assert reopened.mode == mode
    decoded = decode_image(path)
    assert decoded.dtype == np.float32 and decoded.shape == (H, W)
    expected = np.asarray(image.convert("L"), dtype=np.float32)
    np.testing.assert_array_equal(decoded, expected)
    if mode in ("P", "RGB", "L"):
        # the reference loaders use convert('I'): the same luma values
        np.testing.assert_array_equal(decoded, np.asarray(image.convert("I"), dtype=np.float32))


def test_rgb_uses_the_itu_601_luma_weights(tmp_path):
    rgb = _rgb(7)
    Image.fromarray(rgb, mode="RGB").save(tmp_path / "x.png")
    decoded = decode_image(tmp_path / "x.png")
    luma = rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    assert np.abs(decoded - luma).max() <= 1.0
    # not the plain channel mean, not a single channel
    assert not np.allclose(decoded, rgb.mean(axis=2), atol=1.0)
    assert not np.array_equal(decoded, rgb[..., 0].astype(np.float32))


def test_mode_1_decodes_to_0_and_255(tmp_path):
    Image.fromarray(box_mask()).convert("1").save(tmp_path / "m.png")
    decoded = decode_image(tmp_path / "m.png")
    assert set(np.unique(decoded).tolist()) == {0.0, 255.0}
    np.testing.assert_array_equal(decoded > 0, box_mask())


def _wide() -> np.ndarray:
    values = (np.arange(H * W, dtype=np.int64).reshape(H, W) * 29 + 300) % 65536
    values[0, 0], values[0, 1], values[0, 2] = 40000, 65535, 0
    return values.astype(np.uint16)


@pytest.mark.parametrize("fmt", ["png", "tif", "tif-big-endian", "pgm"])
def test_16bit_images_keep_their_full_range(tmp_path, fmt):
    values = _wide()
    path = tmp_path / f"x.{fmt.split('-')[0]}"
    if fmt == "pgm":
        path.write_bytes(f"P5\n{W} {H}\n65535\n".encode() + values.astype(">u2").tobytes())
    elif fmt == "tif-big-endian":
        Image.fromarray(values.astype(">u2")).save(path)
    else:
        Image.fromarray(values).save(path)
    with Image.open(path) as image:
        mode = image.mode
    assert bit_depth(mode) in (16, 32)
    decoded = decode_image(path)
    assert decoded.dtype == np.float32 and decoded.shape == (H, W)
    assert decoded[0, 0] == 40000.0 and decoded[0, 1] == 65535.0 and decoded[0, 2] == 0.0
    np.testing.assert_array_equal(decoded, values.astype(np.float32))


def test_32bit_float_tiff_is_kept(tmp_path):
    values = np.linspace(-5.5, 1.0e5, H * W, dtype=np.float32).reshape(H, W)
    Image.fromarray(values).save(tmp_path / "x.tif")
    np.testing.assert_array_equal(decode_image(tmp_path / "x.tif"), values)


@pytest.mark.parametrize("mode", ["L", "RGB", "P"])
def test_bmp_is_decoded_exactly(tmp_path, mode):
    image = _images_8bit()[mode]
    image.save(tmp_path / "x.bmp")
    np.testing.assert_array_equal(decode_image(tmp_path / "x.bmp"),
                                  np.asarray(image.convert("L"), dtype=np.float32))


@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_jpeg_is_decoded_close_to_its_luma(tmp_path, mode):
    rows, cols = np.mgrid[0:H, 0:W]
    smooth = np.stack([rows * 5, cols * 4, 255 - rows * 3], axis=-1).astype(np.uint8)
    image = Image.fromarray(smooth, mode="RGB").convert(mode)
    image.save(tmp_path / "x.jpg", quality=95)
    decoded = decode_image(tmp_path / "x.jpg")
    expected = np.asarray(image.convert("L"), dtype=np.float32)
    assert decoded.dtype == np.float32 and decoded.shape == (H, W)
    assert np.abs(decoded - expected).mean() < 3.0
    assert np.abs(decoded - expected).max() < 30.0


def test_bit_depth():
    assert bit_depth("L") == 8 and bit_depth("RGB") == 8 and bit_depth("P") == 8
    assert bit_depth("I;16") == 16 and bit_depth("I;16B") == 16
    assert bit_depth("I") == 32 and bit_depth("F") == 32


# ---- split files -----------------------------------------------------------------------------
def test_split_file_with_crlf_blank_lines_bom_and_spaces(tmp_path):
    path = tmp_path / "train_x.txt"
    path.write_bytes("\ufeffa\r\n\r\n  b  \r\nc\t\r\n\n   \r\nd".encode())
    assert read_split_file(path) == ["a", "b", "c", "d"]


def test_scan_reads_a_messy_split_file(dataset):
    (dataset / "img_idx" / "train_tiny.txt").write_bytes(b"a \r\n\r\n b\r\nc   \r\n\r\n")
    scan = scan_split(dataset, "train", "tiny")
    assert [s.name for s in scan.samples] == ["a", "b", "c"]
    assert not scan.problems
    assert all(s.image == dataset / "images" / f"{s.name}.png" for s in scan.samples)


def test_split_names_may_carry_an_extension_and_other_formats_are_found(dataset):
    Image.fromarray(noise(9), mode="L").save(dataset / "images" / "f.bmp")
    save_mask(dataset / "masks" / "f.png", box_mask())
    (dataset / "img_idx" / "train_tiny.txt").write_text("a.png\nf\n")
    scan = scan_split(dataset, "train", "tiny", label="full")
    assert [s.image.name for s in scan.samples] == ["a.png", "f.bmp"]
    assert [s.mask.name for s in scan.samples] == ["a.png", "f.png"]
    assert find_file(dataset / "images", "zzz") is None


def test_duplicate_name_is_a_note_not_an_error(dataset):
    (dataset / "img_idx" / "train_tiny.txt").write_text("a\nb\na\n")
    scan = scan_split(dataset, "train", "tiny")
    assert [s.name for s in scan.samples] == ["a", "b"]
    assert len(scan.problems) == 1 and not scan.problems[0].fatal and "a is listed twice" in str(scan.problems[0])
    scan.raise_if_fatal()


def test_missing_root_split_file_or_empty_split(tmp_path, dataset):
    with pytest.raises(DatasetError, match="does not exist"):
        scan_split(tmp_path / "nowhere", "train", "tiny")
    with pytest.raises(DatasetError, match=r"train_other\.txt.*test_tiny\.txt.*train_tiny\.txt"):
        scan_split(dataset, "train", "other")
    (dataset / "img_idx" / "train_tiny.txt").write_text("\r\n  \n")
    with pytest.raises(DatasetError, match="lists no images"):
        scan_split(dataset, "train", "tiny")


@pytest.mark.parametrize("kwargs", [dict(size_mismatch="stretch"), dict(bad_files="ignore"),
                                    dict(label="points")])
def test_invalid_options_are_rejected(dataset, kwargs):
    with pytest.raises(ValueError, match=str(next(iter(kwargs.values())))):
        scan_split(dataset, "train", "tiny", **kwargs)


# ---- size mismatch ---------------------------------------------------------------------------
def test_mismatch_action_rules():
    assert mismatch_action((40, 48), (40, 48), "error") == "none"
    # Misc_111 of SIRST: image 325x220, mask 592x400 (WxH)
    assert mismatch_action((220, 325), (400, 592), "resize") == "resize"
    assert mismatch_action((220, 325), (400, 592), "crop") == "crop"
    assert mismatch_action((220, 325), (400, 592), "skip") == "skip"
    with pytest.raises(ValueError, match="size_mismatch=error"):
        mismatch_action((220, 325), (400, 592), "error")
    # aspect tolerance 1 %: 0.5 % passes, 1.5 % does not
    assert mismatch_action((100, 200), (100, 201), "resize") == "resize"
    for policy in ("resize", "crop"):
        with pytest.raises(ValueError, match="aspect ratios differ"):
            mismatch_action((100, 200), (100, 203), policy)
        assert mismatch_action((100, 200), (100, 203), policy, aspect_tolerance=0.02) == policy
    assert mismatch_action((100, 200), (50, 150), "skip") == "skip"
    with pytest.raises(ValueError, match="cannot crop a smaller mask"):
        mismatch_action((100, 200), (50, 100), "crop")
    assert mismatch_action((100, 200), (50, 100), "resize") == "resize"
    with pytest.raises(ValueError, match="must be one of"):
        mismatch_action((100, 200), (50, 100), "bogus")


def test_fit_mask_nearest_and_crop():
    small = box_mask()
    big = np.kron(small, np.ones((2, 2), dtype=bool))
    np.testing.assert_array_equal(fit_mask(big, (H, W), "resize"), small)
    np.testing.assert_array_equal(fit_mask(big, (H, W), "crop"), big[:H, :W])
    np.testing.assert_array_equal(fit_mask(small, (H, W), "none"), small)
    up = fit_mask(small, (2 * H, 2 * W), "resize")
    np.testing.assert_array_equal(up, big)


def _big_mask(dataset: Path, name: str = "b") -> np.ndarray:
    """Replace a mask by one twice the image size (same aspect), with an extra target at the bottom right."""
    big = np.kron(box_mask(), np.ones((2, 2), dtype=bool))
    big[70:74, 80:84] = True
    save_mask(dataset / "masks" / f"{name}.png", big)
    return big


def test_same_aspect_mismatch_resizes_with_a_note_naming_the_file(dataset):
    big = _big_mask(dataset)
    scan = scan_split(dataset, "train", "tiny", label="full")
    sample = {s.name: s for s in scan.samples}["b"]
    assert sample.mask_action == "resize" and sample.mask_hw == (2 * H, 2 * W)
    mask = sample.load_mask()
    assert mask.shape == (H, W)
    expected = np.asarray(Image.fromarray(big.astype(np.uint8) * 255).resize((W, H), Image.Resampling.NEAREST)) > 0
    np.testing.assert_array_equal(mask, expected)
    assert mask[35:37, 40:42].all()  # the extra target, scaled down
    [problem] = scan.problems
    assert not problem.fatal and problem.file == str(dataset / "masks" / "b.png")
    assert "mask resized to the image" in problem.message
    assert "96x80" in problem.message and "48x40" in problem.message
    scan.raise_if_fatal()


def test_crop_policy_keeps_the_top_left_of_the_mask(dataset):
    big = _big_mask(dataset)
    scan = scan_split(dataset, "train", "tiny", label="full", size_mismatch="crop")
    sample = {s.name: s for s in scan.samples}["b"]
    assert sample.mask_action == "crop"
    np.testing.assert_array_equal(sample.load_mask(), big[:H, :W])
    assert not sample.load_mask()[35:37, 40:42].any()
    [problem] = scan.problems
    assert not problem.fatal and problem.file == str(dataset / "masks" / "b.png")
    assert "mask cropped to the image" in problem.message and "size_mismatch=crop" in problem.message


def test_same_aspect_mismatch_under_skip_and_error(dataset):
    _big_mask(dataset)
    skipped = scan_split(dataset, "train", "tiny", size_mismatch="skip")
    assert [s.name for s in skipped.samples] == ["a", "c"]
    [problem] = skipped.problems
    assert not problem.fatal and problem.file.endswith("b.png") and "skip" in problem.message
    errored = scan_split(dataset, "train", "tiny", size_mismatch="error")
    assert [s.name for s in errored.samples] == ["a", "c"]
    assert [p.file for p in errored.fatal] == [str(dataset / "masks" / "b.png")]
    with pytest.raises(DatasetError, match=r"b\.png"):
        errored.raise_if_fatal()


@pytest.mark.parametrize("policy", ["resize", "crop", "skip", "error"])
def test_different_aspect_mismatch(dataset, policy):
    other = np.zeros((H, 60), dtype=bool)
    other[10:13, 20:23] = True
    save_mask(dataset / "masks" / "c.png", other)
    scan = scan_split(dataset, "train", "tiny", label="full", size_mismatch=policy)
    assert [s.name for s in scan.samples] == ["a", "b"]
    [problem] = scan.problems
    assert problem.file == str(dataset / "masks" / "c.png")
    assert "60x40" in problem.message and "48x40" in problem.message
    if policy == "skip":
        assert not problem.fatal
        scan.raise_if_fatal()
    else:
        assert problem.fatal
        if policy in ("resize", "crop"):
            assert "aspect" in problem.message
        with pytest.raises(DatasetError) as info:
            scan.raise_if_fatal()
        assert str(dataset / "masks" / "c.png") in str(info.value) and str(dataset) in str(info.value)


# ---- missing, empty and undecodable files ----------------------------------------------------
def _break_files(root: Path) -> dict[str, Path]:
    broken = {
        "truncated": root / "images" / "a.png",
        "text": root / "images" / "b.png",
        "empty": root / "images" / "c.png",
        "missing": root / "images" / "g",
        "bad_mask": root / "masks" / "h.png",
    }
    data = broken["truncated"].read_bytes()
    broken["truncated"].write_bytes(data[: len(data) // 2])
    broken["text"].write_text("this is not an image\n")
    broken["empty"].write_bytes(b"")
    for i, name in enumerate(("h", "ok")):
        Image.fromarray(noise(20 + i), mode="L").save(root / "images" / f"{name}.png")
        save_mask(root / "masks" / f"{name}.png", box_mask())
    broken["bad_mask"].write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    (root / "img_idx" / "train_tiny.txt").write_text("a\nb\nc\ng\nh\nok\n")
    return broken


def test_bad_files_are_all_collected_and_reported_with_the_root(dataset):
    broken = _break_files(dataset)
    scan = scan_split(dataset, "train", "tiny", label="full")
    assert [s.name for s in scan.samples] == ["ok"]
    files = {p.file for p in scan.fatal}
    assert files == {str(p) for p in broken.values()}
    assert all(p.fatal for p in scan.problems)
    by_file = {p.file: p.message for p in scan.problems}
    assert "empty" in by_file[str(broken["empty"])]
    assert "not found" in by_file[str(broken["missing"])]
    assert "decode" in by_file[str(broken["text"])] and "decode" in by_file[str(broken["truncated"])]
    with pytest.raises(DatasetError) as info:
        scan.raise_if_fatal()
    message = str(info.value)
    assert str(dataset) in message and "5 problem" in message and "bad_files=skip" in message
    for path in broken.values():
        assert str(path) in message


def test_bad_files_skip_leaves_them_out_as_notes(dataset):
    broken = _break_files(dataset)
    scan = scan_split(dataset, "train", "tiny", label="full", bad_files="skip")
    assert [s.name for s in scan.samples] == ["ok"]
    assert not scan.fatal and len(scan.problems) == len(broken)
    assert all("skipped" in p.message for p in scan.problems)
    scan.raise_if_fatal()
    assert len(scan.image_means) == 1


def test_nothing_usable_after_skipping_is_an_error(dataset):
    (dataset / "images" / "a.png").write_text("nope")
    (dataset / "img_idx" / "train_tiny.txt").write_text("a\nzz\n")
    with pytest.raises(DatasetError, match="no usable image"):
        scan_split(dataset, "train", "tiny", bad_files="skip")


def test_missing_mask_is_fatal_only_when_masks_are_needed(dataset):
    (dataset / "masks" / "b.png").unlink()
    evaluation = scan_split(dataset, "train", "tiny")
    assert [s.name for s in evaluation.samples] == ["a", "b", "c"]
    [note] = evaluation.problems
    assert not note.fatal and "b" in Path(note.file).name and "mask file not found" in note.message
    assert {s.name: s.load_mask() is None for s in evaluation.samples} == {"a": False, "b": True, "c": False}
    for kwargs in (dict(label="centroid"), dict(need_masks=True)):
        scan = scan_split(dataset, "train", "tiny", **kwargs)
        assert [p.file for p in scan.fatal] == [str(dataset / "masks" / "b")]


def test_missing_point_files_are_fatal(dataset):
    for name in ("a", "c"):
        point_png(dataset / "masks_centroid" / f"{name}.png", CENTROIDS)
        write_xml(dataset / "points_xml" / f"{name}.xml", [(12, 22)])
    (dataset / "masks_centroid" / "c.png").write_text("junk")
    (dataset / "points_xml" / "c.xml").write_text("<annotation><object>")
    png = scan_split(dataset, "train", "tiny", label="centroid_png")
    assert [s.name for s in png.samples] == ["a"]
    assert {p.file for p in png.fatal} == {str(dataset / "masks_centroid" / "b"),
                                            str(dataset / "masks_centroid" / "c.png")}
    xml = scan_split(dataset, "train", "tiny", label="xml")
    assert [s.name for s in xml.samples] == ["a"]
    assert {p.file for p in xml.fatal} == {str(dataset / "points_xml" / "b.xml"),
                                           str(dataset / "points_xml" / "c.xml")}


# ---- datasets without masks ------------------------------------------------------------------
def test_dataset_without_masks_trains_from_point_files(tmp_path):
    root = make_dataset(tmp_path / "points_only", masks=False)
    for name in ("a", "b", "c"):
        point_png(root / "masks_centroid" / f"{name}.png", CENTROIDS)
        point_png(root / "masks_coarse" / f"{name}.png", [(10, 22), (31, 6)])
        write_xml(root / "points_xml" / f"{name}.xml", [(12.4, 22.9), (31.5, 6.5)], size=(H, W))
    expected = {"centroid_png": CENTROIDS, "coarse_png": [(10, 22), (31, 6)], "xml": CENTROIDS}
    for label, points in expected.items():
        scan = scan_split(root, "train", "tiny", label=label)
        assert not scan.masks_available and not scan.problems
        assert [s.name for s in scan.samples] == ["a", "b", "c"]
        for sample in scan.samples:
            assert sample.load_mask() is None
            np.testing.assert_array_equal(sample.load_label(label), expected_map(points))
    for label in ("full", "centroid", "coarse"):
        with pytest.raises(DatasetError, match=f"no masks/ folder.*label={label}"):
            scan_split(root, "train", "tiny", label=label)
    with pytest.raises(DatasetError, match="no masks/"):
        scan_split(root, "train", "tiny", need_masks=True)
    evaluation = scan_split(root, "test", "tiny")
    assert not evaluation.masks_available and len(evaluation.samples) == 2


# ---- labels ----------------------------------------------------------------------------------
def test_load_label_full_centroid_coarse(dataset):
    [sample, *_] = scan_split(dataset, "train", "tiny", label="full").samples
    full = sample.load_label("full")
    assert full.dtype == np.float32
    np.testing.assert_array_equal(full, box_mask().astype(np.float32))
    np.testing.assert_array_equal(sample.load_label("centroid"), expected_map(CENTROIDS))
    coarse = sample.load_label("coarse", seed=5)
    assert coarse.dtype == np.float32 and coarse.shape == (H, W)
    rows, cols = np.nonzero(coarse)
    assert len(rows) == 2
    labels = np.zeros((H, W), dtype=int)
    for k, (r0, c0, h, w) in enumerate(TARGETS, start=1):
        labels[r0:r0 + h, c0:c0 + w] = k
    assert sorted(labels[rows, cols].tolist()) == [1, 2]  # one point inside each target
    np.testing.assert_array_equal(coarse, sample.load_label("coarse", seed=5))
    with pytest.raises(ValueError, match="label must be one of"):
        sample.load_label("boxes")


def test_load_label_xml_and_point_pngs_with_rescaling(dataset):
    names = ("a", "b")
    # a: files at the image size; b: files at twice the image size
    write_xml(dataset / "points_xml" / "a.xml", [(12.0, 22.0), (31.9, 6.2)], size=(H, W))
    write_xml(dataset / "points_xml" / "b.xml", [(23.5, 43.5), (61.0, 11.0)], size=(2 * H, 2 * W))
    point_png(dataset / "masks_centroid" / "a.png", CENTROIDS)
    point_png(dataset / "masks_centroid" / "b.png", [(22, 42), (61, 11)], shape=(2 * H, 2 * W))
    point_png(dataset / "masks_coarse" / "a.png", [(12, 20)])
    point_png(dataset / "masks_coarse" / "b.png", [(25, 45)], shape=(2 * H, 2 * W))
    (dataset / "img_idx" / "train_tiny.txt").write_text("\n".join(names))
    for label, expected in {
        "xml": {"a": CENTROIDS, "b": CENTROIDS},
        "centroid_png": {"a": CENTROIDS, "b": CENTROIDS},
        "coarse_png": {"a": [(12, 20)], "b": [(12, 22)]},
    }.items():
        scan = scan_split(dataset, "train", "tiny", label=label)
        assert [s.name for s in scan.samples] == list(names)
        for sample in scan.samples:
            label_map = sample.load_label(label)
            assert label_map.dtype == np.float32 and label_map.shape == (H, W)
            np.testing.assert_array_equal(label_map, expected_map(expected[sample.name]))


def test_xml_point_outside_its_image_names_the_file_the_image_and_the_size(dataset):
    # no <size>: nothing rescales or clips the 1-based (yc 45, xc 10), i.e. row 44 of a 40-row image
    xml = dataset / "points_xml" / "b.xml"
    for name in ("a", "c"):
        write_xml(dataset / "points_xml" / f"{name}.xml", [(12, 22)])
    write_xml(xml, [(12, 22), (45, 10)])
    scan = scan_split(dataset, "train", "tiny", label="xml")
    assert [s.name for s in scan.samples] == ["a", "c"]
    [problem] = scan.fatal
    assert problem.file == str(xml)
    for fragment in ("[[44, 9]]", str(dataset / "images" / "b.png"), f"{W}x{H} (WxH)", "no <size>"):
        assert fragment in problem.message, fragment
    skipped = scan_split(dataset, "train", "tiny", label="xml", bad_files="skip")
    assert [s.name for s in skipped.samples] == ["a", "c"] and not skipped.fatal

    # a file changed after the scan fails the same way when the labels are read at setup
    [sample, *_] = scan.samples
    write_xml(dataset / "points_xml" / "a.xml", [(0, 22)])
    with pytest.raises(DatasetError) as info:
        sample.load_label("xml")
    message = str(info.value)
    assert message.startswith(f"{dataset / 'points_xml' / 'a.xml'}: ")
    assert "[[-1, 21]]" in message and f"{dataset / 'images' / 'a.png'}, which is {W}x{H}" in message


# ---- normalisation ---------------------------------------------------------------------------
def test_normalization_stats_is_mean_of_per_image_stats_over_train_only(tmp_path):
    root = make_dataset(tmp_path / "stats", train=("a", "b"), test=("t",))
    constant = np.full((H, W), 10, dtype=np.uint8)
    halves = np.zeros((H, W), dtype=np.uint8)
    halves[:, W // 2:] = 100
    Image.fromarray(constant, mode="L").save(root / "images" / "a.png")
    Image.fromarray(halves, mode="L").save(root / "images" / "b.png")
    Image.fromarray(np.full((H, W), 250, dtype=np.uint8), mode="L").save(root / "images" / "t.png")
    scan = scan_split(root, "train", "tiny", label="full")
    mean, std = normalization_stats(scan)
    # per image: (10, 0) and (50, 50); pooled pixels would give std sqrt(1650) ~ 40.6
    assert mean == pytest.approx(30.0) and std == pytest.approx(25.0)
    assert scan.image_means == pytest.approx([10.0, 50.0])  # the test image (all 250) is not in it


def test_normalization_stats_in_native_16bit_units(tmp_path):
    root = make_dataset(tmp_path / "wide", train=("a", "b"), test=("t",))
    values = _wide()
    Image.fromarray(values).save(root / "images" / "a.png")
    Image.fromarray(values[::-1].copy()).save(root / "images" / "b.png")
    mean, std = normalization_stats(scan_split(root, "train", "tiny"))
    assert mean == pytest.approx(values.astype(np.float64).mean(), rel=1e-6)
    assert std == pytest.approx(values.astype(np.float64).std(), rel=1e-6)
    assert mean > 255


def test_normalization_stats_rejects_zero_contrast_and_empty(tmp_path):
    root = make_dataset(tmp_path / "flat", train=("a",), test=("t",))
    Image.fromarray(np.full((H, W), 7, dtype=np.uint8), mode="L").save(root / "images" / "a.png")
    with pytest.raises(DatasetError, match="zero contrast"):
        normalization_stats(scan_split(root, "train", "tiny"))
    with pytest.raises(DatasetError, match="no usable image"):
        normalization_stats(SplitScan(root=root, split_file=root / "img_idx" / "train_tiny.txt"))


def test_problem_and_sample_types():
    problem = Problem("x/y.png", "broken")
    assert str(problem) == "x/y.png: broken" and problem.fatal
    sample = Sample(name="n", image=Path("n.png"), image_hw=(1, 1), mode="L")
    assert sample.load_mask() is None


# ---- the real SIRST dataset ------------------------------------------------------------------
@requires_sirst
def test_sirst_scans_with_the_misc_111_mismatch():
    train = scan_split(SIRST, "train", "SIRST", label="full")
    test = scan_split(SIRST, "test", "SIRST")
    assert len(train.samples) == 213 and len(test.samples) == 214
    assert not {s.name for s in train.samples} & {s.name for s in test.samples}
    problems = [p for scan in (train, test) for p in scan.problems]
    assert [Path(p.file).name for p in problems] == ["Misc_111.png"] and not problems[0].fatal
    assert {s.mode for s in train.samples + test.samples} <= {"L", "RGB", "P"}
    for sample in (train.samples + test.samples)[:20]:
        with Image.open(sample.mask) as mask:
            assert mask.mode == "1"


@requires_sirst
def test_sirst_misc_111_resize_versus_crop():
    (root, name) = (SIRST, "Misc_111")
    split = next(s for s in ("train", "test") if name in read_split_file(root / "img_idx" / f"{s}_SIRST.txt"))
    samples = {}
    for policy in ("resize", "crop"):
        scan = scan_split(root, split, "SIRST", size_mismatch=policy)
        samples[policy] = next(s for s in scan.samples if s.name == name)
    raw = decode_image(root / "masks" / f"{name}.png") > 0
    assert raw.shape == (400, 592)
    assert samples["resize"].image_hw == (220, 325)
    resized = samples["resize"].load_mask()
    expected = np.asarray(Image.fromarray(raw.astype(np.uint8) * 255).resize((325, 220),
                                                                                 Image.Resampling.NEAREST)) > 0
    np.testing.assert_array_equal(resized, expected)
    cropped = samples["crop"].load_mask()
    np.testing.assert_array_equal(cropped, raw[:220, :325])
    assert resized.any() and not np.array_equal(resized, cropped)
    with pytest.raises(DatasetError, match="Misc_111"):
        scan_split(root, split, "SIRST", size_mismatch="error").raise_if_fatal()
    skipped = scan_split(root, split, "SIRST", size_mismatch="skip")
    assert name not in {s.name for s in skipped.samples}
