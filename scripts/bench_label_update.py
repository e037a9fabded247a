"""One PAL label round over the SIRST training images: batched vs the per-target reference, against a training epoch.

Measured in one process, min over repeats:
  epoch        ACM forward + backward + Adam step over one epoch of training crops (256 x 256, batch 16, as many
               crops as training images), extrapolated from a few timed steps
  predict      ACM over every full training image (eval, 16 padded images per pass): what a round needs first
  pal_update   irstd.labels.update.pal.pal_update, 16 padded images per call, on the point labels
  easy set     easy_set_labels (the easy-set test and its labels), once before training
  admission    admission_scores + admitted_labels of every image, at an admission epoch
and the sequential references of pal_update and the easy set (irstd.labels.update.reference, one target at a
time). Prints seconds, seconds per 100 images, reference / batched and each step's share of the epoch.
Falls back to a synthetic training set when the SIRST folder is absent.

    python scripts/bench_label_update.py [--root ../shared/datasets/SIRST] [--weights ACM.pth.tar] [--device auto]
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
from pathlib import Path

import numpy as np
import torch
from benchutil import best_time  # a sibling script: python puts scripts/ on the path

from irstd.data.sources import normalization_stats, scan_split
from irstd.data.synthetic import SyntheticSpec, generate_synthetic
from irstd.labels.update.pal import admission_scores, admitted_labels, easy_set_labels, pal_update
from irstd.labels.update.reference import easy_set_reference, pal_update_reference
from irstd.lesps.evolution import evolve_labels
from irstd.lesps.reference import evolve_labels_reference
from irstd.losses import FocalLoss
from irstd.models import build_backbone, final_output
from irstd.models.weights import load_official_weights

SHARED = Path(__file__).resolve().parents[2] / "shared"
CHUNK = 16
CROP = 256


def load_training_set(root: Path, split: str) -> tuple[list[np.ndarray], list[np.ndarray], tuple[float, float]]:
    """Images (8-bit grey levels), centroid point maps and normalisation statistics of a training split."""
    scan = scan_split(root, "train", split, label="centroid")
    scan.raise_if_fatal()
    images = [sample.load_image() for sample in scan.samples]
    points = [sample.load_label("centroid") for sample in scan.samples]
    return images, points, normalization_stats(scan)


def padded_batches(arrays: list[np.ndarray], multiple: int = 32) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Chunks of CHUNK arrays zero-padded to a common size (a multiple of `multiple`), with their valid sizes."""
    batches = []
    for start in range(0, len(arrays), CHUNK):
        chunk = arrays[start: start + CHUNK]
        height = math.ceil(max(a.shape[0] for a in chunk) / multiple) * multiple
        width = math.ceil(max(a.shape[1] for a in chunk) / multiple) * multiple
        batch = torch.zeros(len(chunk), 1, height, width)
        for i, array in enumerate(chunk):
            batch[i, 0, : array.shape[0], : array.shape[1]] = torch.from_numpy(array)
        batches.append((batch, torch.tensor([a.shape for a in chunk], dtype=torch.int64)))
    return batches



