"""Inference on new images: probability maps, masks, overlays and a detection table.

Images are decoded and normalised exactly as the test split is in training and `irstd-eval`
(`FullImageDataset` + `pad_collate`), and predicted through the same `model_predictor`, so a mask
written here scores what `irstd-eval` scores on the same image. Detections are the 8-connected
components of the binary mask, the component rule of the metrics.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw
from scipy import ndimage

from irstd.data.datasets import FullImageDataset, pad_collate
from irstd.data.points import label_targets, target_stats
from irstd.data.sources import DECODE_ERRORS, Sample
from irstd.inference.annotation_export import ExportedImage, export_formats, outlines_of, write_exports
from irstd.inference.evaluation import model_predictor
from irstd.utils.files import write_text_atomic
from irstd.viz import overlay, save_png

log = logging.getLogger("irstd")

DETECTION_COLUMNS = ("image", "target", "centroid_row", "centroid_col", "area", "bbox_top", "bbox_left",
                     "bbox_bottom", "bbox_right", "peak_score", "mean_score")
CIRCLE_COLOUR = (255, 220, 0)


class BadInputError(ValueError):
    """An input file that cannot be predicted, under `strict=true`."""


@dataclass(frozen=True)
class Detection:
    """One 8-connected component of a binary mask; 0-based pixels, bbox bottom/right exclusive."""

    image: str
    target: int
    centroid_row: float
    centroid_col: float
    area: int
    bbox_top: int
    bbox_left: int
    bbox_bottom: int
    bbox_right: int
    peak_score: float
    mean_score: float


def readable_extensions() -> set[str]:
    """File extensions of every format PIL can open."""
    Image.init()
    return {ext for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN}


def find_images(path: Path, recursive: bool = False, exclude: Path | None = None) -> tuple[Path, list[Path]]:
    """(root, image files under it): a file is its own root; a folder gives its image files by extension,
    sorted, with `exclude` (the output folder, when it lies inside) left out."""
    if not path.exists():
        raise FileNotFoundError(f"input={path} does not exist")
    if path.is_file():
        return path.parent, [path]
    extensions = readable_extensions()
    candidates = path.rglob("*") if recursive else path.iterdir()
    files = sorted(p for p in candidates if p.is_file() and p.suffix.lower() in extensions
                   and not (exclude is not None and p.resolve().is_relative_to(exclude.resolve())))
    if not files:
        has_subfolders = any(p.is_dir() for p in path.iterdir())
        hint = "; set recursive=true to search its subfolders" if has_subfolders and not recursive else ""
        raise FileNotFoundError(f"input={path} holds no image files (extensions PIL reads, e.g. .png .tif .bmp .jpg)"
                                f"{hint}")
    return path, files


def detections_of(name: str, mask: np.ndarray, probs: np.ndarray) -> list[Detection]:
    """Every 8-connected component of `mask`, in label order, with its scores in `probs`."""
    labels, count = label_targets(mask)
    if count == 0:
        return []
    index = np.arange(1, count + 1)
    peaks = ndimage.maximum(probs, labels, index)
    means = ndimage.mean(probs, labels, index)
    return [Detection(name, number, round(info.centroid[0], 3), round(info.centroid[1], 3), info.area,
                      *info.bbox, round(float(peak), 6), round(float(mean), 6))
            for number, info, peak, mean in zip(index.tolist(), target_stats(mask), peaks, means, strict=True)]


def circled(frame: np.ndarray, mask: np.ndarray, detections: Iterable[Detection]) -> np.ndarray:
    """`viz.overlay` (predicted outlines in red) with a circle around each detection, visible at any zoom."""
    picture = Image.fromarray(overlay(frame, mask))
    draw = ImageDraw.Draw(picture)
    for found in detections:
        radius = 0.5 * max(found.bbox_bottom - found.bbox_top, found.bbox_right - found.bbox_left) + 4
        row, col = found.centroid_row, found.centroid_col
        draw.ellipse((col - radius, row - radius, col + radius, row + radius), outline=CIRCLE_COLOUR)
    return np.asarray(picture)


@dataclass
class _Input:
    path: Path
    name: str  # relative to the input root, POSIX, the table's image column
    sample: Sample | None = None


def _probe(item: _Input) -> Sample:
    """Read a file's header (size, mode) without decoding its pixels; an empty or non-image file raises."""
    if item.path.stat().st_size == 0:
        raise ValueError("file is empty")
    with Image.open(item.path) as image:
        width, height = image.size
        mode = image.mode
    return Sample(name=item.name, image=item.path, image_hw=(height, width), mode=mode)


