"""Inputs of the mapping-degeneration study: crops of a real dataset (Fig. 2) and synthetic factor sets (Fig. 5).

Every builder returns `StudySamples` in network units (normalised) on the CPU, one fixed size, so that images can
be stacked for vmapped single-sample training.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from irstd.data import points as pts
from irstd.data import synthetic as syn
from irstd.data.sources import normalization_stats, scan_split
from irstd.degeneration.training import StudySamples

FACTORS = ("intensity", "size", "position", "count", "shape")


def _crop_origin(length: int, size: int, centre: float, jitter: int, rng: np.random.Generator) -> int:
    """Start of a window of `size` around `centre` shifted by up to `jitter`, kept inside [0, length)."""
    start = int(round(centre)) - size // 2 + int(rng.integers(-jitter, jitter + 1))
    return int(np.clip(start, 0, max(0, length - size)))


def _fit(array: np.ndarray, row: int, col: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The size x size window at (row, col), zero-padded where the image is smaller; with its valid mask."""
    window = np.zeros((size, size), dtype=np.float32)
    valid = np.zeros((size, size), dtype=bool)
    piece = array[row:row + size, col:col + size]
    window[:piece.shape[0], :piece.shape[1]] = piece
    valid[:piece.shape[0], :piece.shape[1]] = True
    return window, valid


def dataset_samples(root: str | Path, split: str, size: int, *, stage: str = "train", label: str = "centroid",
                    max_images: int | None = None, seed: int = 0) -> StudySamples:
    """One size x size crop per image of a split, around its largest target (shifted by up to size/4, seeded by
    name), normalised with the split's statistics (mean of per-image means and stds, as training does).

    Labels are the dataset's `label` points (centroid, coarse, xml, ...) of the whole image, cropped with it.
    """
    scan = scan_split(root, stage, split, label=label, need_masks=True)
    scan.raise_if_fatal()
    mean, std = normalization_stats(scan)
    chosen = scan.samples[:max_images] if max_images else scan.samples
    images, labels, masks, valids, names = [], [], [], [], []
    for sample in chosen:
        mask = sample.load_mask()
        targets = pts.target_stats(mask)
        if not targets:
            continue  # a frame without targets has no IoU to follow
        largest = max(targets, key=lambda info: info.area)
        rng = np.random.default_rng([seed, zlib.crc32(sample.name.encode("utf-8"))])
        height, width = sample.image_hw
        row = _crop_origin(height, size, largest.centroid[0], size // 4, rng)
        col = _crop_origin(width, size, largest.centroid[1], size // 4, rng)
        image, valid = _fit((sample.load_image() - mean) / std, row, col, size)
        images.append(image)
        valids.append(valid)
        labels.append(_fit(sample.load_label(label, seed=seed), row, col, size)[0])
        masks.append(_fit(mask.astype(np.float32), row, col, size)[0] > 0)
        names.append(sample.name)
    if not names:
        raise ValueError(f"no image of {scan.split_file} has a target to study")
    return _stack(images, labels, masks, names, valids)


def _stack(images: Sequence[np.ndarray], labels: Sequence[np.ndarray], masks: Sequence[np.ndarray],
           names: list[str], valids: Sequence[np.ndarray] | None = None) -> StudySamples:
    def tensor(arrays: Sequence[np.ndarray]) -> torch.Tensor:
        return torch.from_numpy(np.stack(arrays)[:, None].copy())

    return StudySamples(tensor(images).float(), tensor(labels).float(), tensor(masks).bool(), names,
                        None if valids is None or all(v.all() for v in valids) else tensor(valids).bool())


@dataclass(frozen=True)
class Condition:
    """One study setting: target (peak, radius or shape) and point label (offset from the centroid, count)."""

    factor: str
    value: float | str
    peak: float
    radius: float = 0.0
    shape: str | None = None
    offset: float = 0.0
    angle: float = 0.0
    points: int = 1


def factor_conditions(factor: str, spec: dict) -> list[Condition]:
    """The settings of one factor of Fig. 5 (or the supplement's shape study) from its config block."""
    if factor == "intensity":
        return [Condition(factor, float(v), peak=float(v), radius=float(spec["radius"])) for v in spec["values"]]
    if factor == "size":
        return [Condition(factor, float(v), peak=float(spec["peak"]), radius=float(v)) for v in spec["values"]]
    if factor == "position":
        return [Condition(factor, float(v), peak=float(spec["peak"]), radius=float(spec["radius"]), offset=float(v),
                          angle=float(spec.get("angle", 0.0))) for v in spec["values"]]
    if factor == "count":
        return [Condition(factor, int(v), peak=float(spec["peak"]), radius=float(spec["radius"]), points=int(v))
                for v in spec["values"]]
    if factor == "shape":
        return [Condition(factor, str(name), peak=float(spec["peak"]), shape=str(name)) for name in spec["names"]]
    raise ValueError(f"unknown study factor {factor!r}; choose from {FACTORS}")


def backgrounds(count: int, size: int, seed: int, root: str | Path | None = None,
                split: str | None = None) -> list[np.ndarray]:
    """`count` backgrounds: crops of a real dataset's target-free areas when `root` is given, else generated."""
    if root:
        return syn.real_background_crops(root, count, size, np.random.default_rng(seed), split=split)
    return syn.generated_backgrounds(count, size, seed)


def condition_samples(conditions: Sequence[Condition], runs: int, size: int, scenes: Sequence[np.ndarray],
                      shapes: dict[str, np.ndarray] | None = None, seed: int = 0) -> StudySamples:
    """runs x conditions images: run r puts each condition's target at the centre of background r.

    Every condition sees the same backgrounds, so conditions differ only in the factor under study. All images
    share one normalisation, the backgrounds' statistics, so a brighter target is brighter to the network too.
    """
    if len(scenes) < runs:
        raise ValueError(f"{runs} runs need {runs} backgrounds, got {len(scenes)}")
    mean = float(np.mean([scene.mean() for scene in scenes[:runs]]))
    std = float(np.mean([scene.std() for scene in scenes[:runs]]))
    images, labels, masks, names = [], [], [], []
    for condition in conditions:
        if condition.shape is not None:
            if not shapes or condition.shape not in shapes:
                raise ValueError(f"shape {condition.shape!r} was not loaded (set the study's shape root and names)")
            signal, footprint = syn.shaped_target(shapes[condition.shape], condition.peak)
        else:
            signal, footprint = syn.gaussian_target(condition.radius, condition.peak)
        for run in range(runs):
            image, mask = syn.place_target(scenes[run], signal, footprint, size // 2, size // 2)
            if condition.points > 1:
                rng = np.random.default_rng([seed, run, zlib.crc32(f"{condition.factor}={condition.value}".encode())])
                points = syn.spread_points(mask, condition.points, rng)
            else:
                points = [syn.offset_point(mask, condition.offset, condition.angle)]
            images.append((image - mean) / std)
            labels.append(syn.points_label(points, mask.shape))
            masks.append(mask)
            names.append(f"{condition.factor}={condition.value}/run{run}")
    return _stack(images, labels, masks, names)


def label_iou(samples: StudySamples) -> torch.Tensor:
    """IoU of each point label itself with its mask: what a network that learned exactly the points would score."""
    labels, masks = samples.labels > 0.5, samples.masks
    intersection = (labels & masks).flatten(1).sum(1)
    return intersection / (labels | masks).flatten(1).sum(1).clamp(min=1)

