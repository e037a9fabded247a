"""Scoring a test split: probability maps from a model or from saved files, the same metric classes
as training, publication-style tables."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from irstd.data.sources import Sample, decode_image, find_file
from irstd.metrics import DetectionROC, metric_suite
from irstd.models import final_output, input_side_multiple
from irstd.ops.padding import pad_bottom_right, padded_size
from irstd.ops.tiling import predict_tiled
from irstd.utils.files import atomic_write
from irstd.viz import overlay, plot_roc, save_png

# the raw fractions of metrics.json, in table order
RESULT_KEYS = ("iou", "niou", "pixacc", "pd", "fa", "targets", "found", "false_targets")


class SavedPredictions:
    """Probability maps or binary masks another method saved as images, matched by file name.

    8-bit files are read as value / 255 and 16-bit ones as value / 65535, so a 0/255 mask and a
    probability map both meet the same `> threshold` rule.
    """

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise FileNotFoundError(f"pred_dir={self.folder} does not exist")

    def load(self, name: str, shape: tuple[int, int]) -> np.ndarray:
        path = find_file(self.folder, name)
        if path is None:
            raise FileNotFoundError(f"no prediction for {name} in pred_dir={self.folder}")
        with Image.open(path) as image:
            mode = image.mode
        values = decode_image(path)
        scale = 65535.0 if mode.startswith("I;16") else 255.0 if values.max(initial=0) > 1 else 1.0
        if values.shape != tuple(shape):
            raise ValueError(f"prediction {path} is {values.shape[1]}x{values.shape[0]} but its image is "
                             f"{shape[1]}x{shape[0]} (WxH)")
        return values / scale

    def __call__(self, batch: Mapping[str, Any]) -> torch.Tensor:
        probs = torch.zeros_like(batch["image"])
        for i, (name, (height, width)) in enumerate(zip(batch["name"], batch["valid_hw"].tolist(), strict=True)):
            probs[i, 0, :height, :width] = torch.from_numpy(self.load(name, (height, width)))
        return probs


def model_predictor(model: torch.nn.Module, device: torch.device, tile_size: int | None = None,
                    tile_overlap: int = 64) -> Callable[[Mapping[str, Any]], torch.Tensor]:
    """Probabilities of a LightningModule (`probabilities`) or a bare backbone returning logits.

    Frames with a side longer than `tile_size` are predicted in overlapping tiles (`irstd.ops.tiling`). Inputs
    whose sides are not multiples of the backbone's `side_multiple` are zero-padded at the bottom and right (as
    the evaluation batches are) and the probabilities cropped back.
    """
    model = model.to(device).eval()
    multiple = input_side_multiple(getattr(model, "net", model))

    def probabilities(image: torch.Tensor) -> torch.Tensor:
        height, width = image.shape[-2:]
        if height % multiple or width % multiple:
            image = pad_bottom_right(image, padded_size(height, multiple), padded_size(width, multiple))
        if hasattr(model, "probabilities"):
            return model.probabilities(image)[..., :height, :width]
        logits = model(image)
        # a backbone converted to half precision: the metrics threshold float32 probabilities, as in training
        return torch.sigmoid(final_output(logits).float())[..., :height, :width]

    @torch.no_grad()
    def predict(batch: Mapping[str, Any]) -> torch.Tensor:
        image = batch["image"].to(device)
        if tile_size and max(image.shape[-2:]) > tile_size:
            return predict_tiled(probabilities, image, tile_size, tile_overlap)
        return probabilities(image)

    return predict


def evaluate_batches(batches: Iterable[Mapping[str, Any]], predict: Callable[[Mapping[str, Any]], torch.Tensor],
                     *, device: torch.device, threshold: float = 0.5, fa_rule: str = "component",
                     roc: bool = False, samples: Mapping[str, Sample] | None = None,
                     save_dir: Path | None = None) -> tuple[dict[str, float], dict[str, np.ndarray] | None]:
    """Run `predict` over padded full-image batches and score them on each image's original size.

    With `save_dir`, writes the binary prediction (`masks/NAME.png`, 0/255) and an overlay of prediction
    (red) and ground truth (green) on the frame (`overlays/NAME.png`) for every image.
    """
    suite = metric_suite(threshold, fa_rule=fa_rule).to(device)
    curves = DetectionROC().to(device) if roc else None
    for batch in batches:
        probs = predict(batch).to(device)
        target = batch["mask"].to(device)
        valid_hw = batch["valid_hw"].to(device)
        suite.update(probs, target, valid_hw)
        if curves is not None:
            curves.update(probs, target, valid_hw)
        if save_dir is not None:
            _save_predictions(batch, probs.cpu(), threshold, samples, save_dir)
    metrics = {key: float(value) for key, value in suite.compute().items()}
    roc_curves = {k: v.cpu().numpy() for k, v in curves.compute().items()} if curves is not None else None
    if roc_curves is not None:
        metrics["auc"] = float(roc_curves["auc"])
    return metrics, roc_curves


def _save_predictions(batch: Mapping[str, Any], probs: torch.Tensor, threshold: float,
                      samples: Mapping[str, Sample] | None, save_dir: Path) -> None:
    for i, (name, (height, width)) in enumerate(zip(batch["name"], batch["valid_hw"].tolist(), strict=True)):
        predicted = probs[i, 0, :height, :width].numpy() > threshold
        stem = Path(name).stem
        save_png(predicted.astype(np.uint8) * 255, save_dir / "masks" / f"{stem}.png")
        frame = samples[name].load_image() if samples else batch["image"][i, 0, :height, :width].numpy()
        truth = batch["mask"][i, 0, :height, :width].numpy() > 0 if batch["has_mask"][i] else None
        save_png(overlay(frame, predicted, truth), save_dir / "overlays" / f"{stem}.png")


def results_table(rows: Mapping[str, Mapping[str, float]]) -> str:
    """Markdown table in the units of published tables: IoU, nIoU, PA and Pd x100, Fa x1e6."""
    lines = ["| method | IoU x100 | nIoU x100 | PA x100 | Pd x100 (found/targets) | Fa x1e6 | false targets |",
             "|---|---|---|---|---|---|---|"]
    for name, m in rows.items():
        lines.append(f"| {name} | {100 * m['iou']:.3f} | {100 * m['niou']:.3f} | {100 * m['pixacc']:.3f} | "
                     f"{100 * m['pd']:.3f} ({int(m['found'])}/{int(m['targets'])}) | {1e6 * m['fa']:.3f} | "
                     f"{int(m['false_targets'])} |")
    return "\n".join(lines)


def save_roc(curves: Mapping[str, np.ndarray], output_dir: Path, title: str) -> None:
    """`roc.png` and `roc.npz` (every curve as arrays) in the run directory."""
    plot_roc(curves, output_dir / "roc.png", title)
    with atomic_write(output_dir / "roc.npz") as handle:
        np.savez(handle, **curves)