def _batches(items: list[_Input], batch_size: int, tile_size: int | None) -> Iterator[list[_Input]]:
    """Images of one size together, at most `batch_size` of them; a frame larger than a tile alone, so memory
    stays bounded by the tile size rather than by batch x frame."""
    by_size: dict[tuple[int, int], list[_Input]] = {}
    for item in items:
        by_size.setdefault(item.sample.image_hw, []).append(item)
    for size, group in by_size.items():
        step = 1 if tile_size and max(size) > tile_size else batch_size
        for start in range(0, len(group), step):
            yield group[start: start + step]


@dataclass
class _Skips:
    """Input files left out, each with its reason; under `strict` the first one raises BadInputError instead."""

    strict: bool
    files: list[dict[str, str]] = field(default_factory=list)

    def add(self, item: _Input, reason: str) -> None:
        if self.strict:
            raise BadInputError(f"{item.path}: {reason} (strict=true; strict=false skips such files)")
        log.warning("skipping %s: %s", item.path, reason)
        self.files.append({"file": str(item.path), "reason": reason})


def _readable_inputs(root: Path, files: list[Path], skips: _Skips) -> list[_Input]:
    """The files whose header PIL reads and whose outputs no earlier file claims, probed, in order."""
    items, taken = [], {}
    for path in files:
        item = _Input(path, path.relative_to(root).as_posix())
        # a.png and a.tif of one folder would write the same output files
        stem = str(Path(item.name).with_suffix(""))
        if stem in taken:
            skips.add(item, f"its outputs would overwrite those of {taken[stem]} (same name, other extension)")
            continue
        try:
            item.sample = _probe(item)
        except DECODE_ERRORS as err:
            skips.add(item, f"cannot read image: {err}")
            continue
        taken[stem] = item.name
        items.append(item)
    return items


def _decoded(group: list[_Input], mean: float, std: float, skips: _Skips) -> list[dict[str, Any]]:
    """The normalised images of `group` that decode; a truncated file fails only when its pixels are read."""
    dataset = FullImageDataset([item.sample for item in group], mean, std)
    loaded = []
    for index, item in enumerate(group):
        try:
            loaded.append(dataset[index])
        except DECODE_ERRORS as err:
            skips.add(item, f"cannot decode image: {err}")
    return loaded


def _predict_batch(predict: Callable[[dict[str, Any]], torch.Tensor], batch: dict[str, Any], output: Path,
                   threshold: float, outlines: bool) -> dict[str, ExportedImage]:
    """Predict one padded batch and write its images' files; name -> its detections (and their outlines when
    `outlines`, for the annotation exports)."""
    probs = predict(batch).float().cpu()
    done = {}
    for i, (name, (height, width)) in enumerate(zip(batch["name"], batch["valid_hw"].tolist(), strict=True)):
        prob = probs[i, 0, :height, :width].numpy()
        mask = prob > threshold
        detections = _write_image(output, name, batch["image"][i, 0, :height, :width].numpy(), prob, mask)
        done[name] = ExportedImage(name, height, width, detections, outlines_of(mask) if outlines else [])
    return done