def random_crops(images: list[np.ndarray], points: list[np.ndarray], rng: np.random.Generator
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """One training batch: CHUNK random 256 x 256 crops (zero-padded when an image is smaller)."""
    crops, labels = torch.zeros(CHUNK, 1, CROP, CROP), torch.zeros(CHUNK, 1, CROP, CROP)
    for i, index in enumerate(rng.integers(0, len(images), size=CHUNK)):
        image, label = images[index], points[index]
        top = rng.integers(0, max(image.shape[0] - CROP, 0) + 1)
        left = rng.integers(0, max(image.shape[1] - CROP, 0) + 1)
        patch = image[top: top + CROP, left: left + CROP]
        crops[i, 0, : patch.shape[0], : patch.shape[1]] = torch.from_numpy(patch)
        labels[i, 0, : patch.shape[0], : patch.shape[1]] = torch.from_numpy(label[top: top + CROP, left: left + CROP])
    return crops, labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default=str(SHARED / "datasets" / "SIRST"))
    parser.add_argument("--split", default="SIRST")
    parser.add_argument("--weights", default=str(SHARED / "checkpoints" / "ACM_LESPS_centroid.pth.tar"),
                        help="ACM weights for realistic predictions (random weights when missing)")
    parser.add_argument("--steps", type=int, default=3, help="timed training steps the epoch is extrapolated from")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          "cpu" if args.device == "auto" else args.device)

    root, split = Path(args.root), args.split
    with tempfile.TemporaryDirectory() as scratch:
        if not root.is_dir():
            root = generate_synthetic(Path(scratch) / "synthetic", SyntheticSpec(num_train=100, num_test=2))
            split = "synthetic"
        images, points, (mean, std) = load_training_set(root, split)
    num_images = len(images)
    image_batches, point_batches = padded_batches(images), padded_batches(points)

    net = build_backbone("acm").to(device)
    weights = args.weights if Path(args.weights).is_file() else None
    if weights:
        load_official_weights(net, weights)

    # --- a training epoch: forward + backward + step on 256 x 256 crops
    loss_fn, optimizer = FocalLoss(), torch.optim.Adam(net.parameters(), lr=5e-4)
    rng = np.random.default_rng(0)
    net.train()

    def train_step() -> None:
        crops, labels = random_crops(images, points, rng)
        loss = loss_fn(net((crops.to(device) - mean) / std), labels.to(device))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    train_step()  # warm-up
    step = best_time(train_step, args.steps, device)
    epoch = step * math.ceil(num_images / CHUNK)
    if weights:
        load_official_weights(net, weights)  # undo the timed steps for realistic predictions
    net.eval()

    # --- one round
    inputs = [(image.to(device), valid_hw) for image, valid_hw in image_batches]
    labels = [label.to(device) for label, _ in point_batches]
    preds: list[torch.Tensor] = []

    @torch.no_grad()
    def predict() -> None:
        preds.clear()
        for image, _ in inputs:  # already padded to multiples of 32
            preds.append(torch.sigmoid(final_output(net((image - mean) / std))))

    rows: dict[str, float] = {"predict": best_time(predict, args.repeats, device)}
    cases = [(pred, label, valid_hw) for pred, label, (_, valid_hw) in zip(preds, labels, inputs, strict=True)]
    cpu_round = [(pred.cpu().numpy(), label.cpu().numpy(), valid_hw.numpy()) for pred, label, valid_hw in cases]
    rows["pal_update"] = best_time(lambda: [pal_update(*case) for case in cases], args.repeats, device)
    rows["pal_update reference"] = best_time(lambda: [pal_update_reference(*case) for case in cpu_round], 1, device)
    # LESPS's round on the same predictions, against its per-target loop written as the released code
    rows["evolve_labels (LESPS)"] = best_time(lambda: [evolve_labels(*case) for case in cases], args.repeats, device)
    rows["evolve_labels (LESPS) reference"] = best_time(
        lambda: [evolve_labels_reference(*case) for case in cpu_round], 1, device)
    easy_cases = [(image, label, valid_hw) for (image, valid_hw), label in zip(inputs, labels, strict=True)]
    rows["easy set"] = best_time(lambda: [easy_set_labels(*case) for case in easy_cases], args.repeats, device)
    cpu_easy = [(image.cpu().numpy(), label.cpu().numpy(), valid_hw.numpy()) for image, label, valid_hw in easy_cases]
    rows["easy set reference"] = best_time(lambda: [easy_set_reference(*case) for case in cpu_easy], 1, device)
    rows["admission"] = best_time(lambda: [(admission_scores(*case), admitted_labels(*case)) for case in cases],
                                  args.repeats, device)

    targets = sum(int((p > 0.5).sum()) for p in points)
    print(f"# PAL label round: {num_images} training images of {root.name}, {targets} points, ACM "
          f"({'released weights' if weights else 'random weights'}), device {device}, {args.threads} threads, "
          f"load {os.getloadavg()[0]:.1f}")
    print(f"# training epoch (extrapolated from {args.steps} steps of {CHUNK} crops): {epoch:.2f} s")
    print("| step | s | s / 100 images | reference / batched | share of an epoch |")
    print("|---|---|---|---|---|")
    for name, seconds in rows.items():
        base = name.removesuffix(" reference")
        ratio = f"{seconds / rows[base]:.1f}x" if name.endswith("reference") else ""
        per_100 = 100 * seconds / num_images
        print(f"| {name} | {seconds:.4f} | {per_100:.4f} | {ratio} | {100 * seconds / epoch:.1f} % |")


if __name__ == "__main__":
    main()
