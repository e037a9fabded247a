"""`irstd-data build`: merge datasets in the standard layout into one, e.g. SIRST3.

The paper trains once on the union of the SIRST, NUDT-SIRST and IRSTD-1K training splits and tests on
each test split. The merged folder holds:

    OUT/images/, OUT/masks/                 the images (and masks) of every source's train and test split
    OUT/masks_centroid/, masks_coarse/,     the optional label folders, from every source that has them
        points_xml/
    OUT/img_idx/train_<OUT>.txt             the union of the training splits
    OUT/img_idx/test_<OUT>.txt              the union of the test splits
    OUT/img_idx/train_<SRC>.txt,            each source's own splits under the source's name
        test_<SRC>.txt
    OUT/manifest.json                       sources, split-file and per-file sha256, the name mapping

Names. A name (file stem, compared without case, since the output may live on a case-insensitive
filesystem) that occurs in one source only is kept. A name that occurs in several sources is
renamed to `<SRC>_<name>` in every one of them, so the result does not depend on the order of
the sources and no source keeps a privileged copy. Only the colliding names are renamed, so most
names stay those of the published split files.

Optional label folders are copied from whichever sources have them; a folder present in some
sources only is reported (a label kind that needs it then fails at setup, naming the files).
Images that no split file lists are not copied.

Files are hard-linked when OUT is on the sources' filesystem, else copied. Everything is written
into a temporary directory beside OUT and renamed to OUT at the end, so an interrupted build
leaves no partial OUT.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import uuid
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from irstd.data.sources import (
    IMAGE_EXTENSIONS,
    DatasetError,
    Problem,
    Sample,
    find_file,
    read_split_file,
    scan_split,
)
from irstd.utils.files import fsync_dir, sha256_file

log = logging.getLogger(__name__)

MANIFEST_FORMAT = 1
# folders copied besides images/ when a source has them, with the extensions their files may have
LABEL_FOLDERS = {"masks_centroid": None, "masks_coarse": None, "points_xml": (".xml",)}
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


@dataclass(frozen=True)
class SourceSpec:
    """One dataset to merge: its name in the output, its root and the split names to take."""

    name: str
    root: Path
    train_split: str
    test_split: str


def parse_source(text: str) -> SourceSpec:
    """`NAME=ROOT` (splits named NAME) or `NAME=ROOT:TRAIN_SPLIT:TEST_SPLIT`."""
    name, sep, rest = text.partition("=")
    if not sep or not name or not rest:
        raise ValueError(f"--source {text!r}: expected NAME=ROOT or NAME=ROOT:TRAIN_SPLIT:TEST_SPLIT")
    root, train, test = rest, name, name
    if ":" in rest:
        # the last two fields are the splits, so a root may itself hold a colon
        parts = rest.rsplit(":", 2)
        if len(parts) != 3 or not all(parts):
            raise ValueError(f"--source {text!r}: give both splits, NAME=ROOT:TRAIN_SPLIT:TEST_SPLIT")
        root, train, test = parts
    return SourceSpec(name=name, root=Path(root), train_split=train, test_split=test)


def build_dataset(out: str | Path, sources: Sequence[SourceSpec], *, name: str | None = None, force: bool = False,
                  copy: bool = False, size_mismatch: str = "resize", progress: bool = False) -> dict:
    """Merge `sources` into a new dataset at `out`; returns the manifest it wrote.

    Every source split is scanned (each file decoded) first, and any missing, empty or
    undecodable file stops the build before anything is written, with every such file named.
    An existing `out` is replaced only with `force`.
    """
    out = Path(out).absolute()
    name = name or out.name
    _validate(out, name, sources, force)
    scans = {spec.name: _scan_source(spec, size_mismatch, progress) for spec in sources}
    stems = _map_names({source: [s for split in pair for s in split] for source, pair in scans.items()})

    out.parent.mkdir(parents=True, exist_ok=True)
    # Not tempfile.mkdtemp: its 0700 mode would stick to OUT after the rename; mkdir honours the umask.
    tmp = out.parent / f".{out.name}.{os.getpid()}.{uuid.uuid4().hex}.partial"
    tmp.mkdir()
    try:
        manifest = _write(tmp, name, sources, scans, stems, copy, progress)
        _publish(tmp, out, force)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return manifest


def _validate(out: Path, name: str, sources: Sequence[SourceSpec], force: bool) -> None:
    if not sources:
        raise ValueError("give at least one --source NAME=ROOT")
    names = [spec.name for spec in sources] + [name]
    for value in names:
        if not _NAME.match(value):
            raise ValueError(f"name {value!r} must consist of letters, digits, '_', '.' and '-' "
                             "(it becomes part of split-file and image names)")
    folded = [value.casefold() for value in names]
    if len(set(folded)) != len(folded):
        raise ValueError(f"source names and the output name ({name!r}, --name) must differ, also in case: {names}")
    for spec in sources:
        root = spec.root.resolve()
        if root == out.resolve() or out.resolve() in root.parents:
            raise ValueError(f"output {out} would contain source {spec.name} ({spec.root}); choose another OUT")
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise ValueError(f"output {out} exists and is not a directory")
    if out.exists() and not force:
        raise ValueError(f"output {out} already exists; pass --force to replace it")


def _scan_source(spec: SourceSpec, size_mismatch: str, progress: bool) -> tuple[list[Sample], list[Sample]]:
    """(train samples, test samples) of one source; every fatal problem of both splits in one error."""
    scans = [scan_split(spec.root, stage, split, size_mismatch=size_mismatch, progress=progress)
             for stage, split in (("train", spec.train_split), ("test", spec.test_split))]
    problems = [p for scan in scans for p in scan.problems]
    for scan in scans:
        # "a" and "a.png" in one split file are one image; two files "a.png" and "a.bmp" would share a name
        stems = Counter(s.image.stem.casefold() for s in scan.samples)
        problems += [Problem(str(scan.split_file), f"lists {stem!r} more than once (under different names)")
                     for stem, count in stems.items() if count > 1]
    train_names = {s.image.stem.casefold() for s in scans[0].samples}
    leaked = [s.name for s in scans[1].samples if s.image.stem.casefold() in train_names]
    if leaked:
        problems.append(Problem(str(scans[1].split_file), f"{len(leaked)} image(s) are also in "
                                f"{scans[0].split_file.name}, e.g. {leaked[:3]}: a merged training set "
                                "would contain test images"))
    fatal = [p for p in problems if p.fatal]
    if fatal:
        listed = "\n  ".join(str(p) for p in fatal)
        raise DatasetError(f"source {spec.name} ({spec.root}) has {len(fatal)} problem(s):\n  {listed}\n"
                           "Fix them (irstd-data check ROOT lists everything) before building.")
    for problem in problems:
        log.warning("source %s: %s", spec.name, problem)
    return scans[0].samples, scans[1].samples


def _map_names(samples: dict[str, list[Sample]]) -> dict[str, dict[str, str]]:
    """source -> {image stem: output stem}: kept when unique, `<SRC>_<stem>` in every source sharing it."""
    owners: dict[str, set[str]] = {}
    for source, items in samples.items():
        for sample in items:
            owners.setdefault(sample.image.stem.casefold(), set()).add(source)
    mapping: dict[str, dict[str, str]] = {}
    taken: dict[str, tuple[str, str]] = {}
    for source, items in samples.items():
        mapping[source] = {}
        for sample in items:
            stem = sample.image.stem
            new = f"{source}_{stem}" if len(owners[stem.casefold()]) > 1 else stem
            clash = taken.setdefault(new.casefold(), (source, stem))
            if clash != (source, stem):
                raise DatasetError(f"{source}'s image {stem} and {clash[0]}'s image {clash[1]} would both be "
                                   f"named {new}; rename one of them in its source")
            mapping[source][stem] = new
    return mapping


def _write(tmp: Path, name: str, sources: Sequence[SourceSpec], scans: dict[str, tuple[list[Sample], list[Sample]]],
           stems: dict[str, dict[str, str]], copy: bool, progress: bool) -> dict:
    files: dict[str, dict[str, str]] = {}
    transfers = {"linked": 0, "copied": 0}
    folders: dict[str, list[str]] = {}
    splits: dict[str, list[str]] = {f"train_{name}": [], f"test_{name}": []}
    described = []
    for spec in sources:
        train, test = scans[spec.name]
        mapping = stems[spec.name]
        present = [f for f in ("masks", *LABEL_FOLDERS) if (spec.root / f).is_dir()]
        for folder in present:
            folders.setdefault(folder, []).append(spec.name)
        for sample in _progress(train + test, progress, f"merging {spec.name}"):
            new = mapping[sample.image.stem]
            for folder, path in _sample_files(spec.root, sample, present):
                target = f"{folder}/{new}{path.suffix}"
                transfers[_place(path, tmp / target, copy)] += 1
                files[target] = {"source": spec.name, "from": path.relative_to(spec.root).as_posix(),
                                 "sha256": sha256_file(tmp / target)}
        own = {f"train_{spec.name}": [mapping[s.image.stem] for s in train],
               f"test_{spec.name}": [mapping[s.image.stem] for s in test]}
        splits.update(own)
        splits[f"train_{name}"] += own[f"train_{spec.name}"]
        splits[f"test_{name}"] += own[f"test_{spec.name}"]
        split_files = [spec.root / "img_idx" / f"{stage}_{split}.txt"
                       for stage, split in (("train", spec.train_split), ("test", spec.test_split))]
        described.append({
            "name": spec.name, "root": str(spec.root.absolute()),
            "train_split": spec.train_split, "test_split": spec.test_split,
            "train_images": len(train), "test_images": len(test),
            "split_files": {p.name: {"sha256": sha256_file(p), "listed": len(read_split_file(p))} for p in split_files},
            "renamed": {stem: new for stem, new in mapping.items() if stem != new},
        })

    (tmp / "img_idx").mkdir()
    for split, listed in splits.items():
        (tmp / "img_idx" / f"{split}.txt").write_text("".join(f"{n}\n" for n in listed))
    partial = {folder: owners for folder, owners in folders.items() if len(owners) < len(sources)}
    for folder, owners in partial.items():
        log.warning("%s/ comes from %s only: labels that need it fail for the other sources' images",
                    folder, ", ".join(owners))
    manifest = {
        "format": MANIFEST_FORMAT,
        "tool": "irstd-data build",
        "name": name,
        "naming": "names kept when unique across sources (case-insensitive); a name shared by several "
                  "sources becomes <SOURCE>_<name> in each of them",
        "sources": described,
        "splits": {split: {"images": len(listed), "sha256": sha256_file(tmp / "img_idx" / f"{split}.txt")}
                   for split, listed in splits.items()},
        "folders": folders,
        "transfers": transfers,
        "files": dict(sorted(files.items())),
    }
    # written last: a folder with a manifest is a finished build
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    for folder in [tmp, *(p for p in tmp.iterdir() if p.is_dir())]:
        fsync_dir(folder)
    return manifest


def _sample_files(root: Path, sample: Sample, folders: Iterable[str]) -> list[tuple[str, Path]]:
    """(folder, path) of every file the sample has: image, mask, point labels."""
    found = [("images", sample.image)]
    for folder in folders:
        path = sample.mask if folder == "masks" else (
            find_file(root / folder, sample.image.stem, LABEL_FOLDERS[folder] or IMAGE_EXTENSIONS))
        if path is not None:
            found.append((folder, path))
    return found


def _place(source: Path, target: Path, copy: bool) -> str:
    """Hard-link `source` at `target`, or copy it (and flush it) when linking is impossible or unwanted."""
    target.parent.mkdir(exist_ok=True)
    if not copy:
        try:
            os.link(source, target)
            return "linked"
        except OSError:
            pass  # another filesystem, or one without hard links
    shutil.copyfile(source, target)
    with open(target, "rb+") as handle:
        os.fsync(handle.fileno())
    return "copied"


def _publish(tmp: Path, out: Path, force: bool) -> None:
    """Rename the finished build to `out`; with `force` the old `out` is moved aside first, then deleted."""
    old = None
    if force and out.exists():
        old = out.parent / f".{out.name}.{os.getpid()}.{uuid.uuid4().hex}.old"
        os.rename(out, old)
    try:
        # POSIX rename replaces an empty directory but fails on a non-empty one (a rival build that finished)
        os.rename(tmp, out)
    except OSError as err:
        if old is not None:
            os.rename(old, out)
        raise ValueError(f"cannot move the finished build to {out}: {err}") from err
    fsync_dir(out.parent)
    if old is not None:
        shutil.rmtree(old)



def _progress(items: list, enabled: bool, desc: str) -> Iterable:
    if not enabled:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, leave=False)
