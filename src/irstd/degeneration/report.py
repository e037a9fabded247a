"""CSV tables and PNG figures of the mapping-degeneration study (the paper's Fig. 2 and Fig. 5 layouts)."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from irstd.degeneration.training import DegenerationCurves
from irstd.utils.files import atomic_write, write_text_atomic
from irstd.viz import to_uint8

# Fig. 2(b): images counted by their maximum IoU in [i, i + 0.1), the last bin closed at 1.
HISTOGRAM_EDGES = np.round(np.linspace(0.0, 1.0, 11), 1)
ZOOM = 24


def write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows([_cell(value) for value in row] for row in rows)
    write_text_atomic(path, buffer.getvalue())


def _cell(value: object) -> object:
    if isinstance(value, float):
        return "" if np.isnan(value) else f"{value:.6g}"
    return value


def histogram(best_iou: np.ndarray) -> np.ndarray:
    counts, _ = np.histogram(np.clip(best_iou, 0.0, 1.0), bins=HISTOGRAM_EDGES)
    return counts


def zoom_window(mask: np.ndarray, size: int = ZOOM) -> tuple[slice, slice]:
    """A size x size window on the mask's centroid (the whole frame when it has no target), inside the frame."""
    height, width = mask.shape
    rows, cols = np.nonzero(mask)
    centre = (rows.mean(), cols.mean()) if rows.size else (height / 2, width / 2)
    row = int(np.clip(round(centre[0]) - size // 2, 0, max(0, height - size)))
    col = int(np.clip(round(centre[1]) - size // 2, 0, max(0, width - size)))
    return slice(row, row + size), slice(col, col + size)


def _figure_output(figure, path: Path) -> None:
    import matplotlib.pyplot as plt

    with atomic_write(path) as handle:
        figure.savefig(handle, format="png", dpi=110)
    plt.close(figure)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _show_input(axis, image: np.ndarray, label: np.ndarray, window: tuple[slice, slice], title: str) -> None:
    axis.imshow(to_uint8(image[window]), cmap="gray", vmin=0, vmax=255)
    rows, cols = np.nonzero(label[window] > 0.5)
    axis.scatter(cols, rows, s=10, c="red")
    axis.set_title(title, fontsize=7)
    axis.axis("off")


def _show_prediction(axis, prediction: np.ndarray, window: tuple[slice, slice], title: str) -> None:
    axis.imshow(prediction[window], cmap="gray", vmin=0.0, vmax=max(float(prediction[window].max()), 1e-6))
    axis.set_title(title, fontsize=7)
    axis.axis("off")


def plot_fig2(curves: dict[str, DegenerationCurves], images: np.ndarray, labels: np.ndarray, masks: np.ndarray,
              examples: Sequence[int], path: Path) -> None:
    """(a) average IoU per epoch per scheme, (b) images per maximum-IoU bin, (c) zoomed best predictions."""
    plt = _pyplot()
    schemes = list(curves)
    columns = max(len(examples), 2)
    figure = plt.figure(figsize=(2.0 * columns, 4.2 + 2.0 * (1 + len(schemes))))
    grid = figure.add_gridspec(2 + len(schemes), columns, height_ratios=[2.2] + [1.0] * (1 + len(schemes)))
    half = columns // 2
    curve_axis = figure.add_subplot(grid[0, :half])
    for scheme, result in curves.items():
        epochs = np.arange(1, result.iou.shape[0] + 1)
        curve_axis.plot(epochs, result.iou.mean(1).numpy(), label=f"{scheme}-sample")
    curve_axis.set(xlabel="epoch", ylabel="average IoU", title="(a) average IoU of each epoch")
    curve_axis.legend(fontsize=8)
    bar_axis = figure.add_subplot(grid[0, half:])
    centres = HISTOGRAM_EDGES[:-1] + 0.05
    width = 0.08 / max(1, len(schemes))
    for offset, (scheme, result) in enumerate(curves.items()):
        bar_axis.bar(centres - 0.04 + width * (offset + 0.5), histogram(result.best_iou.numpy()), width=width,
                     label=f"{scheme}-sample")
    bar_axis.set(xlabel="maximum IoU", ylabel="images", title="(b) images per maximum IoU", xlim=(0, 1))
    bar_axis.legend(fontsize=8)
    names = next(iter(curves.values())).names
    for column, index in enumerate(examples):
        window = zoom_window(masks[index])
        _show_input(figure.add_subplot(grid[1, column]), images[index], labels[index], window, names[index])
        for row, (scheme, result) in enumerate(curves.items(), start=2):
            _show_prediction(figure.add_subplot(grid[row, column]), result.best_prediction[index].numpy(), window,
                             f"{scheme}: IoU {result.best_iou[index]:.2f}, epoch {int(result.best_epoch[index])}")
    figure.suptitle("(c) zoomed targets (red: point label) and predictions at their best epoch", y=0.005,
                    va="bottom", fontsize=9)
    figure.tight_layout()
    _figure_output(figure, path)


def plot_factor(factor: str, values: Sequence[object], mean_iou: np.ndarray, examples: dict[object, dict],
                path: Path) -> None:
    """Fig. 5 panel: average IoU per epoch per value (over runs), and one run's zoomed input and best prediction."""
    plt = _pyplot()
    columns = max(len(values), 2)
    figure = plt.figure(figsize=(2.0 * columns, 7.0))
    grid = figure.add_gridspec(3, columns, height_ratios=[2.2, 1.0, 1.0])
    axis = figure.add_subplot(grid[0, :])
    epochs = np.arange(1, mean_iou.shape[0] + 1)
    for column, value in enumerate(values):
        axis.plot(epochs, mean_iou[:, column], label=f"{factor} {value}")
    axis.set(xlabel="epoch", ylabel="average IoU over runs", title=f"mapping degeneration vs target {factor}")
    axis.legend(fontsize=8, ncol=min(len(values), 6))
    for column, value in enumerate(values):
        example = examples[value]
        window = zoom_window(example["mask"], size=min(example["mask"].shape[0], 2 * ZOOM))
        _show_input(figure.add_subplot(grid[1, column]), example["image"], example["label"], window,
                    f"{factor} {value}")
        _show_prediction(figure.add_subplot(grid[2, column]), example["prediction"], window,
                         f"IoU {example['iou']:.2f}, epoch {example['epoch']}")
    figure.tight_layout()
    _figure_output(figure, path)
