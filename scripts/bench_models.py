"""Per backbone: parameters, forward and forward+backward seconds per batch, peak memory, and each time as a
ratio to a reference backbone (U-Net) measured in the same run.

Each backbone runs in its own subprocess so that its peak memory is clean: on CUDA
`torch.cuda.max_memory_allocated`, on the CPU the growth of the process's peak RSS
(`ru_maxrss`) over its value once the model and the batch exist.

"forward" is inference (eval mode, no autograd); "fwd+bwd" is a training step without the optimizer
(train mode, deep-supervision outputs summed, backward). Times are the min and median of `--repeats`
runs after `--warmup` untimed ones.

    .venv/bin/python scripts/bench_models.py                       # all backbones, 16x1x256x256
    .venv/bin/python scripts/bench_models.py --skip dnanet --batch 4
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time

import torch
from benchutil import run_measurement  # a sibling script: python puts scripts/ on the path

from irstd.models import available_backbones, build_backbone
from irstd.utils.device import resolve_device


def peak_rss_mb() -> float:
    # ru_maxrss is in KiB on Linux (bytes on macOS)
    scale = 1 / 1024 if sys.platform != "darwin" else 1 / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def timed(step, device: torch.device, warmup: int, repeats: int) -> list[float]:
    for _ in range(warmup):
        step()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return times


def measure(name: str, batch: int, size: int, device: torch.device, warmup: int, repeats: int) -> dict:
    """Time one backbone in this process; returns a JSON-able dict."""
    torch.manual_seed(0)
    model = build_backbone(name).to(device)
    image = torch.randn(batch, 1, size, size, device=device)
    params = sum(p.numel() for p in model.parameters())

    @torch.no_grad()
    def forward():
        model.eval()
        model(image)

    def forward_backward():
        model.train()
        model.zero_grad(set_to_none=True)
        out = model(image)
        outs = out if isinstance(out, (list, tuple)) else [out]
        sum(o.float().mean() for o in outs).backward()

    result = {"backbone": name, "params": params, "device": str(device), "batch": [batch, 1, size, size]}
    for key, step in (("forward", forward), ("fwd_bwd", forward_backward)):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            base = torch.cuda.memory_allocated(device)
        else:
            base = peak_rss_mb()  # the peak so far: model, batch and (after forward) the forward's peak
        times = timed(step, device, warmup, repeats)
        if device.type == "cuda":
            peak = (torch.cuda.max_memory_allocated(device) - base) / 2**20
        else:
            # both from the RSS before the forward; ru_maxrss only grows, so a training step that peaks
            # below the forward would show the forward's peak (it never does here)
            peak = peak_rss_mb() - result.get("rss_base_mb", base)
            result.setdefault("rss_base_mb", base)
        result[key] = {"min": min(times), "median": statistics.median(times), "times": times, "peak_mb": peak}
    return result


def run_worker(args: argparse.Namespace, name: str) -> dict | None:
    """Measure `name` in a fresh interpreter; None (with its stderr shown) when it fails."""
    command = [sys.executable, os.path.abspath(__file__), "--worker", name, "--batch", str(args.batch),
               "--size", str(args.size), "--device", args.device, "--warmup", str(args.warmup),
               "--repeats", str(args.repeats), "--threads", str(args.threads)]
    return run_measurement(command, name)


def table(results: list[dict], reference: dict | None) -> str:
    lines = ["| backbone | params | forward s (min / median) | fwd+bwd s (min / median) | peak MB (fwd / fwd+bwd) "
             f"| fwd ratio vs {reference['backbone'] if reference else '-'} "
             f"| fwd+bwd ratio vs {reference['backbone'] if reference else '-'} | load 1 min (start / end) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        f, t = r["forward"], r["fwd_bwd"]
        ratios = ("-", "-") if reference is None else (
            f"{f['min'] / reference['forward']['min']:.2f}", f"{t['min'] / reference['fwd_bwd']['min']:.2f}")
        lines.append(f"| {r['backbone']} | {r['params'] / 1e6:.3f} M | {f['min']:.3f} / {f['median']:.3f} | "
                     f"{t['min']:.3f} / {t['median']:.3f} | {f['peak_mb']:.0f} / {t['peak_mb']:.0f} | "
                     f"{ratios[0]} | {ratios[1]} | {r['load_1m'][0]:.2f} / {r['load_1m'][1]:.2f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbones", nargs="+", default=available_backbones(), choices=available_backbones())
    parser.add_argument("--skip", nargs="*", default=[], choices=available_backbones(),
                        help="backbones to leave out (e.g. dnanet: ~35 s and ~10 GB per CPU step at batch 16)")
    parser.add_argument("--reference", default="unet", choices=available_backbones(),
                        help="backbone the ratios are taken against; always measured (default: unet)")
    parser.add_argument("--batch", type=int, default=16, help="images per batch (default: 16)")
    parser.add_argument("--size", type=int, default=256, help="image height and width, a multiple of 32")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per measurement "
                        "(default: 3 on the CPU, 20 on CUDA)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs before timing (default: 1)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch CPU threads (default: all)")
    parser.add_argument("--json", help="also write the raw results to this file")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.size % 32:
        parser.error("--size must be a multiple of 32")
    device = resolve_device(args.device)
    args.device = device.type
    if args.repeats is None:
        args.repeats = 20 if device.type == "cuda" else 3
    torch.set_num_threads(args.threads)

    if args.worker:
        print(json.dumps(measure(args.worker, args.batch, args.size, device, args.warmup, args.repeats)))
        return

    names = [n for n in dict.fromkeys([args.reference, *args.backbones]) if n not in args.skip or n == args.reference]
    hardware = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{os.cpu_count()} CPU cores"
    load = os.getloadavg()
    print(f"# bench_models: batch {args.batch}x1x{args.size}x{args.size} on {device.type} ({hardware}), "
          f"{args.threads} threads, torch {torch.__version__}, warmup {args.warmup}, repeats {args.repeats}, "
          f"one subprocess per backbone")
    print(f"# load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}", flush=True)
    if device.type == "cpu" and load[0] > 1.0:
        print("# WARNING: other processes may be using the cores; oversubscribed torch threads can run 10-20x slower "
              "(ACM at 16x256x256: 0.12 s unloaded, 2.3 s at load 3.5 on 2 cores): compare rows of similar "
              "load only, or use --threads 1", flush=True)
    results = []
    for name in names:
        start = time.perf_counter()
        result = run_worker(args, name)
        print(f"# {name}: {'done' if result else 'FAILED'} in {time.perf_counter() - start:.0f} s", flush=True)
        if result:
            results.append(result)
    reference = next((r for r in results if r["backbone"] == args.reference), None)
    load = os.getloadavg()
    print(f"# load average after: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print(f"# peak MB: {'CUDA max_memory_allocated' if device.type == 'cuda' else 'growth of peak RSS'} "
          "above the model and batch; ratios: min time / the reference's min time, same run\n")
    order = {n: i for i, n in enumerate(args.backbones)}
    print(table(sorted(results, key=lambda r: order.get(r["backbone"], -1)), reference))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"args": vars(args), "load": load, "results": results}, handle, indent=2)


if __name__ == "__main__":
    main()
