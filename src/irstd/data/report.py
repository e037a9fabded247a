"""`irstd-data check`: what a dataset holds and everything wrong with it."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from irstd.data import points as pts
from irstd.data.sources import (
    IMAGE_EXTENSIONS,
    DatasetError,
    Problem,
    Sample,
    bit_depth,
    read_split_file,
    scan_split,
)

_SPLIT_FILE = re.compile(r"^(train|test)_(.+)\.txt$")


@dataclass
class DatasetReport:
    root: Path
    split_counts: dict[str, int] = field(default_factory=dict)
    images: int = 0
    sizes: Counter = field(default_factory=Counter)
    modes: Counter = field(default_factory=Counter)
    targets_per_image: Counter = field(default_factory=Counter)
    target_areas: list[int] = field(default_factory=list)
    masks_available: bool = True
    problems: list[Problem] = field(default_factory=list)

    @property
    def targets(self) -> int:
        return len(self.target_areas)

    def to_dict(self) -> dict:
        areas = np.asarray(self.target_areas)
        return {
            "root": str(self.root),
            "images": self.images,
            "splits": self.split_counts,
            "sizes_wxh": {f"{w}x{h}": n for (h, w), n in self.sizes.most_common()},
            "modes": dict(self.modes.most_common()),
            "targets": self.targets,
            "targets_per_image": {str(k): v for k, v in sorted(self.targets_per_image.items())},
            "target_area_px": _area_summary(areas),
            "problems": [str(p) for p in self.problems],
        }

    def to_text(self) -> str:
        lines = [f"dataset {self.root}", f"images: {self.images}"]
        lines += [f"  {name}: {count}" for name, count in self.split_counts.items()]
        lines.append("sizes (WxH): " + ", ".join(f"{w}x{h} ({n})" for (h, w), n in self.sizes.most_common(8))
                     + (f", ... {len(self.sizes) - 8} more" if len(self.sizes) > 8 else ""))
        lines.append("modes: " + ", ".join(f"{mode} ({n})" for mode, n in self.modes.most_common()))
        if self.masks_available:
            lines.append(f"targets (8-connected): {self.targets}")
            lines.append("targets per image: " + ", ".join(
                f"{k}: {v}" for k, v in sorted(self.targets_per_image.items())))
            summary = _area_summary(np.asarray(self.target_areas))
            if summary:
                lines.append("target area (px): " + ", ".join(f"{k} {v:g}" for k, v in summary.items()))
        else:
            lines.append("targets: no masks/ folder")
        lines.append(f"problems: {len(self.problems)}")
        lines += [f"  - {p}" for p in self.problems]
        return "\n".join(lines)


def _area_summary(areas: np.ndarray) -> dict[str, float]:
    if areas.size == 0:
        return {}
    quantiles = np.percentile(areas, [5, 25, 50, 75, 95])
    return {"min": float(areas.min()), "p5": float(quantiles[0]), "p25": float(quantiles[1]),
            "median": float(quantiles[2]), "p75": float(quantiles[3]), "p95": float(quantiles[4]),
            "max": float(areas.max()), "mean": float(areas.mean())}


def split_files(root: Path) -> list[tuple[str, str]]:
    """(stage, split name) of every `img_idx/{train,test}_X.txt`."""
    found = []
    for path in sorted((root / "img_idx").glob("*.txt")):
        match = _SPLIT_FILE.match(path.name)
        if match:
            found.append((match.group(1), match.group(2)))
    return found


def dataset_report(root: str | Path, size_mismatch: str = "resize", progress: bool = False) -> DatasetReport:
    root = Path(root)
    if not (root / "images").is_dir():
        raise DatasetError(f"{root} has no images/ folder: not a dataset in the standard layout")
    report = DatasetReport(root=root, masks_available=(root / "masks").is_dir())
    splits = split_files(root)
    if not splits:
        report.problems.append(Problem(str(root / "img_idx"), "no train_X.txt / test_X.txt split files"))

    samples: dict[str, Sample] = {}
    listed_in: dict[str, list[str]] = {}
    listed: set[str] = set()  # every name a split file lists, usable or not
    for stage, split in splits:
        scan = scan_split(root, stage, split, size_mismatch=size_mismatch, progress=progress)
        listed.update(Path(name).stem for name in read_split_file(scan.split_file))
        report.split_counts[f"{stage}_{split}"] = len(scan.samples)
        report.problems += [p for p in scan.problems if str(p) not in {str(q) for q in report.problems}]
        for sample in scan.samples:
            samples.setdefault(sample.name, sample)
            listed_in.setdefault(sample.name, []).append(f"{stage}_{split}")

    for split_name in {s for _, s in splits}:
        both = [n for n, where in listed_in.items() if {f"train_{split_name}", f"test_{split_name}"} <= set(where)]
        if both:
            report.problems.append(Problem(str(root / "img_idx"), f"{len(both)} image(s) are in both "
                                           f"train_{split_name} and test_{split_name}, e.g. {both[:3]}"))
    on_disk = {p.stem for p in (root / "images").iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS}
    unlisted = sorted(on_disk - listed)
    if splits and unlisted:
        report.problems.append(Problem(str(root / "images"), f"{len(unlisted)} image(s) are in no split file, "
                                       f"e.g. {unlisted[:3]}", fatal=False))

    report.images = len(samples)
    depths = Counter()
    for sample in samples.values():
        report.sizes[sample.image_hw] += 1
        report.modes[sample.mode] += 1
        depths[bit_depth(sample.mode)] += 1
        mask = sample.load_mask()
        if mask is not None:
            areas = [t.area for t in pts.target_stats(mask)]
            report.targets_per_image[len(areas)] += 1
            report.target_areas += areas
    if len(depths) > 1:
        report.problems.append(Problem(str(root / "images"), "mixed bit depths " + ", ".join(
            f"{d}-bit ({n})" for d, n in sorted(depths.items())) + ": set data.mean/data.std with care",
            fatal=False))
    return report
