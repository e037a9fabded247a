"""Seconds per image of the training-free detectors (`irstd.classic`) on the SIRST test split.

Each detector runs `forward` (saliency + threshold) on every image alone, batch 1, in native units (0-255), after
one untimed warm-up image; CUDA times are synchronized. Detectors whose module does not exist yet are skipped with
a note. Prints one markdown table per device: images, mean / median / max seconds per image, and the mean as a
ratio to the fastest detector of that device.

    .venv/bin/python scripts/bench_classic.py                               # all detectors, all 214 images
    .venv/bin/python scripts/bench_classic.py --detectors ipi pstnn --limit 30 --threads 1
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import torch

from irstd.classic import available_detectors, build_detector
from irstd.data.sources import decode_image, find_file, read_split_file

DEFAULT_ROOT = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "SIRST"


def load_images(root: Path, split_file: str, limit: int | None) -> list[torch.Tensor]:
    names = read_split_file(root / "img_idx" / split_file)[:limit]
    images = []
    for name in names:
        path = find_file(root / "images", name)
        if path is None:
            raise FileNotFoundError(f"{name}: no image under {root / 'images'}")
        images.append(torch.from_numpy(decode_image(path))[None, None])
    return images


def time_detector(detector, images: list[torch.Tensor], device: torch.device) -> list[float]:
    def run(image: torch.Tensor) -> None:
        detector(image.to(device))
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    run(images[0])
    times = []
    for image in images:
        start = time.perf_counter()
        run(image)
        times.append(time.perf_counter() - start)
    return times


def table(rows: list[tuple[str, list[float]]]) -> str:
    fastest = min(statistics.mean(times) for _, times in rows)
    lines = ["| detector | images | mean s/image | median s/image | max s/image | ratio to fastest |",
             "|---|---:|---:|---:|---:|---:|"]
    for name, times in rows:
        mean = statistics.mean(times)
        lines.append(f"| {name} | {len(times)} | {mean:.4f} | {statistics.median(times):.4f} | {max(times):.4f} "
                     f"| {mean / fastest:.1f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--detectors", nargs="+", default=available_detectors(), choices=available_detectors())
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="SIRST root (images/, img_idx/)")
    parser.add_argument("--split-file", default="test_SIRST.txt", help="split file under img_idx/")
    parser.add_argument("--limit", type=int, default=None, help="first N images of the split (default: all)")
    default_devices = ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]
    parser.add_argument("--devices", nargs="+", default=default_devices, choices=["cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch CPU threads (default: all)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    images = load_images(args.root, args.split_file, args.limit)
    detectors = {}
    for name in args.detectors:
        try:
            detectors[name] = build_detector(name)
        except (ModuleNotFoundError, AttributeError) as err:
            # the registry lists detectors whose modules other work has not landed yet
            print(f"# {name}: skipped, not importable ({err})")
    load = os.getloadavg()
    print(f"# bench_classic: {len(images)} images of {args.root / 'img_idx' / args.split_file}, batch 1, "
          f"{args.threads} threads, torch {torch.__version__}; load average before: {load[0]:.2f}", flush=True)
    for device_name in args.devices:
        device = torch.device(device_name)
        hardware = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{os.cpu_count()} CPU cores"
        rows = []
        for name, detector in detectors.items():
            start = time.perf_counter()
            rows.append((name, time_detector(detector, images, device)))
            print(f"# {name} on {device_name}: {time.perf_counter() - start:.0f} s", flush=True)
        if rows:
            print(f"\n## {device_name} ({hardware}), load average after: {os.getloadavg()[0]:.2f}\n")
            print(table(rows))


if __name__ == "__main__":
    main()
