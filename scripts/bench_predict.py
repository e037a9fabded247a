"""Inference throughput per backbone and frame size: the full frame in one pass against tiled inference
(`irstd.ops.tiling.predict_tiled`), each as images per second, their ratio, and the peak memory of each.

Each (backbone, size, mode) runs in its own subprocess so that its peak memory is clean: on CUDA
`torch.cuda.max_memory_allocated`, on the CPU the growth of the process's peak RSS (`ru_maxrss`) over its value
once the model and the frame exist (as `bench_models.py`). Eval mode, no autograd, batch 1, probabilities out.

Images/s is 1 / the fastest of `--repeats` timed runs after one untimed run. A run slower than `--long` seconds
(DNA-Net on a 2048x2048 frame on a CPU) is timed once, its untimed run skipped: at that length the first call's
set-up cost does not matter. Frames no larger than a tile go through `predict_tiled` in one pass, so there the
ratio shows its overhead only.

    .venv/bin/python scripts/bench_predict.py                                   # acm, alcnet, dnanet at 256, 512, 2048
    .venv/bin/python scripts/bench_predict.py --backbones acm --sizes 1024 --tile 256 --overlap 32
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch
from bench_models import peak_rss_mb  # sibling scripts: python puts scripts/ on the path
from benchutil import run_measurement

from irstd.models import available_backbones, build_backbone, final_output
from irstd.ops.tiling import predict_tiled, tile_starts
from irstd.utils.device import resolve_device

PAPER_BACKBONES = ["acm", "alcnet", "dnanet"]
MODES = ("full", "tiled")


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(name: str, size: int, mode: str, args: argparse.Namespace, device: torch.device) -> dict:
    """Time one backbone on one frame in this process; returns a JSON-able dict."""
    torch.manual_seed(0)
    net = build_backbone(name).to(device).eval()
    image = torch.randn(1, 1, size, size, device=device)

    def probabilities(batch: torch.Tensor) -> torch.Tensor:
        logits = net(batch)
        return torch.sigmoid(final_output(logits))

    @torch.no_grad()
    def predict() -> None:
        if mode == "tiled":
            predict_tiled(probabilities, image, args.tile, args.overlap)
        else:
            probabilities(image)

    synchronize(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    else:
        base = peak_rss_mb()
    def timed_run() -> float:
        synchronize(device)
        start = time.perf_counter()
        predict()
        synchronize(device)
        return time.perf_counter() - start

    first = timed_run()
    times = [first] if first > args.long else [timed_run() for _ in range(args.repeats)]
    peak = ((torch.cuda.max_memory_allocated(device) - base) / 2**20 if device.type == "cuda"
            else peak_rss_mb() - base)
    tiles = len(tile_starts(size, args.tile, args.overlap)) ** 2 if mode == "tiled" and size > args.tile else 1
    return {"backbone": name, "size": size, "mode": mode, "device": str(device), "times": times,
            "images_per_s": 1 / min(times), "peak_mb": peak, "tiles": tiles}


def run_worker(args: argparse.Namespace, name: str, size: int, mode: str) -> dict | None:
    """Measure in a fresh interpreter; None (with its stderr shown) when it fails, e.g. out of memory."""
    command = [sys.executable, os.path.abspath(__file__), "--worker", f"{name}:{size}:{mode}", "--device", args.device,
               "--tile", str(args.tile), "--overlap", str(args.overlap), "--repeats", str(args.repeats),
               "--long", str(args.long), "--threads", str(args.threads)]
    return run_measurement(command, f"{name} {size} {mode}")


def table(results: list[dict], args: argparse.Namespace) -> str:
    by_key = {(r["backbone"], r["size"], r["mode"]): r for r in results}
    lines = [f"| backbone | frame | full img/s | tiled img/s ({args.tile}/{args.overlap}) | tiled/full img/s | tiles "
             "| peak MB full | peak MB tiled | runs (full / tiled) | load 1 min (max) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name in args.backbones:
        for size in args.sizes:
            full, tiled = by_key.get((name, size, "full")), by_key.get((name, size, "tiled"))
            if full is None and tiled is None:
                continue

            def cell(result: dict | None, key: str, spec: str) -> str:
                return "failed" if result is None else format(result[key], spec)

            ratio = "-" if full is None or tiled is None else f"{tiled['images_per_s'] / full['images_per_s']:.2f}"
            runs = " / ".join("-" if r is None else str(len(r["times"])) for r in (full, tiled))
            load = max(value for r in (full, tiled) if r is not None for value in r["load_1m"])
            lines.append(f"| {name} | {size}x{size} | {cell(full, 'images_per_s', '.3g')} | "
                         f"{cell(tiled, 'images_per_s', '.3g')} | {ratio} | {cell(tiled, 'tiles', 'd')} | "
                         f"{cell(full, 'peak_mb', '.0f')} | {cell(tiled, 'peak_mb', '.0f')} | {runs} | {load:.2f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbones", nargs="+", default=PAPER_BACKBONES, choices=available_backbones())
    parser.add_argument("--sizes", nargs="+", type=int, default=[256, 512, 2048],
                        help="square frame sides, multiples of 32 (default: 256 512 2048)")
    parser.add_argument("--tile", type=int, default=512, help="tile side of tiled inference (default: 512)")
    parser.add_argument("--overlap", type=int, default=64, help="overlap of neighbouring tiles (default: 64)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per measurement "
                        "(default: 3 on the CPU, 20 on CUDA)")
    parser.add_argument("--long", type=float, default=5.0,
                        help="seconds above which the untimed first run is the only one (default: 5)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch CPU threads (default: all)")
    parser.add_argument("--json", help="also write the raw results to this file")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if any(size % 32 for size in args.sizes) or args.tile % 32:
        parser.error("--sizes and --tile must be multiples of 32")
    device = resolve_device(args.device)
    args.device = device.type
    if args.repeats is None:
        args.repeats = 20 if device.type == "cuda" else 3
    torch.set_num_threads(args.threads)

    if args.worker:
        name, size, mode = args.worker.split(":")
        print(json.dumps(measure(name, int(size), mode, args, device)))
        return

    hardware = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{os.cpu_count()} CPU cores"
    load = os.getloadavg()
    print(f"# bench_predict: batch 1, frames {args.sizes}, tile {args.tile} overlap {args.overlap}, on {device.type} "
          f"({hardware}), {args.threads} threads, torch {torch.__version__}, repeats {args.repeats} "
          f"(1 above {args.long:g} s), one subprocess per measurement")
    print(f"# load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}", flush=True)
    if device.type == "cpu" and load[0] > 1.0:
        print("# WARNING: other processes may be using the cores; compare rows of similar load only", flush=True)
    results = []
    for name in args.backbones:
        for size in args.sizes:
            for mode in MODES:
                start = time.perf_counter()
                result = run_worker(args, name, size, mode)
                print(f"# {name} {size} {mode}: {'done' if result else 'FAILED'} in "
                      f"{time.perf_counter() - start:.0f} s", flush=True)
                if result:
                    results.append(result)
    load = os.getloadavg()
    print(f"# load average after: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print(f"# peak MB: {'CUDA max_memory_allocated' if device.type == 'cuda' else 'growth of peak RSS'} above the "
          "model and frame; tiled/full img/s > 1: tiling is faster; tiles: forward passes per frame\n")
    print(table(results, args))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"args": vars(args), "load": load, "results": results}, handle, indent=2)


if __name__ == "__main__":
    main()
