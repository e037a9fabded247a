"""Import point annotations made in an annotation tool into ``ROOT/clicks.json``, checked against ``ROOT/images``.

The tool's image names are matched to the files in ``ROOT/images`` by exact name, else by stem (a tool that
shows ``frame_001.jpg`` matches ``frame_001.png``). Problems found, each named with its file, image and
annotation id:

- a click that is not finite, negative, or outside its image (``[0, W] x [0, H]``), or an annotation that
  cannot be converted: the image's other clicks are incomplete without it (the target would be trained as
  background), so policy ``skip`` leaves out the whole image;
- the size the tool states for an image differs from the file's: its coordinates are for another picture,
  so ``skip`` leaves out the image;
- an image the annotations name that is not in ``ROOT/images``, a second click on the pixel of an earlier one
  of the same image, a label not in ``labels``: ``skip`` drops that annotation;
- a file of a LabelMe folder that cannot be read: ``skip`` drops the file;
- an image of ``ROOT/images`` no annotation names, with ``unannotated="error"``: ``skip`` leaves it out.

Policy ``error`` raises a DatasetError listing every problem and writes nothing. ``clicks.json`` is written
once, atomically, at the end, so a failed import never leaves a partial dataset behind.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from PIL import Image

from irstd.data.annotations import AnnotationError, AnnotationProblem, AnnotationSet, Click, read_annotations
from irstd.data.clicks import clicks_to_points, write_clicks
from irstd.data.sources import DECODE_ERRORS, IMAGE_EXTENSIONS, DatasetError
from irstd.utils.files import sha256_file

__all__ = ["POLICIES", "UNANNOTATED_POLICIES", "ImportReport", "import_points"]

POLICIES = ("error", "skip")
UNANNOTATED_POLICIES = ("error", "skip", "background")
# problems an error message or a report lists one by one; the rest are counted
LISTED = 50


@dataclass
class ImportReport:
    """What an import wrote (``path``) and what it left out (``skipped``, ``unannotated``)."""

    root: Path
    source: Path
    format: str
    images: int = 0
    points: int = 0
    images_without_points: int = 0
    converted: Counter = field(default_factory=Counter)
    skipped: list[AnnotationProblem] = field(default_factory=list)
    # images of ROOT/images no annotation names, left out by unannotated="skip"
    unannotated: list[str] = field(default_factory=list)
    # clicks within merge_radius of an earlier click of their image, and outlines of points, not imported
    merged: int = 0
    outlines: int = 0
    path: Path | None = None

    def to_dict(self) -> dict:
        return {
            "root": str(self.root), "source": str(self.source), "format": self.format, "path": str(self.path),
            "images": self.images, "points": self.points, "images_without_points": self.images_without_points,
            "converted": dict(self.converted), "merged": self.merged, "outlines": self.outlines,
            "skipped": [{"file": p.file, "image": p.image, "annotation_id": p.annotation_id, "message": p.message}
                        for p in self.skipped],
            "unannotated": self.unannotated,
        }

    def to_text(self) -> str:
        lines = [f"imported {self.points} point(s) on {self.images} image(s) ({self.images_without_points} without "
                 f"target) from {self.format} {self.source} into {self.path}"]
        if self.converted:
            lines.append("points from: " + ", ".join(f"{n} {kind}" for kind, n in self.converted.most_common()))
        if self.merged:
            lines.append(f"merged {self.merged} click(s) into an earlier click nearby")
        if self.outlines:
            lines.append(f"{self.outlines} polygon(s)/box(es) were outlines of points (grouped with one, containing "
                         "one or around one), not targets")
        if self.skipped:
            lines.append(f"skipped {len(self.skipped)} problem(s) (policy skip):")
            lines.append(_listing(self.skipped))
        if self.unannotated:
            shown = ", ".join(self.unannotated[:LISTED]) + (" ..." if len(self.unannotated) > LISTED else "")
            lines.append(f"left out {len(self.unannotated)} image(s) without annotation: {shown}")
        return "\n".join(lines)


def _listing(problems: list) -> str:
    listed = "\n".join(f"  {p}" for p in problems[:LISTED])
    return listed + (f"\n  ... and {len(problems) - LISTED} more" if len(problems) > LISTED else "")


def _image_files(folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
        raise DatasetError(f"{folder} not found: put the frames in ROOT/images/ before importing their points")
    files = {p.name: p for p in sorted(folder.iterdir()) if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS}
    if not files:
        raise DatasetError(f"{folder} holds no image ({', '.join(IMAGE_EXTENSIONS)})")
    return files


@dataclass
class _Check:
    """Matches the annotations to ROOT/images and collects the clicks and problems, image by image."""

    folder: Path
    files: dict[str, Path]
    merge_radius: float
    problems: list[AnnotationProblem] = field(default_factory=list)
    clicks: dict[str, list[Click]] = field(default_factory=dict)
    named: set[str] = field(default_factory=set)
    broken: set[str] = field(default_factory=set)
    merged: int = 0
    _sizes: dict[str, tuple[int, int] | None] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._stems: dict[str, list[str]] = {}
        for name in self.files:
            self._stems.setdefault(Path(name).stem, []).append(name)

    def resolve(self, tool_name: str) -> tuple[str | None, str]:
        """The file of ROOT/images a tool's image name means, or None and why not."""
        if tool_name in self.files:
            return tool_name, ""
        for stem in dict.fromkeys((tool_name, Path(tool_name).stem)):
            matches = self._stems.get(stem, [])
            if len(matches) == 1:
                return matches[0], ""
            if matches:
                return None, f"matches several files of {self.folder} by stem: {matches}"
        return None, f"no such image in {self.folder} (matched by exact name, then by stem)"

    def size(self, key: str) -> tuple[int, int] | None:
        """(H, W) of an image from its header, None (and a problem) when it cannot be read."""
        if key not in self._sizes:
            try:
                with Image.open(self.files[key]) as image:
                    self._sizes[key] = (image.height, image.width)
            except DECODE_ERRORS as err:
                self._sizes[key] = None
                self.fail(key, AnnotationProblem(str(self.files[key]), key, None, f"cannot read the image: {err}"))
        return self._sizes[key]

    def fail(self, key: str | None, problem: AnnotationProblem) -> None:
        self.problems.append(problem)
        if key is not None and problem.whole_image:
            self.broken.add(key)

    def declared(self, found: AnnotationSet) -> None:
        """Images the file lists: where they are, and whether the size the tool states is theirs."""
        with_clicks = {click.image for click in found.clicks}
        for tool_name, stated in found.images_declared.items():
            file = found.declared_files.get(tool_name, "")
            key, why = self.resolve(tool_name)
            if key is None:
                if tool_name not in with_clicks:  # its clicks report it themselves
                    self.problems.append(AnnotationProblem(file, tool_name, None, why, whole_image=False))
                continue
            self.named.add(key)
            real = self.size(key)
            if stated is not None and real is not None and stated != real:
                self.fail(key, AnnotationProblem(
                    file, tool_name, None, f"the file states the size {stated[1]}x{stated[0]} (WxH) but "
                    f"{self.files[key]} is {real[1]}x{real[0]}: its coordinates are for another picture"))

    def add(self, click: Click) -> None:
        key, why = self.resolve(click.image)
        if key is None:
            self.problems.append(AnnotationProblem(click.file, click.image, click.annotation_id, why, False))
            return
        self.named.add(key)
        hw = self.size(key)
        message = _coordinate_problem(click, hw)
        if message:
            self.fail(key, AnnotationProblem(click.file, click.image, click.annotation_id, message))
            return
        if hw is not None:
            self._add_unique(key, click, hw)

    def _add_unique(self, key: str, click: Click, hw: tuple[int, int]) -> None:
        kept = self.clicks.setdefault(key, [])
        pixel = clicks_to_points([(click.x, click.y)], hw)[0].tolist()
        for earlier in kept:
            if self.merge_radius and math.hypot(click.x - earlier.x, click.y - earlier.y) <= self.merge_radius:
                self.merged += 1
                return
            if clicks_to_points([(earlier.x, earlier.y)], hw)[0].tolist() == pixel:
                self.fail(key, AnnotationProblem(
                    click.file, click.image, click.annotation_id,
                    f"duplicate: on the pixel (row {pixel[0]}, col {pixel[1]}) of annotation {earlier.annotation_id}",
                    whole_image=False))
                return
        kept.append(click)