def predict_images(model: torch.nn.Module, input_path: str | Path, output: str | Path, *, mean: float, std: float,
                   device: torch.device, threshold: float = 0.5, batch_size: int = 8, tile_size: int | None = 1024,
                   tile_overlap: int = 64, pad_always: bool = False, recursive: bool = False, strict: bool = False,
                   progress: Callable[[int], Any] | None = None, run_info: dict[str, Any] | None = None,
                   export: str | Sequence[str] | None = None) -> dict[str, Any]:
    """Predict every image of `input_path` (a file or a folder) into `output` and return the summary.

    Per image (input folders kept): `masks/REL.png` (0/255), `probs/REL.png` (16-bit, probability x 65535),
    `overlays/REL.png`; for the run `detections.csv`, `detections.json` and `summary.json`. Files that cannot
    be read are skipped and listed in the summary, or raise BadInputError with `strict`. `pad_always` pads as
    `data.evaluation.pad_always` does in evaluation. `export` names annotation formats (`coco`, `cvat`,
    `labelstudio`) the detections are also written in, under `export/` (see `annotation_export`).
    `progress(total)` returns an object with `update(n)` and `close()` (a tqdm).
    """
    if std <= 0:
        raise ValueError(f"data.std must be positive, got {std}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    formats = export_formats(export)
    started = time.perf_counter()
    output = Path(output)
    root, files = find_images(Path(input_path), recursive, exclude=output)
    skips = _Skips(strict)
    items = _readable_inputs(root, files, skips)

    predict = model_predictor(model, device, tile_size, tile_overlap)
    bar = progress(len(files)) if progress else None
    if bar is not None:
        bar.update(len(files) - len(items))
    done: dict[str, ExportedImage] = {}
    for group in _batches(items, batch_size, tile_size):
        loaded = _decoded(group, mean, std, skips)
        if loaded:
            done.update(_predict_batch(predict, pad_collate(loaded, always=pad_always), output, threshold,
                                       outlines=bool(formats)))
        if bar is not None:
            bar.update(len(group))
    if bar is not None:
        bar.close()

    ordered = [done[item.name] for item in items if item.name in done]
    detections = [found for image in ordered for found in image.detections]
    _write_tables(output, detections)
    model_name = (run_info or {}).get("model", "irstd")
    exported = write_exports(output / "export", formats, ordered, model_name) if done else {}
    summary = (run_info or {}) | {
        "input": str(input_path), "output": str(output), "threshold": threshold, "mean": mean, "std": std,
        "tile_size": tile_size, "tile_overlap": tile_overlap, "device": str(device),
        "images_done": len(done), "images_skipped": len(skips.files), "detections": len(detections),
        "seconds": round(time.perf_counter() - started, 3), "skipped": skips.files, "export": exported,
        "images": [{"image": image.name, "height": image.height, "width": image.width,
                    "detections": len(image.detections)} for image in ordered]}
    write_text_atomic(output / "summary.json", json.dumps(summary, indent=2) + "\n")
    if not done:
        raise BadInputError(f"none of the {len(files)} input file(s) could be read; see {output / 'summary.json'}")
    return summary


def _write_image(output: Path, name: str, frame: np.ndarray, prob: np.ndarray, mask: np.ndarray) -> list[Detection]:
    detections = detections_of(name, mask, prob)
    relative = Path(name).with_suffix(".png")
    save_png(mask.astype(np.uint8) * 255, output / "masks" / relative)
    save_png(np.round(np.clip(prob, 0, 1) * 65535).astype(np.uint16), output / "probs" / relative)
    # the frame is the normalised one: overlay's percentile stretch undoes any positive affine map
    save_png(circled(frame, mask, detections), output / "overlays" / relative)
    return detections


def _write_tables(output: Path, detections: list[Detection]) -> None:
    records = [asdict(found) for found in detections]
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=DETECTION_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(records)
    write_text_atomic(output / "detections.csv", text.getvalue())
    write_text_atomic(output / "detections.json", json.dumps(records, indent=1) + "\n")
