"""Round-0 pseudo-masks grown from centroid points on SIRST's training images: batched vs sequential, and quality.

For each initialiser, in one process:
  batched     irstd.labels.init, `--chunk` padded images per call (all targets of a chunk at once)
  reference   irstd.labels.init.reference: one image, one target (and one trial) at a time
Prints seconds per 100 images (min over repeats), reference / batched, and the IoU of the pseudo-masks against
the true masks (dataset-level: all intersections over all unions; nIoU: the mean of per-image IoUs), beside the
IoU of the bare points. Falls back to the synthetic dataset when SIRST is absent.

    python scripts/bench_label_init.py [--images 100] [--device cpu|cuda] [--root ../shared/datasets/SIRST]
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import numpy as np
import torch
from benchutil import wall_times  # a sibling script: python puts scripts/ on the path

from irstd.data.pseudo_labels import PseudoLabeler
from irstd.data.sources import scan_split
from irstd.data.synthetic import SyntheticSpec, generate_synthetic
from irstd.labels.init import diffusion_pseudo_masks, monte_carlo_clustering_masks
from irstd.labels.init.reference import diffusion_pseudo_masks_reference, monte_carlo_clustering_masks_reference

SHARED = Path(__file__).resolve().parents[2] / "shared"
INITIALISERS = {
    "diffusion": (diffusion_pseudo_masks, diffusion_pseudo_masks_reference),
    "clustering": (monte_carlo_clustering_masks, monte_carlo_clustering_masks_reference),
}


def load(root: Path, split: str, count: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(image, centroid point map, true mask) of the split's first `count` training images."""
    scan = scan_split(root, "train", split, label="centroid")
    scan.raise_if_fatal()
    return [(s.load_image(), s.load_label("centroid"), s.load_mask()) for s in scan.samples[:count]]


def pad(group: list[tuple[np.ndarray, ...]], device: torch.device) -> tuple[torch.Tensor, ...]:
    """B x 1 x H x W image, points and mask, zero-padded to the group's largest size, and B x 2 valid sizes."""
    height = max(image.shape[0] for image, _, _ in group)
    width = max(image.shape[1] for image, _, _ in group)
    stacked = np.zeros((3, len(group), 1, height, width), dtype=np.float32)
    for b, arrays in enumerate(group):
        for k, array in enumerate(arrays):
            stacked[k, b, 0, : array.shape[0], : array.shape[1]] = array
    valid_hw = torch.tensor([image.shape for image, _, _ in group], device=device)
    return (*(torch.from_numpy(a).to(device) for a in stacked), valid_hw)


def iou(masks: list[np.ndarray], truths: list[np.ndarray]) -> tuple[float, float]:
    inter = [np.logical_and(m, t).sum() for m, t in zip(masks, truths, strict=True)]
    union = [np.logical_or(m, t).sum() for m, t in zip(masks, truths, strict=True)]
    return float(sum(inter) / max(sum(union), 1)), float(np.mean([i / max(u, 1) for i, u in zip(inter, union,
                                                                                             strict=True)]))



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default=str(SHARED / "datasets" / "SIRST"))
    parser.add_argument("--split", default="SIRST")
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--chunk", type=int, default=16, help="images per batched call")
    parser.add_argument("--repeats", type=int, default=2, help="batched timings (min); the reference runs once")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--only", choices=(*INITIALISERS, "pseudo"), help="bench one initialiser")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    with tempfile.TemporaryDirectory() as scratch:
        root, split = Path(args.root), args.split
        if not root.is_dir():
            print(f"# {root} not found: using the synthetic dataset")
            root = generate_synthetic(Path(scratch) / "synthetic", SyntheticSpec(num_train=args.images, num_test=1))
            split = "synthetic"
        items = load(root, split, args.images)
    truths = [mask for _, _, mask in items]
    groups = [pad(items[i: i + args.chunk], device) for i in range(0, len(items), args.chunk)]
    numpy_items = [tuple(a[None, None].astype(np.float64) for a in item[:2]) + (np.array([item[0].shape]),)
                   for item in items]
    targets = sum(int(points.sum()) for _, points, _ in items)
    per_100 = 100 / len(items)

    print(f"# {len(items)} training images of {root.name} ({targets} targets), centroid points, device {device}, "
          f"{args.threads} threads, load {os.getloadavg()[0]:.1f}")
    print("| initialiser | batched s / 100 images | reference s / 100 images | reference / batched "
          "| IoU | nIoU |")
    print("|---|---|---|---|---|---|")
    point_iou = iou([points > 0.5 for _, points, _ in items], truths)
    print(f"| points alone | | | | {point_iou[0]:.3f} | {point_iou[1]:.3f} |")
    for name, (batched, reference) in INITIALISERS.items():
        if args.only and name != args.only:
            continue

        def run_batched(batched=batched) -> list[np.ndarray]:
            masks = []
            for image, points, _, valid_hw in groups:
                out = batched(image, points, valid_hw).cpu().numpy()
                masks += [out[b, 0, :h, :w] > 0.5 for b, (h, w) in enumerate(valid_hw.tolist())]
            return masks

        def run_reference(reference=reference) -> list[np.ndarray]:
            return [reference(image, points, valid_hw)[0, 0] > 0.5 for image, points, valid_hw in numpy_items]

        run_batched()  # warm-up: first calls pay for allocations and, on CUDA, kernel loading
        batched_times, masks = wall_times(run_batched, args.repeats, device)
        (reference_s,), reference_masks = wall_times(run_reference, 1, torch.device("cpu"))
        batched_s = min(batched_times)
        differing = sum(int((a != b).sum()) for a, b in zip(masks, reference_masks, strict=True))
        quality = iou(masks, truths)
        print(f"| {name} | {batched_s * per_100:.3f} | {reference_s * per_100:.2f} | "
              f"{reference_s / batched_s:.1f}x | {quality[0]:.3f} | {quality[1]:.3f} |"
              + (f" ({differing} px differ from the float64 reference)" if differing else ""))
    if not args.only or args.only == "pseudo":
        # Table 3's fixed pseudo labels run point by point in numpy: they are their own reference
        labeler = PseudoLabeler()
        (pseudo_s,), masks = wall_times(lambda: [labeler(image[0, 0], points[0, 0]) > 0.5
                                         for image, points, _ in numpy_items], 1, torch.device("cpu"))
        quality = iou(masks, truths)
        print(f"| pseudo (threshold 0.5, per point) | | {pseudo_s * per_100:.2f} | | {quality[0]:.3f} | "
              f"{quality[1]:.3f} |")


if __name__ == "__main__":
    main()