def _coordinate_problem(click: Click, hw: tuple[int, int] | None) -> str:
    x, y = click.x, click.y
    if not (math.isfinite(x) and math.isfinite(y)):
        return f"coordinates are not finite numbers (x={x}, y={y})"
    if x < 0 or y < 0:
        return f"negative coordinate (x={x:g}, y={y:g})"
    if hw is not None and (x > hw[1] or y > hw[0]):
        return (f"({click.source}) (x={x:g}, y={y:g}) lies outside the image, which is {hw[1]}x{hw[0]} (WxH): "
                f"x must be in [0, {hw[1]}], y in [0, {hw[0]}]")
    return ""


def _check_options(policy: str, unannotated: str, merge_radius: float) -> None:
    if policy not in POLICIES:
        raise ValueError(f"policy must be one of {POLICIES}, got {policy!r}")
    if unannotated not in UNANNOTATED_POLICIES:
        raise ValueError(f"unannotated must be one of {UNANNOTATED_POLICIES}, got {unannotated!r}")
    if not (math.isfinite(merge_radius) and merge_radius >= 0):
        raise ValueError(f"merge_radius must be a finite number >= 0 (pixels), got {merge_radius!r}")


def import_points(root: str | os.PathLike, fmt: str, path: str | os.PathLike, *, policy: str = "error",
                  unannotated: str = "error", labels: Collection[str] | None = None,
                  merge_radius: float = 0.0) -> ImportReport:
    """Check the clicks of annotation file ``path`` (format ``fmt``) against ``ROOT/images`` and write them to
    ``ROOT/clicks.json``, replacing any previous one.

    policy: ``error`` raises a DatasetError listing every problem and writes nothing; ``skip`` leaves out
        what is at fault (see the module docstring), reports it, and writes the rest.
    unannotated: an image of ``ROOT/images`` that no annotation names is a problem (``error``), is left out
        of clicks.json (``skip``), or is written as a frame without target (``background``). An image the
        file lists without any click (a COCO image without annotations, a CVAT ``<image>`` without shapes,
        a CSV row without x and y) is a frame without target in every case.
    labels: import only clicks with these label names; others are problems. None: every label.
    merge_radius: a click within this many pixels of an earlier click of its image is merged into it
        (dropped and counted); at 0, a second click on the same pixel is a problem.
    """
    _check_options(policy, unannotated, merge_radius)
    root, source = Path(root), Path(path)
    check = _Check(root / "images", _image_files(root / "images"), merge_radius)
    try:
        found = read_annotations(fmt, source, labels=labels)
    except AnnotationError as err:
        raise DatasetError(str(err)) from err
    for problem in found.problems:
        check.fail(check.resolve(problem.image)[0] if problem.image is not None else None, problem)
    check.declared(found)
    for click in found.clicks:
        check.add(click)
    missing = [name for name in check.files if name not in check.named]
    if unannotated == "error":
        why = (f"no annotation in {source} names this image; annotate it, or pass unannotated=skip "
               "(--unannotated skip: leave it out) or background (a frame without target)")
        check.problems.extend(AnnotationProblem(str(check.folder), name, None, why) for name in missing)
    if check.problems and policy == "error":
        raise DatasetError(f"{len(check.problems)} problem(s) importing {source} into {root}; nothing was "
                           f"written:\n{_listing(check.problems)}\nFix them in the annotation tool and export "
                           "again, or pass policy=skip (--policy skip) to leave them out")
    images = {key: [(c.x, c.y) for c in check.clicks.get(key, [])] for key in check.named - check.broken}
    if unannotated == "background":
        images.update({name: [] for name in missing})
    if not images:
        raise DatasetError(f"nothing to import from {source} into {root}: every image was left out\n"
                           f"{_listing(check.problems)}")
    report = ImportReport(
        root=root, source=source, format=fmt, images=len(images), points=sum(map(len, images.values())),
        images_without_points=sum(not v for v in images.values()),
        converted=Counter(c.source for key in images for c in check.clicks.get(key, [])),
        skipped=check.problems, unannotated=missing if unannotated == "skip" else [], merged=check.merged,
        outlines=found.outlines)
    report.path = write_clicks(root, images, _provenance(report, policy, unannotated, labels, merge_radius))
    return report


def _provenance(report: ImportReport, policy: str, unannotated: str, labels: Collection[str] | None,
                merge_radius: float) -> dict:
    source = report.source.resolve()
    return {
        "tool_format": report.format,
        "source": str(source),
        "source_sha256": sha256_file(source) if source.is_file() else None,
        "imported_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "policy": policy, "unannotated": unannotated, "labels": None if labels is None else sorted(labels),
        "merge_radius": merge_radius,
        "counts": {"images": report.images, "points": report.points,
                   "images_without_points": report.images_without_points, "converted": dict(report.converted),
                   "skipped": len(report.skipped), "unannotated_left_out": len(report.unannotated),
                   "merged": report.merged, "outlines": report.outlines},
    }
