"""Single-sample training of the degeneration study: N networks vmapped in one call vs the same N trained one by one.

Both sides train the same N U-Nets on the same N images for the same steps in this process (the loop is what a
per-image script does, minus its process start-up); prints seconds, steps per second and the ratio loop / vmapped.

    python scripts/bench_degeneration.py [--runs 32] [--size 64] [--steps 20] [--width 16] [--depth 3] [--device auto]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from irstd.data import synthetic as syn
from irstd.degeneration.training import StudySamples, train_single_sample
from irstd.losses import focal_loss
from irstd.models.unet import UNet


def study_images(runs: int, size: int) -> StudySamples:
    signal, footprint = syn.gaussian_target(3, 100.0)
    images, labels, masks = [], [], []
    for background in syn.generated_backgrounds(runs, size, seed=0):
        image, mask = syn.place_target(background, signal, footprint, size // 2, size // 2)
        images.append((image - image.mean()) / image.std())
        labels.append(syn.points_label([syn.centroid_pixel(mask)], mask.shape))
        masks.append(mask)

    def stack(arrays):
        return torch.from_numpy(np.stack(arrays)[:, None].copy())

    return StudySamples(stack(images).float(), stack(labels).float(), stack(masks).bool(),
                        [str(i) for i in range(runs)])


def loop(build, samples: StudySamples, steps: int) -> None:
    for run in range(len(samples)):
        torch.manual_seed(run)
        network = build().to(samples.images.device).train()
        optimizer = torch.optim.Adam(network.parameters(), lr=5e-4)
        for _ in range(steps):
            loss = focal_loss(network(samples.images[run:run + 1]), samples.labels[run:run + 1])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()


def timed(function, device: torch.device) -> float:
    start = time.perf_counter()
    function()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=32)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          "cpu" if args.device == "auto" else args.device)
    samples = study_images(args.runs, args.size).to(device)

    def build():
        return UNet(width=args.width, depth=args.depth, target_prior=0.5)

    # warm-up: first calls pay for kernel selection and vmap's tracing of batching rules
    train_single_sample(build, samples.select(slice(0, 2)), 2)
    loop(build, samples.select(slice(0, 1)), 2)
    vmapped = timed(lambda: train_single_sample(build, samples, args.steps), device)
    sequential = timed(lambda: loop(build, samples, args.steps), device)
    steps = args.runs * args.steps
    print(f"{args.runs} U-Nets (width {args.width}, depth {args.depth}) x {args.steps} steps on "
          f"{args.size}x{args.size}, {device}, {torch.get_num_threads()} threads")
    print("| training | seconds | network-steps / s |")
    print("|---|---:|---:|")
    print(f"| one by one | {sequential:.2f} | {steps / sequential:.1f} |")
    print(f"| vmapped | {vmapped:.2f} | {steps / vmapped:.1f} |")
    print(f"speed-up of vmapped over one by one: {sequential / vmapped:.2f}x")


if __name__ == "__main__":
    main()
