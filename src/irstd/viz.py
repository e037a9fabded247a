"""Pictures: prediction overlays and ROC plots (PNG)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from irstd.utils.files import atomic_write


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Stretch an image of any range to 0-255 for display (1st-99.9th percentile)."""
    low, high = np.percentile(image, [1, 99.9]) if image.size else (0.0, 1.0)
    if high <= low:
        high = low + 1
    return (np.clip((image - low) / (high - low), 0, 1) * 255).astype(np.uint8)


def _outline(mask: np.ndarray) -> np.ndarray:
    """Pixels of the mask that touch the background (8-neighbourhood)."""
    padded = np.pad(mask, 1)
    interior = np.ones_like(mask)
    for dr in (-1, 0, 1):
        for dc in (-1, 0, 1):
            interior &= padded[1 + dr: 1 + dr + mask.shape[0], 1 + dc: 1 + dc + mask.shape[1]]
    return mask & ~interior


def overlay(image: np.ndarray, prediction: np.ndarray, truth: np.ndarray | None = None) -> np.ndarray:
    """RGB picture: the frame in gray, ground-truth outlines in green, predicted outlines in red."""
    gray = to_uint8(image)
    rgb = np.stack([gray] * 3, axis=-1)
    if truth is not None:
        rgb[_outline(truth.astype(bool))] = (0, 255, 0)
    rgb[_outline(prediction.astype(bool))] = (255, 40, 40)
    return rgb


def save_png(array: np.ndarray, path: str | Path) -> None:
    """Write a PNG crash-safely (a reader never sees a half-written file)."""
    with atomic_write(path) as handle:
        Image.fromarray(array).save(handle, format="PNG")


def log_image(loggers: Iterable[Any], key: str, image: np.ndarray, step: int, caption: str) -> None:
    """Send an RGB uint8 (H, W, 3) picture to the loggers that show images: wandb (with the caption) and
    TensorBoard (which has no captions); other loggers are skipped."""
    from pytorch_lightning.loggers import TensorBoardLogger, WandbLogger

    for logger in loggers:
        if isinstance(logger, WandbLogger):
            logger.log_image(key=key, images=[image], step=step, caption=[caption])
        elif isinstance(logger, TensorBoardLogger):
            logger.experiment.add_image(key, image, global_step=step, dataformats="HWC")


def plot_roc(curves: dict, path: str | Path, title: str = "") -> None:
    """Pixel ROC (TPR vs FPR, with AUC) and detection ROC (Pd vs Fa) side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (pixel_axis, target_axis) = plt.subplots(1, 2, figsize=(10, 4))
    pixel_axis.plot(curves["fpr"], curves["tpr"])
    pixel_axis.set(xscale="log", xlabel="false positive rate (pixels)", ylabel="true positive rate",
                   title=f"pixel ROC, AUC {float(curves['auc']):.4f}")
    target_axis.plot(np.asarray(curves["fa"]) * 1e6, curves["pd"], marker="o")
    for threshold, fa, pd in zip(curves["detection_thresholds"], curves["fa"], curves["pd"], strict=True):
        target_axis.annotate(f"{float(threshold):g}", (float(fa) * 1e6, float(pd)), fontsize=7)
    target_axis.set(xlabel="Fa (x1e-6)", ylabel="Pd", title="detection ROC (labels: thresholds)")
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    with atomic_write(path) as handle:
        figure.savefig(handle, format="png", dpi=120)
    plt.close(figure)


def _crop(array: np.ndarray, row: int, col: int, size: int) -> np.ndarray:
    """`size` x `size` window centred at (row, col), zero-filled beyond the image."""
    half = size // 2
    padded = np.pad(array.astype(np.float32), half)
    return padded[row: row + size, col: col + size]


def evolution_panel(views: dict[str, dict[str, np.ndarray | None]], spots: list[tuple[str, int, int]],
                    window: int = 33, zoom: int = 4, title: str = "") -> np.ndarray:
    """One row per target: image crop | ground truth | current label | prediction (gray, 0..1 for the maps).

    `views[name]` holds the full-size "image", "mask" (or None), "label" and "prediction" of an image;
    `spots` are (name, row, col) target centres. Returns an RGB uint8 array.
    """
    from PIL import ImageDraw

    tile = window * zoom
    gap = 2
    header = 14 if title else 0
    panel = np.full((header + len(spots) * (tile + gap), 4 * (tile + gap), 3), 40, np.uint8)
    for row_index, (name, row, col) in enumerate(spots):
        view = views[name]
        crops = [to_uint8(_crop(view["image"], row, col, window))]
        for key in ("mask", "label", "prediction"):
            values = view[key]
            crops.append(np.zeros((window, window), np.uint8) if values is None else
                         (np.clip(_crop(values, row, col, window), 0, 1) * 255).astype(np.uint8))
        top = header + row_index * (tile + gap)
        for column, crop in enumerate(crops):
            left = column * (tile + gap)
            panel[top: top + tile, left: left + tile] = np.kron(crop, np.ones((zoom, zoom), np.uint8))[..., None]
    if title:
        image = Image.fromarray(panel)
        ImageDraw.Draw(image).text((4, 1), f"{title}: image | ground truth | label | prediction",
                                   fill=(255, 255, 255))
        panel = np.asarray(image)
    return panel
