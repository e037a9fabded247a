"""Point-label PNG folders (`masks_centroid/`, `masks_coarse/`) written from a dataset's masks.

The files are what the LESPS release ships: one 0/255 8-bit PNG per image, at the image's size, with
255 on each target's point. `label=centroid_png|coarse_png` reads them back as the same labels that
`label=centroid|coarse` derive from the masks.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from irstd.data import points as pts
from irstd.data.report import split_files
from irstd.data.sources import POINT_PNG_FOLDERS, Sample, scan_split
from irstd.utils.files import atomic_write

POINT_PNG_KINDS = ("centroid", "coarse")


def write_point_pngs(root: str | Path, kind: str, *, seed: int = 0, size_mismatch: str = "resize",
                     progress: bool = False) -> tuple[Path, int]:
    """Write a point-label PNG for every image any split file of `root` lists; returns (folder, files written).

    `kind` is `centroid` or `coarse` (drawn with `seed`, as `label=coarse` does). Masks are fitted to their
    images by `size_mismatch`, so the points are at the image size. Every split is scanned first and a
    missing or undecodable file raises DatasetError before anything is written; each PNG is written
    atomically, so an interrupted run leaves no truncated file.
    """
    if kind not in POINT_PNG_KINDS:
        raise ValueError(f"point label kind must be one of {POINT_PNG_KINDS}, got {kind!r}")
    root = Path(root)
    folder = root / POINT_PNG_FOLDERS[f"{kind}_png"]
    samples = _listed_samples(root, size_mismatch, progress)
    from tqdm.auto import tqdm

    for sample in tqdm(samples, desc=f"writing {folder}", disable=not progress):
        mask = sample.load_mask()
        if kind == "centroid":
            points = pts.centroid_points(mask)
        else:
            points = pts.coarse_points(mask, seed=seed, name=sample.name)
        image = Image.fromarray((pts.points_to_map(points, mask.shape) > 0).astype(np.uint8) * 255, mode="L")
        with atomic_write(folder / f"{Path(sample.name).stem}.png") as handle:
            image.save(handle, format="PNG")
    return folder, len(samples)


def _listed_samples(root: Path, size_mismatch: str, progress: bool) -> list[Sample]:
    """Every image of every split, once (an image listed in several splits gets one file), with its mask."""
    samples: dict[str, Sample] = {}
    for stage, split in split_files(root):
        scan = scan_split(root, stage, split, need_masks=True, size_mismatch=size_mismatch, progress=progress)
        scan.raise_if_fatal()
        for sample in scan.samples:
            samples.setdefault(sample.name, sample)
    return list(samples.values())
