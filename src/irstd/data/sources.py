"""Datasets in the field's standard layout: file discovery, image decoding, validation.

    ROOT/images/NAME.png            the infrared frames (any format PIL reads)
    ROOT/masks/NAME.png             pixel masks, any non-zero pixel is target (optional)
    ROOT/masks_centroid/NAME.png    official point labels (optional)
    ROOT/masks_coarse/NAME.png
    ROOT/points_xml/NAME.xml        human centroid annotations (optional)
    ROOT/clicks.json                point clicks imported from an annotation tool (optional)
    ROOT/img_idx/train_X.txt        split files, one name per line
    ROOT/img_idx/test_X.txt

Every file a split needs is decoded once when the split is scanned, so a missing,
empty or corrupt file is reported up front (with its path and the dataset root)
instead of crashing a data-loader worker in the middle of an epoch.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from irstd.data import points as pts

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".bmp", ".tif", ".tiff", ".jpg", ".jpeg", ".pgm", ".ppm")
MISMATCH_POLICIES = ("resize", "crop", "skip", "error")
BAD_FILE_POLICIES = ("error", "skip")
LABEL_KINDS = ("full", "centroid", "coarse", "xml", "centroid_png", "coarse_png", "clicks")
# `label=auto`: one of LABEL_KINDS, chosen from what the dataset holds (`resolve_label_kind`)
AUTO_LABEL = "auto"
POINT_PNG_FOLDERS = {"centroid_png": "masks_centroid", "coarse_png": "masks_coarse"}
# PIL modes that already hold one channel of integers or floats wider than 8 bits.
_WIDE_MODES = {"I;16": 16, "I;16L": 16, "I;16B": 16, "I;16N": 16, "I": 32, "F": 32}
# what PIL raises on a corrupt, truncated, unknown or oversized image file
DECODE_ERRORS = (OSError, ValueError, UnidentifiedImageError, SyntaxError, Image.DecompressionBombError)


class DatasetError(ValueError):
    """A dataset problem that stops setup; the message lists every file at fault."""


@dataclass(frozen=True)
class Problem:
    file: str
    message: str
    fatal: bool = True

    def __str__(self) -> str:
        return f"{self.file}: {self.message}"


def decode_image(path: str | Path) -> np.ndarray:
    """Decode any PIL-readable image to float32 grayscale in its native units.

    8-bit L stays 0-255; palette, RGB(A) and the like go through PIL's luma rule
    (`convert('L')`, identical to the reference loaders' `convert('I')`), so
    published weights see the input they were trained on; 16-bit and 32-bit
    single-channel images keep their full range.
    """
    path = Path(path)
    with Image.open(path) as image:
        image.load()
        if image.mode in _WIDE_MODES:
            array = np.asarray(image)
        else:
            array = np.asarray(image.convert("L"))
    return np.ascontiguousarray(array, dtype=np.float32)


def bit_depth(mode: str) -> int:
    return _WIDE_MODES.get(mode, 8)


def read_split_file(path: str | Path) -> list[str]:
    """Names listed in a split file; CRLF endings, blank lines, a BOM and stray spaces are fine."""
    text = Path(path).read_text(encoding="utf-8-sig")
    names = [line.strip() for line in text.splitlines()]
    return [name for name in names if name]


def find_file(folder: Path, name: str, extensions: Sequence[str] = IMAGE_EXTENSIONS) -> Path | None:
    """`folder/name` if the split lists the extension, else the first `folder/name.EXT` that exists."""
    if Path(name).suffix.lower() in extensions and (folder / name).is_file():
        return folder / name
    stem = Path(name).stem if Path(name).suffix.lower() in extensions else name
    for ext in extensions:
        for candidate in (folder / f"{stem}{ext}", folder / f"{stem}{ext.upper()}"):
            if candidate.is_file():
                return candidate
    return None


def mismatch_action(image_hw: tuple[int, int], mask_hw: tuple[int, int], policy: str,
                    aspect_tolerance: float = 0.01) -> str:
    """What to do with a mask whose size differs from its image: 'none', 'resize', 'crop' or 'skip'.

    Raises ValueError when the policy is 'error', or when the aspect ratios differ
    by more than `aspect_tolerance` (a mask of another shape is a different
    picture, not a rescaled one) under 'resize' or 'crop'.
    """
    if tuple(image_hw) == tuple(mask_hw):
        return "none"
    if policy not in MISMATCH_POLICIES:
        raise ValueError(f"data.policies.size_mismatch must be one of {MISMATCH_POLICIES}, got {policy!r}")
    described = f"mask is {mask_hw[1]}x{mask_hw[0]} but image is {image_hw[1]}x{image_hw[0]} (WxH)"
    if policy == "skip":
        return "skip"
    if policy == "error":
        raise ValueError(f"{described}; data.policies.size_mismatch=error")
    image_aspect = image_hw[1] / image_hw[0]
    mask_aspect = mask_hw[1] / mask_hw[0]
    if abs(mask_aspect / image_aspect - 1) > aspect_tolerance:
        raise ValueError(f"{described}: aspect ratios differ by more than {aspect_tolerance:.0%}, "
                         "so the mask cannot be mapped onto the image; fix or remove the file")
    if policy == "crop" and (mask_hw[0] < image_hw[0] or mask_hw[1] < image_hw[1]):
        raise ValueError(f"{described}: data.policies.size_mismatch=crop cannot crop a smaller mask")
    return policy


def fit_mask(mask: np.ndarray, image_hw: tuple[int, int], action: str) -> np.ndarray:
    """Bring a boolean mask to the image size with the action chosen by `mismatch_action`."""
    if action == "none":
        return mask
    if action == "crop":
        return mask[: image_hw[0], : image_hw[1]]
    if action == "resize":
        resized = Image.fromarray(mask.astype(np.uint8) * 255).resize(
            (image_hw[1], image_hw[0]), Image.Resampling.NEAREST)
        return np.asarray(resized) > 0
    raise ValueError(f"unknown mask action {action!r}")


@dataclass
class Sample:
    """One image of a split, with everything validated about it."""

    name: str
    image: Path
    image_hw: tuple[int, int]
    mode: str
    mask: Path | None = None
    mask_hw: tuple[int, int] | None = None
    mask_action: str = "none"
    point_png: Path | None = None
    xml: Path | None = None
    # label=clicks: the image's (x, y) clicks and the file they came from
    clicks: list[tuple[float, float]] | None = None
    clicks_file: Path | None = None

    def load_image(self) -> np.ndarray:
        return decode_image(self.image)

    def load_mask(self) -> np.ndarray | None:
        """Boolean target mask at the image size, or None when the dataset has no masks."""
        if self.mask is None:
            return None
        return fit_mask(decode_image(self.mask) > 0, self.image_hw, self.mask_action)

    def load_label(self, kind: str, seed: int = 0) -> np.ndarray:
        """Round-0 label of this image for `label=kind`: float32 HxW with 1 on target/point pixels."""
        shape = self.image_hw
        if kind == "full":
            return self.load_mask().astype(np.float32)
        if kind == "centroid":
            return pts.points_to_map(pts.centroid_points(self.load_mask()), shape)
        if kind == "coarse":
            return pts.points_to_map(pts.coarse_points(self.load_mask(), seed=seed, name=self.name), shape)
        if kind == "xml":
            return pts.points_to_map(self.xml_points(), shape)
        if kind == "clicks":
            return pts.points_to_map(self.click_points(), shape)
        if kind in POINT_PNG_FOLDERS:
            point_map = decode_image(self.point_png) > 0
            points = pts.map_to_points(point_map)
            if point_map.shape != shape:
                points = pts.rescale_points(points, point_map.shape, shape)
            return pts.points_to_map(self._on_image(points, self.point_png), shape)
        raise ValueError(f"label must be one of {LABEL_KINDS}, got {kind!r}")

    def xml_points(self) -> np.ndarray:
        """The (row, col) points of `points_xml/NAME.xml` at the image size (rescaled from the file's <size>)."""
        annotation = pts.read_xml_points(self.xml)
        points = annotation.points
        stated = (annotation.height, annotation.width)
        if annotation.height and annotation.width and stated != self.image_hw:
            points = pts.rescale_points(points, stated, self.image_hw)
        # Only a file without <size> can point outside its image: <size> clips its points.
        hint = "" if annotation.width is not None else "; the file has no <size> to rescale or clip its points to"
        return self._on_image(points, self.xml, hint)

    def click_points(self) -> np.ndarray:
        """The (row, col) points of this image's clicks; DatasetError naming the clicks file and the image when
        some fall outside the image."""
        try:
            return self._click_points()
        except ValueError as err:
            raise DatasetError(f"{self.clicks_file}: {err}") from err

    def _click_points(self) -> np.ndarray:
        from irstd.data.clicks import clicks_to_points

        try:
            return clicks_to_points(self.clicks, self.image_hw)
        except ValueError as err:
            height, width = self.image_hw
            raise ValueError(f"{err} (image {self.image}, which is {width}x{height} (WxH))") from err

    def _on_image(self, points: np.ndarray, source: Path, hint: str = "") -> np.ndarray:
        """`points`, or DatasetError naming the annotation file and the image when some fall outside the image."""
        outside = pts.points_outside(points, self.image_hw)
        if len(outside):
            height, width = self.image_hw
            raise DatasetError(f"{source}: point(s) (row, col), 0-based, {outside.tolist()} lie outside the image "
                               f"{self.image}, which is {width}x{height} (WxH){hint}")
        return points


@dataclass
class SplitScan:
    """Result of scanning one split: usable samples, what is wrong, image statistics."""

    root: Path
    split_file: Path
    samples: list[Sample] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    image_means: list[float] = field(default_factory=list)
    image_stds: list[float] = field(default_factory=list)
    masks_available: bool = True

    @property
    def fatal(self) -> list[Problem]:
        return [p for p in self.problems if p.fatal]

    def raise_if_fatal(self) -> None:
        fatal = self.fatal
        if fatal:
            listed = "\n  ".join(str(p) for p in fatal[:50])
            more = f"\n  ... and {len(fatal) - 50} more" if len(fatal) > 50 else ""
            raise DatasetError(f"dataset {self.root} (split file {self.split_file.name}) has "
                               f"{len(fatal)} problem(s):\n  {listed}{more}\n"
                               "Fix the files, or set data.policies.bad_files=skip to leave them out.")


def split_file_path(root: Path, stage: str, split: str) -> Path:
    return root / "img_idx" / f"{stage}_{split}.txt"


def _require_root(root: Path) -> None:
    if not root.is_dir():
        raise DatasetError(f"dataset root {root} does not exist (set data.root to a folder with images/, "
                           "masks/ and img_idx/)")


def resolve_label_kind(root: str | Path, kind: str) -> str:
    """The label kind to train from: `kind` itself, or for `label=auto` the one the dataset holds.

    masks/ -> centroid (the paper's default), else clicks.json -> clicks; a dataset with neither is a
    DatasetError naming the root and what would make it trainable.
    """
    if kind != AUTO_LABEL:
        return kind
    root = Path(root)
    _require_root(root)
    if (root / "masks").is_dir():
        return "centroid"
    # imported here, not at the top: irstd.data.clicks imports DatasetError from this module
    from irstd.data.clicks import CLICKS_FILE

    if (root / CLICKS_FILE).is_file():
        return "clicks"
    raise DatasetError(f"label=auto: dataset {root} has nothing to train from: neither masks/ (pixel masks, "
                       f"label=centroid) nor {CLICKS_FILE} (point clicks, label=clicks). Add masks/, import "
                       f"clicks with `irstd-data import`, or put annotations in points_xml/ and set label=xml "
                       "(masks_centroid/ or masks_coarse/ PNGs: label=centroid_png or coarse_png)")


def _probe(path: Path) -> tuple[tuple[int, int], str, np.ndarray]:
    """Decode a file fully (a truncated PNG only fails when its pixels are read)."""
    if path.stat().st_size == 0:
        raise ValueError("file is empty")
    with Image.open(path) as image:
        mode = image.mode
    array = decode_image(path)
    if array.ndim != 2 or array.size == 0:
        raise ValueError(f"decoded to shape {array.shape}, expected a 2-D image")
    return (int(array.shape[0]), int(array.shape[1])), mode, array


def scan_split(root: str | Path, stage: str, split: str, *, label: str | None = None,
               need_masks: bool = False, size_mismatch: str = "resize", aspect_tolerance: float = 0.01,
               bad_files: str = "error", progress: bool = False) -> SplitScan:
    """Find and decode every file one split needs; collect problems instead of raising early.

    `label` names the point-label source whose files must exist for training
    (None for evaluation). Masks are optional unless `need_masks` or
    `label in ('full', 'centroid', 'coarse')`; a dataset without a masks/
    folder is valid for the other label kinds.
    """
    root = Path(root)
    if bad_files not in BAD_FILE_POLICIES:
        raise ValueError(f"data.policies.bad_files must be one of {BAD_FILE_POLICIES}, got {bad_files!r}")
    if size_mismatch not in MISMATCH_POLICIES:
        raise ValueError(f"data.policies.size_mismatch must be one of {MISMATCH_POLICIES}, got {size_mismatch!r}")
    if label is not None and label not in LABEL_KINDS:
        raise ValueError(f"label must be one of {LABEL_KINDS}, got {label!r}")
    _require_root(root)
    split_file = split_file_path(root, stage, split)
    if not split_file.is_file():
        raise DatasetError(_missing_split_message(root, split_file, split))
    scan = SplitScan(root=root, split_file=split_file)
    masks_needed = need_masks or label in ("full", "centroid", "coarse")
    scan.masks_available = (root / "masks").is_dir()
    if masks_needed and not scan.masks_available:
        raise DatasetError(f"dataset {root} has no masks/ folder, which label={label} needs; "
                           "use label=clicks, xml, centroid_png or coarse_png, or add the masks")
    clicks = None
    if label == "clicks":
        from irstd.data.clicks import read_clicks

        clicks = read_clicks(root)

    names = read_split_file(split_file)
    if not names:
        raise DatasetError(f"split file {split_file} lists no images")
    seen: set[str] = set()
    for name in _progress(names, progress, f"checking {split_file.name}"):
        if name in seen:
            scan.problems.append(Problem(str(split_file), f"{name} is listed twice; using it once", fatal=False))
            continue
        seen.add(name)
        sample = _scan_sample(root, name, scan, label, masks_needed, size_mismatch, aspect_tolerance, clicks)
        if sample is not None:
            scan.samples.append(sample)

    if bad_files == "skip":
        skipped = scan.fatal
        scan.problems = [p for p in scan.problems if not p.fatal] + [
            Problem(p.file, f"{p.message} (skipped: data.policies.bad_files=skip)", fatal=False) for p in skipped]
    if not scan.samples and not scan.fatal:
        raise DatasetError(f"no usable image left in {split_file}")
    return scan


def _missing_split_message(root: Path, split_file: Path, split: str) -> str:
    found = sorted(p.name for p in (root / "img_idx").glob("*.txt")) if (root / "img_idx").is_dir() else []
    folder = root.resolve().name
    # `irstd-data split` names the files after the folder
    named = "" if split == folder else f", named after the folder (train_{folder}.txt: then set data.split={folder})"
    listed = ", or set data.split to one listed" if found else ""
    return (f"split file {split_file} not found (data.split={split!r}); split files in {root / 'img_idx'}: "
            f"{found or 'none'}. Make them with `irstd-data split {root} --test 0.2`{named}{listed}")


def _scan_sample(root: Path, name: str, scan: SplitScan, label: str | None, masks_needed: bool,
                 size_mismatch: str, aspect_tolerance: float,
                 clicks: dict[str, list[tuple[float, float]]] | None = None) -> Sample | None:
    image_path = find_file(root / "images", name)
    if image_path is None:
        scan.problems.append(Problem(str(root / "images" / name), "image file not found"))
        return None
    try:
        image_hw, mode, array = _probe(image_path)
    except DECODE_ERRORS as err:
        scan.problems.append(Problem(str(image_path), f"cannot decode image: {err}"))
        return None
    sample = Sample(name=name, image=image_path, image_hw=image_hw, mode=mode)

    if scan.masks_available:
        mask_path = find_file(root / "masks", name)
        if mask_path is None:
            if masks_needed:
                scan.problems.append(Problem(str(root / "masks" / name), "mask file not found"))
                return None
            scan.problems.append(Problem(str(root / "masks" / name), "mask file not found", fatal=False))
        else:
            try:
                mask_hw, _, _ = _probe(mask_path)
                action = mismatch_action(image_hw, mask_hw, size_mismatch, aspect_tolerance)
            except DECODE_ERRORS as err:
                scan.problems.append(Problem(str(mask_path), f"bad mask: {err}"))
                return None
            if action == "skip":
                scan.problems.append(Problem(str(mask_path), f"mask is {mask_hw[1]}x{mask_hw[0]}, image is "
                                             f"{image_hw[1]}x{image_hw[0]}: skipped (data.policies.size_mismatch=skip)",
                                             fatal=False))
                return None
            if action != "none":
                done = {"resize": "resized", "crop": "cropped"}[action]
                scan.problems.append(Problem(str(mask_path), f"mask is {mask_hw[1]}x{mask_hw[0]}, image is "
                                             f"{image_hw[1]}x{image_hw[0]} (WxH): mask {done} to the image "
                                             f"(data.policies.size_mismatch={size_mismatch})", fatal=False))
            sample.mask, sample.mask_hw, sample.mask_action = mask_path, mask_hw, action

    if not _attach_points(root, name, sample, scan, label, clicks):
        return None
    scan.image_means.append(float(array.mean(dtype=np.float64)))
    scan.image_stds.append(float(array.std(dtype=np.float64)))
    return sample


def _attach_points(root: Path, name: str, sample: Sample, scan: SplitScan, label: str | None,
                   clicks: dict[str, list[tuple[float, float]]] | None) -> bool:
    """Find and check the point-label file of `label` for `sample`; False (and a Problem) when it is unusable."""
    if label in POINT_PNG_FOLDERS:
        folder = root / POINT_PNG_FOLDERS[label]
        point_path = find_file(folder, name)
        if point_path is None:
            scan.problems.append(Problem(str(folder / name), f"point label file not found (label={label})"))
            return False
        try:
            _probe(point_path)
        except DECODE_ERRORS as err:
            scan.problems.append(Problem(str(point_path), f"cannot decode point labels: {err}"))
            return False
        sample.point_png = point_path
    elif label == "xml":
        sample.xml = root / "points_xml" / f"{Path(name).stem}.xml"
        try:
            sample.xml_points()
        except (OSError, ValueError) as err:
            scan.problems.append(Problem(str(sample.xml), f"bad point annotation: {err}"))
            return False
    elif label == "clicks":
        from irstd.data.clicks import CLICKS_FILE

        sample.clicks_file = root / CLICKS_FILE
        key = sample.image.relative_to(root / "images").as_posix()
        if key not in clicks:
            scan.problems.append(Problem(str(sample.clicks_file), f"no entry for image {sample.image} (key {key!r}); "
                                         "add it (an empty list marks a frame without targets) or leave the image "
                                         "out of the split"))
            return False
        sample.clicks = clicks[key]
        try:
            sample._click_points()
        except ValueError as err:
            scan.problems.append(Problem(str(sample.clicks_file), str(err)))
            return False
    return True


def normalization_stats(scan: SplitScan) -> tuple[float, float]:
    """Mean of per-image means and mean of per-image stds, the convention of the published code.

    Computed from the training split only (the reference fallback mixes in the
    test split, which leaks it).
    """
    if not scan.image_means:
        raise DatasetError(f"cannot compute normalisation statistics: no usable image in {scan.split_file}")
    mean = float(np.mean(scan.image_means))
    std = float(np.mean(scan.image_stds))
    if not math.isfinite(std) or std <= 0:
        raise DatasetError(f"training images of {scan.root} have zero contrast (std {std}); "
                           "set data.std explicitly")
    return mean, std


def _progress(items: Iterable, enabled: bool, desc: str) -> Iterable:
    if not enabled:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, leave=False)
