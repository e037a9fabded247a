"""Times our Pd/Fa metrics against the per-component reference on the SIRST test split.

The official checkpoint (ACM, LESPS centroid) predicts the 214 test images once, untimed; then, over the
same probability maps and masks:
  * `TargetDetection` fed one padded image per update (as evaluation feeds it) and 8 padded images per update;
  * the full `metric_suite` (IoU, nIoU, PA, Pd/Fa), one image per update;
  * `irstd.metrics.reference.reference_pd_fa`, a faithful one-image-one-component loop of the official
    evaluation (which uses skimage's `measure.label` + `regionprops`; skimage is not a dependency here),
    on the same predictions and masks binarised beforehand (the binarisation is not timed).
All of them must count the same targets, found targets and false-alarm pixels (asserted); the table gives
the min and median of `--repeats` runs (the methods take turns within each repeat) and the speed-up over
the reference measured in the same run.
Without the dataset or the checkpoint it falls back to synthetic maps (noisy blobs) and says so.

    .venv/bin/python scripts/bench_metrics.py
    .venv/bin/python scripts/bench_metrics.py --synthetic --repeats 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from irstd.metrics import FA_RULES, TargetDetection, metric_suite
from irstd.metrics.reference import reference_pd_fa
from irstd.ops.components import EIGHT_CONNECTED
from irstd.ops.padding import pad_bottom_right
from irstd.utils.device import resolve_device

SHARED = Path(__file__).resolve().parents[2] / "shared"
FLOOR = "floor: scipy 2D labelling of every prediction and mask, nothing else"
GOAL = 10.0  # the goal: this many times faster than the reference on the CPU

Item = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # probs B x 1 x H x W, mask B x 1 x H x W, valid_hw B x 2




def sirst_predictions(args: argparse.Namespace, device: torch.device) -> list[Item]:
    """One padded (probs, mask, valid_hw) per test image, as `evaluate_batches` sees them."""
    from irstd.data.datamodule import EvaluationOptions, IRSTDDataModule, LoadingOptions
    from irstd.training.module import IRSTDModule

    datamodule = IRSTDDataModule(root=str(args.root), split=args.split, mean=args.mean, std=args.std,
                                 evaluation=EvaluationOptions(pad_always=True),
                                 loading=LoadingOptions(eval_batch_size=1, num_workers=0), progress=False)
    datamodule.setup("test")
    model = IRSTDModule(backbone={"name": args.backbone}, weights=str(args.weights)).eval().to(device)
    items = []
    with torch.no_grad():
        for batch in datamodule.test_dataloader():
            probs = model.probabilities(batch["image"].to(device)).cpu()
            items.append((probs, batch["mask"], batch["valid_hw"]))
    return items


def synthetic_predictions(count: int, seed: int = 0) -> list[Item]:
    """Noisy probability maps of SIRST-like sizes: 1-3 small targets per image, most detected (some
    offset, some missed) and a few false blobs; padded as the official evaluation pads."""
    rng = np.random.default_rng(seed)
    items = []
    for _ in range(count):
        height, width = int(rng.integers(180, 261)), int(rng.integers(180, 401))
        rows, cols = np.mgrid[:height, :width]
        mask = np.zeros((height, width), bool)
        probs = rng.uniform(0, 0.45, (height, width))
        for _ in range(int(rng.integers(1, 4))):
            r, c, radius = rng.uniform(5, height - 5), rng.uniform(5, width - 5), rng.uniform(1, 4)
            mask |= (rows - r) ** 2 + (cols - c) ** 2 <= radius**2
            if rng.random() < 0.9:  # detected, maybe a little off
                r, c = r + rng.normal(0, 1.5), c + rng.normal(0, 1.5)
                probs = np.maximum(probs, np.exp(-((rows - r) ** 2 + (cols - c) ** 2) / (2 * radius**2)))
        for _ in range(int(rng.poisson(1.0))):  # false alarms
            r, c, radius = rng.uniform(0, height), rng.uniform(0, width), rng.uniform(0.5, 3)
            probs = np.maximum(probs, 0.9 * np.exp(-((rows - r) ** 2 + (cols - c) ** 2) / (2 * radius**2)))
        padded_h, padded_w = (height // 32 + 1) * 32, (width // 32 + 1) * 32
        items.append((pad_bottom_right(torch.from_numpy(probs).float()[None, None], padded_h, padded_w),
                      pad_bottom_right(torch.from_numpy(mask).float()[None, None], padded_h, padded_w),
                      torch.tensor([[height, width]])))
    return items


def batched(items: list[Item], size: int) -> list[Item]:
    """Groups of `size` images, padded bottom/right to the group's largest size."""
    out = []
    for start in range(0, len(items), size):
        group = items[start:start + size]
        height = max(p.shape[-2] for p, _, _ in group)
        width = max(p.shape[-1] for p, _, _ in group)
        out.append(tuple(torch.cat([pad_bottom_right(x[k], height, width) for x in group]) if k < 2
                         else torch.cat([x[2] for x in group]) for k in range(3)))
    return out


