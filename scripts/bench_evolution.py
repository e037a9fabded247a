"""One LESPS evolution round over the SIRST training images: the released code's per-target loop vs ours.

Measured in one process, min/median over repeats:
  forward      the network over every training image (eval mode, one image per pass)
  released     the released code's algorithm: for every target of every image a full-image 33 x 33
               convolution to build its window, CPU connected components of its candidates and a loop
               over them (re-implemented here from its description, in torch + SciPy, for timing)
  spec         our sequential numpy reference (irstd.lesps.reference), one target at a time
  ours (1)     irstd.lesps.evolve_labels, one image per call
  ours (16)    the same, 16 padded images per call (what the callback does: label_update.evolve_chunk=16)
Prints seconds and the ratios the issue asks for (released / ours, evolution / forward).

    python scripts/bench_evolution.py [--root ../shared/datasets/SIRST] [--weights ACM.pth.tar] [--device auto]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from benchutil import wall_times  # a sibling script: python puts scripts/ on the path
from scipy import ndimage

from irstd.data.datamodule import HoldoutOptions, IRSTDDataModule, LoadingOptions
from irstd.data.datasets import pad_collate
from irstd.lesps import evolve_labels
from irstd.lesps.reference import evolve_labels_reference
from irstd.ops.components import EIGHT_CONNECTED
from irstd.training.module import IRSTDModule

SHARED = Path(__file__).resolve().parents[2] / "shared"


def released_style_round(pred: torch.Tensor, label: torch.Tensor, size: tuple[int, int], Tb=0.5, k=0.5,
                         window=33) -> torch.Tensor:
    """The released `update_gt` algorithm's work per image: a loop over targets, each with a full-image
    convolution and CPU labelling of its candidates (semantics as released: max-combination)."""
    positive = (label > 0.5).float()
    updated = label.clone()
    targets, count = ndimage.label(positive[0, 0].cpu().numpy(), structure=EIGHT_CONNECTED)
    kernel = torch.ones(1, 1, window, window, device=pred.device)
    for target_id in range(1, count + 1):
        coords = np.argwhere(targets == target_id)
        centre = coords.mean(axis=0).astype(int)
        point = torch.zeros_like(pred)
        point[0, 0, centre[0], centre[1]] = 1
        neighbourhood = (F.conv2d(point, kernel, padding=window // 2) > 0).float()
        pred_window = pred * neighbourhood
        label_window = label * neighbourhood
        threshold = pred_window.max() * (Tb + k * (1 - Tb) * len(coords) / (size[0] * size[1] * 0.0015))
        candidates = (pred_window > threshold).float()
        components, num = ndimage.label(candidates[0, 0].cpu().numpy() > 0, structure=EIGHT_CONNECTED)
        if num > 1:
            for component in range(1, num + 1):
                current = candidates * torch.from_numpy(components == component).float().to(pred.device)
                if (current * positive).sum() == 0:
                    candidates = candidates - current
        update = label_window * (1 - candidates) + (label_window + pred_window) / 2 * candidates
        updated = torch.max(updated, update)
    return torch.max(updated, (label == 1).float())



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default=str(SHARED / "datasets" / "SIRST"))
    parser.add_argument("--split", default="SIRST")
    parser.add_argument("--weights", default=str(SHARED / "checkpoints" / "ACM_LESPS_centroid.pth.tar"),
                        help="ACM weights for realistic predictions (random weights when missing)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--json", help="also write the raw results to this file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          "cpu" if args.device == "auto" else args.device)

    with tempfile.TemporaryDirectory() as bank_dir:
        datamodule = IRSTDDataModule(root=args.root, split=args.split, label="centroid", bank_dir=bank_dir,
                                     loading=LoadingOptions(num_workers=0), holdout=HoldoutOptions(split=None),
                                     progress=False)
        datamodule.setup("fit")
        items = [datamodule.evolve_dataloader().dataset[i] for i in range(len(datamodule.train_scan.samples))]
    weights = args.weights if Path(args.weights).is_file() else None
    model = IRSTDModule(backbone={"name": "acm"}, weights=weights).to(device).eval()
    batches = [pad_collate([item]) for item in items]
    predictions: list[torch.Tensor] = []

    @torch.no_grad()
    def forward() -> None:
        predictions.clear()
        predictions.extend(model.probabilities(b["image"].to(device)) for b in batches)

    forward_times = wall_times(forward, args.repeats, device)[0]
    labels = [b["label"].to(device) for b in batches]
    sizes = [b["valid_hw"].to(device) for b in batches]
    targets = sum(int(ndimage.label(label[0, 0].cpu().numpy() > 0.5, structure=EIGHT_CONNECTED)[1])
                  for label in labels)

    def ours_single() -> None:
        for pred, label, valid_hw in zip(predictions, labels, sizes, strict=True):
            evolve_labels(pred, label, valid_hw)

    grouped = [pad_collate(items[i: i + 16]) for i in range(0, len(items), 16)]
    grouped_preds = []
    with torch.no_grad():
        for group in grouped:
            grouped_preds.append(model.probabilities(group["image"].to(device)))

    def ours_batched() -> None:
        for group, pred in zip(grouped, grouped_preds, strict=True):
            evolve_labels(pred, group["label"].to(device), group["valid_hw"].to(device))

    def released() -> None:
        for pred, label, valid_hw in zip(predictions, labels, sizes, strict=True):
            released_style_round(pred, label, tuple(valid_hw[0].tolist()))

    cpu_inputs = [(p.cpu().double().numpy(), lab.cpu().double().numpy(), v.cpu().numpy())
                  for p, lab, v in zip(predictions, labels, sizes, strict=True)]

    def spec() -> None:
        for pred, label, valid_hw in cpu_inputs:
            evolve_labels_reference(pred, label, valid_hw)

    rows = {"forward": forward_times}
    for name, fn in (("released", released), ("spec", spec), ("ours (1)", ours_single), ("ours (16)", ours_batched)):
        rows[name] = wall_times(fn, args.repeats, device)[0]
    load = os.getloadavg()[0]
    print(f"# one evolution round: {len(items)} images, {targets} targets, ACM "
          f"({'released weights' if weights else 'random weights'}), device {device}, "
          f"{args.threads} threads, load {load:.1f}")
    print("| step | min s | median s | released / this | this / forward |")
    print("|---|---|---|---|---|")
    best = {name: min(times) for name, times in rows.items()}
    for name, times in rows.items():
        ratio = f"{best['released'] / best[name]:.1f}x" if name != "forward" else ""
        share = f"{100 * best[name] / best['forward']:.1f} %" if name != "forward" else ""
        print(f"| {name} | {min(times):.4f} | {statistics.median(times):.4f} | {ratio} | {share} |")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"args": vars(args), "device": str(device), "images": len(items), "targets": targets,
                       "weights": weights, "load": load, "seconds": rows}, handle, indent=2)


if __name__ == "__main__":
    main()