def time_interleaved(methods: dict[str, Callable[[], object]], warmup: int, repeats: int,
                     device: torch.device) -> tuple[dict[str, list[float]], dict[str, object]]:
    """Each repeat runs every method once, in turn, so that a change of load hits all of them alike."""
    results = {name: run() for _ in range(warmup) for name, run in methods.items()}
    times: dict[str, list[float]] = {name: [] for name in methods}
    for _ in range(repeats):
        for name, run in methods.items():
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            results[name] = run()  # returns Python numbers: the device work is done when it returns
            times[name].append(time.perf_counter() - start)
    return times, results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=SHARED / "datasets" / "SIRST", help="dataset folder")
    parser.add_argument("--split", default="SIRST", help="the X of img_idx/test_X.txt")
    parser.add_argument("--weights", type=Path, default=SHARED / "checkpoints" / "ACM_LESPS_centroid.pth.tar",
                        help="official checkpoint that makes the predictions")
    parser.add_argument("--backbone", default="acm", help="backbone of --weights (default: acm)")
    parser.add_argument("--mean", type=float, default=95.010, help="normalisation of the checkpoint's run")
    parser.add_argument("--std", type=float, default=41.511)
    parser.add_argument("--synthetic", action="store_true", help="synthetic maps instead of the checkpoint's")
    parser.add_argument("--images", type=int, default=214, help="synthetic images (default: 214)")
    parser.add_argument("--noise", type=float, default=0.0,
                        help="add noise * u**6 (u uniform) to every map: sparse false alarms like an early-training "
                             "network's or a low ROC threshold's (0.55 gives ~1.6%% false pixels)")
    parser.add_argument("--threshold", type=float, default=0.5)
    parser.add_argument("--fa-rule", default="component", choices=FA_RULES)
    parser.add_argument("--batch", type=int, default=8, help="images per update of the batched run")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                        help="where our metrics (and the model) run; the reference always runs on the CPU")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per method (default: 5)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs per method (default: 1)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch CPU threads (default: all)")
    args = parser.parse_args()
    device = resolve_device(args.device)
    torch.set_num_threads(args.threads)

    missing = [str(p) for p in (args.root, args.weights) if not p.exists()]
    if args.synthetic or missing:
        source = f"{args.images} synthetic maps (noisy blobs)"
        if missing and not args.synthetic:
            source += f": SYNTHETIC FALLBACK, not found: {', '.join(missing)}"
        items = synthetic_predictions(args.images)
    else:
        start = time.perf_counter()
        items = sirst_predictions(args, device)
        source = (f"{len(items)} {args.split} test images, predictions of {args.weights.name} ({args.backbone}), "
                  f"made in {time.perf_counter() - start:.0f} s (untimed)")

    if args.noise > 0:
        generator = torch.Generator().manual_seed(0)
        items = [((p + args.noise * torch.rand(p.shape, generator=generator) ** 6).clamp(0, 1), m, v)
                 for p, m, v in items]
        source += f", plus noise {args.noise} * u^6"
    single = [tuple(x.to(device) for x in item) for item in items]
    grouped = [tuple(x.to(device) for x in item) for item in batched(items, args.batch)]
    # the reference's input: each image's valid region, binarised as the metrics binarise it
    crops = [(p[0, 0, :h, :w], m[0, 0, :h, :w]) for p, m, v in items for h, w in v.tolist()]
    preds = [(p > args.threshold).numpy() for p, _ in crops]
    truths = [(m > 0).numpy() for _, m in crops]

    def detection(batches: list[Item]) -> Callable[[], tuple[int, int, int, int]]:
        def run():
            metric = TargetDetection(args.threshold, fa_rule=args.fa_rule).to(device)
            for probs, mask, valid_hw in batches:
                metric.update(probs, mask, valid_hw)
            metric.compute()
            return tuple(int(getattr(metric, k)) for k in ("targets", "found", "false_pixels", "pixels"))
        return run

    def suite() -> tuple[int, int, int, int]:
        metrics = metric_suite(args.threshold, fa_rule=args.fa_rule).to(device)
        for probs, mask, valid_hw in single:
            metrics.update(probs, mask, valid_hw)
        values = metrics.compute()
        pixels = sum(int(v.prod()) for _, _, v in single)
        return int(values["targets"]), int(values["found"]), round(float(values["fa"]) * pixels), pixels

    def label_only() -> None:
        for mask in (*preds, *truths):
            ndimage.label(mask, structure=EIGHT_CONNECTED)

    methods = {
        "reference_pd_fa (per image, per component)": lambda: reference_pd_fa(preds, truths, args.fa_rule),
        "TargetDetection, 1 image per update": detection(single),
        f"TargetDetection, {args.batch} images per update": detection(grouped),
        "metric_suite (IoU, nIoU, PA, Pd/Fa), 1 image per update": suite,
        # what any per-image labeller-based Pd/Fa pays at least: the reference's labelling calls alone
        FLOOR: label_only,
    }
    load = os.getloadavg()
    print(f"# bench_metrics: {source}")
    print(f"# our metrics on {device.type} ({args.threads} torch threads of {os.cpu_count()} cores), reference on "
          f"the CPU; threshold {args.threshold}, fa_rule {args.fa_rule}, warmup {args.warmup}, "
          f"repeats {args.repeats}; torch {torch.__version__}")
    print(f"# load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}", flush=True)
    timings, counts = time_interleaved(methods, args.warmup, args.repeats, device)
    load = os.getloadavg()
    print(f"# load average after: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")

    expected = counts[next(iter(methods))]
    for name, got in counts.items():
        if name == FLOOR:
            continue
        assert got == expected, f"{name}: (targets, found, false pixels, pixels) {got} != reference {expected}"
    targets, found, false_pixels, pixels = expected
    print(f"# all methods agree: {targets} targets, {found} found (Pd {found / max(targets, 1):.4f}), "
          f"{false_pixels} false-alarm pixels of {pixels} (Fa {false_pixels / max(pixels, 1) * 1e6:.3f} x1e-6)\n")

    reference = min(timings[next(iter(methods))])
    print(f"| method | seconds, min of {args.repeats} | seconds, median | time / reference | "
          "speed-up (reference / time) |")
    print("|---|---:|---:|---:|---:|")
    for name, times in timings.items():
        best = min(times)
        print(f"| {name} | {best:.4f} | {statistics.median(times):.4f} | {best / reference:.3f} | "
              f"{reference / best:.1f}x |")
    speedup = reference / min(timings["TargetDetection, 1 image per update"])
    floor = min(timings[FLOOR])
    print(f"\n# the labelling floor is {floor / reference:.0%} of the reference: no per-image labeller-based method "
          f"can beat the reference by more than {reference / floor:.1f}x on these images")
    where = "" if device.type == "cpu" else f" (measured on {device.type}; the goal is stated for the CPU)"
    print(f"# goal: Pd/Fa >= {GOAL:.0f}x faster than the reference on the CPU; per-image TargetDetection is "
          f"{speedup:.1f}x: {'met' if speedup >= GOAL else 'NOT met'}{where}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
