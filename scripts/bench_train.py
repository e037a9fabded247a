"""Seconds per training epoch through irstd-train's own code path against a plain PyTorch loop shaped like the
released LESPS `train_full.py`, both measured in the same run; then the framework's levers one at a time.

Per backbone (ACM and U-Net by default), every run in a fresh process, same data, network, loss and optimizer
(the shipped config's: `recipe=single`, the soft IoU loss from a 0.001 output prior, Adam 5e-4), batch 16 of
256 x 256 crops with flips, the same torch threads and loader workers:

  plain   the released loop: a Dataset that decodes the image and mask PNGs with PIL for every sample, crops and
          flips in numpy (`random_crop` + `augumentation`), DataLoader(shuffle=True) whose workers restart every
          epoch, `loss.detach().cpu()` every step, MultiStepLR stepped per epoch. Full masks.
  irstd   `irstd.training.run.train(cfg)` on the shipped `train` config composed as irstd-train composes it, with
          label=full, label_update=none, no validation (data.holdout.split=null), test=false and the checkpoint
          callbacks removed; everything else as shipped (csv logger, progress bar, persistent workers, the decoded
          image cache `data.loading.cache_mb`).

An epoch's seconds run from its start to the next epoch's start (the last one: to the end of training), so they
hold all it costs, end-of-epoch hooks and label rounds included; the first --warmup epochs are dropped. Prints
min / median seconds per epoch of each and the ratio irstd / plain (of the mins, and of the medians).

  --lesps       also LESPS from centroid points (label=centroid lesps=default start=epoch start.Tepoch=0: the first
                round at the end of epoch 0, a warm-up epoch, then every label_update.f=5 epochs) as epochs per
                hour with its rounds included, beside the same run with updates off (lesps=off).
  --levers ...  irstd with one setting changed, as seconds per epoch and the ratio to the irstd run:
                no_cache (data.loading.cache_mb=0: decode every sample), no_pbar (no progress bar),
                step_sync (the host reads the loss every step, as the LESPS callback once did), channels_last,
                cudnn_benchmark (trainer.benchmark=true: cuDNN times its algorithms for the fixed crop size),
                last_ckpt (irstd-train's default callbacks: checkpoints/last.ckpt every epoch), compile
                (torch.compile of the network; not in `all`). Also a table of the loading paths (ms per sample).

    .venv/bin/python scripts/bench_train.py                                   # SIRST, ACM and U-Net
    .venv/bin/python scripts/bench_train.py --epochs 11 --warmup 1 --lesps --levers all --json train.json
    .venv/bin/python scripts/bench_train.py --data-root DIR --patch-size 32 --batch 4 --epochs 2 --threads 1
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from benchutil import compose_config, run_measurement  # a sibling script: python puts scripts/ on the path
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from irstd.utils.device import resolve_device

REPO = Path(__file__).resolve().parents[1]
SIRST = REPO.parent / "shared" / "datasets" / "SIRST"
BACKBONES = {"acm": "acm", "unet": "unet"}
LEVERS = ("no_cache", "no_pbar", "step_sync", "channels_last", "cudnn_benchmark", "last_ckpt", "compile")
# `--levers all`: compile is left out (minutes of compilation; ask for it by name)
ALL_LEVERS = tuple(lever for lever in LEVERS if lever != "compile")


# ---- callbacks the irstd runs get through the `callbacks` config group (`+callbacks.NAME._target_=bench_train.X`)
class EpochTimer(pl.Callback):
    """Wall-clock bounds of every training epoch (CUDA work waited for) and the label rounds done by then."""

    def __init__(self):
        self.starts: list[float] = []
        self.end: float | None = None
        self.rounds: list[int] = []

    @staticmethod
    def _now(pl_module: pl.LightningModule) -> float:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)
        return time.perf_counter()

    @staticmethod
    def _rounds(trainer: pl.Trainer) -> int:
        return sum(int(getattr(callback, "rounds_done", 0)) for callback in trainer.callbacks)

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.starts.append(self._now(pl_module))
        self.rounds.append(self._rounds(trainer))

    def on_train_end(self, trainer, pl_module) -> None:
        self.end = self._now(pl_module)
        self.rounds.append(self._rounds(trainer))

    def seconds(self) -> list[float]:
        bounds = [*self.starts, self.end]
        return [b - a for a, b in zip(bounds[:-1], bounds[1:], strict=True)]

    def rounds_per_epoch(self) -> list[int]:
        return [b - a for a, b in zip(self.rounds[:-1], self.rounds[1:], strict=True)]


class StepSync(pl.Callback):
    """Reads the step's loss on the host, making it wait for the step (the LESPS callback's old `float(loss)`)."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        float((outputs["loss"] if isinstance(outputs, dict) else outputs).detach())


class CompileNet(pl.Callback):
    """torch.compile of the backbone, in place (its state-dict keys stay)."""

    def on_fit_start(self, trainer, pl_module) -> None:
        pl_module.net.compile()


# ---- the plain loop, shaped like the released LESPS train_full.py ------------------------------------------------
def find_png(folder: Path, name: str) -> Path:
    path = folder / f"{name}.png"
    if path.is_file():
        return path
    from irstd.data.sources import find_file

    found = find_file(folder, name)
    if found is None:
        raise FileNotFoundError(f"no image {name} in {folder}")
    return found


class ReleasedStyleDataset(Dataset):
    """LESPS's `TrainSetLoader`: PIL decode of image and mask per sample, normalise, random crop (zero-padded when
    smaller), random vertical/horizontal flips and transpose with Python's `random`, numpy to tensors.

    The mask goes through `convert('L')` (SIRST's masks are 1-bit; the released loader read 8-bit ones)."""

    def __init__(self, root: Path, split: str, patch_size: int, mean: float, std: float):
        self.root, self.patch_size, self.mean, self.std = root, patch_size, mean, std
        self.names = (root / "img_idx" / f"train_{split}.txt").read_text().split()
        self.images = [find_png(root / "images", n) for n in self.names]
        self.masks = [find_png(root / "masks", n) for n in self.names]

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, index: int):
        img = np.array(Image.open(self.images[index]).convert("I"), dtype=np.float32)
        mask = np.array(Image.open(self.masks[index]).convert("L"), dtype=np.float32) / 255.0
        img = (img - self.mean) / self.std
        img, mask = self.random_crop(img, mask, self.patch_size)
        if random.random() < 0.5:
            img, mask = img[::-1, :], mask[::-1, :]
        if random.random() < 0.5:
            img, mask = img[:, ::-1], mask[:, ::-1]
        if random.random() < 0.5:
            img, mask = img.transpose(1, 0), mask.transpose(1, 0)
        img, mask = img[np.newaxis, :], mask[np.newaxis, :]
        return torch.from_numpy(np.ascontiguousarray(img)), torch.from_numpy(np.ascontiguousarray(mask))

    @staticmethod
    def random_crop(img: np.ndarray, mask: np.ndarray, size: int):
        h, w = img.shape
        if min(h, w) < size:
            pad = ((0, max(h, size) - h), (0, max(w, size) - w))
            img, mask = np.pad(img, pad, mode="constant"), np.pad(mask, pad, mode="constant")
            h, w = img.shape
        top, left = random.randint(0, h - size), random.randint(0, w - size)
        return img[top:top + size, left:left + size], mask[top:top + size, left:left + size]


def image_statistics(dataset: ReleasedStyleDataset) -> tuple[float, float]:
    """irstd's normalisation rule (mean of per-image means and stds of the training images), outside the timing."""
    arrays = [np.array(Image.open(path).convert("I"), dtype=np.float32) for path in dataset.images]
    return float(np.mean([a.mean() for a in arrays])), float(np.mean([a.std() for a in arrays]))


def plain_worker(args: argparse.Namespace, backbone: str) -> dict:
    """Train with the released loop; seconds of every epoch."""
    import hydra
    from hydra.core.global_hydra import GlobalHydra

    from irstd.models import build_backbone, set_output_prior

    device = resolve_device(args.device)
    with tempfile.TemporaryDirectory() as run_dir:
        cfg = compose_config("train", run_dir, irstd_overrides(args, backbone, "plain"))
        GlobalHydra.instance().clear()
    root = Path(cfg.data.root)
    dataset = ReleasedStyleDataset(root, str(cfg.data.split), cfg.data.patch_size, 0.0, 1.0)
    dataset.mean, dataset.std = image_statistics(dataset)
    batch = cfg.data.batch_size
    loader = DataLoader(dataset, num_workers=args.workers, batch_size=batch, shuffle=True,
                        drop_last=len(dataset) % batch == 1)  # batch norm cannot train on a lone last image

    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    net = build_backbone(**cfg.model.backbone)
    if cfg.model.output_prior is not None:
        set_output_prior(net, cfg.model.output_prior)
    net = net.to(device)
    loss_fn = hydra.utils.instantiate(cfg.loss)
    optimizer = torch.optim.Adam(net.parameters(), lr=cfg.model.optimizer.lr)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(cfg.model.scheduler.milestones),
                                                     gamma=cfg.model.scheduler.gamma)
    seconds, losses, steps = [], [], 0
    for _ in range(args.epochs):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        total_loss_epoch = []
        for img, gt_mask in loader:
            net.train()
            img, gt_mask = img.to(device), gt_mask.to(device)
            pred = net.forward(img)
            loss = loss_fn(pred, gt_mask)
            total_loss_epoch.append(loss.detach().cpu())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            steps += 1
        scheduler.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds.append(time.perf_counter() - start)
        losses.append(float(np.array(total_loss_epoch).mean()))
    return {"run": "plain", "backbone": backbone, "seconds": seconds, "steps": steps // args.epochs,
            "images": len(dataset), "loss": losses, "device": str(device)}


# ---- irstd through irstd-train's code path ---------------------------------------------------------------------
def data_overrides(args: argparse.Namespace) -> list[str]:
    if args.data_root is None:  # the built-in synthetic set, where irstd-train generates it
        return ["data=synthetic"]
    overrides = ["data=folder", f"data.root={Path(args.data_root).resolve()}"]
    return overrides + ([f"data.split={args.split}"] if args.split else [])


def irstd_overrides(args: argparse.Namespace, backbone: str, variant: str) -> list[str]:
    """The shipped train config with the run's settings; `variant` is base, plain, lesps_on, lesps_off or a lever."""
    accelerator = "gpu" if resolve_device(args.device).type == "cuda" else "cpu"
    overrides = [
        *data_overrides(args), f"model={BACKBONES[backbone]}", f"data.patch_size={args.patch_size}",
        f"data.batch_size={args.batch}", f"data.loading.num_workers={args.workers}", "data.progress=false",
        "data.holdout.split=null", "test=false", f"trainer.max_epochs={args.epochs}",
        f"trainer.accelerator={accelerator}", "trainer.devices=1", "seed=0",
        "+callbacks.epoch_timer._target_=bench_train.EpochTimer",
    ]
    if variant != "last_ckpt":
        overrides += ["~callbacks.last_checkpoint", "~callbacks.model_checkpoint"]
    if variant == "lesps_on":
        overrides += ["label=centroid", "lesps=default", "start=epoch", "start.Tepoch=0",
                      f"label_update.f={args.lesps_f}"]
    elif variant == "lesps_off":
        overrides += ["label=centroid", "lesps=off"]
    else:
        overrides += ["label=full", "label_update=none"]
    overrides += {
        "no_cache": ["data.loading.cache_mb=0"],
        "no_pbar": ["trainer.enable_progress_bar=false"],
        "step_sync": ["+callbacks.step_sync._target_=bench_train.StepSync"],
        "channels_last": ["model.channels_last=true"],
        "cudnn_benchmark": ["+trainer.benchmark=true"],
        "compile": ["+callbacks.compile_net._target_=bench_train.CompileNet"],
    }.get(variant, [])
    return overrides + list(args.override)


def irstd_worker(args: argparse.Namespace, backbone: str, variant: str) -> dict:
    """`irstd.training.run.train(cfg)` on the composed config; seconds of every epoch from the timer callback."""
    import logging

    from hydra.core.global_hydra import GlobalHydra

    from irstd.training.run import train

    logging.getLogger("irstd").setLevel(logging.WARNING)
    run_dir = tempfile.mkdtemp(prefix="bench_train_")
    try:
        cfg = compose_config("train", run_dir, irstd_overrides(args, backbone, variant))
        try:
            _, objects = train(cfg)
        finally:
            GlobalHydra.instance().clear()
        trainer = objects["trainer"]
        timer = next(c for c in trainer.callbacks if type(c).__name__ == "EpochTimer")
        checkpoints = sorted(p.name for p in (Path(run_dir) / "checkpoints").glob("*.ckpt"))
        return {"run": variant, "backbone": backbone, "seconds": timer.seconds(),
                "rounds": timer.rounds_per_epoch(), "steps": trainer.num_training_batches,
                "device": str(objects["model"].device), "checkpoints": checkpoints}
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


def loading_worker(args: argparse.Namespace) -> dict:
    """Milliseconds per training sample of each loading path, in this process (no workers): the released dataset,
    irstd's TrainDataset decoding every sample, and with the cache filled."""
    from hydra.core.global_hydra import GlobalHydra

    from irstd.data.datamodule import IRSTDDataModule
    from irstd.data.datasets import DecodedCache, TrainDataset, fill_image_cache

    with tempfile.TemporaryDirectory() as run_dir:
        cfg = compose_config("train", run_dir, irstd_overrides(args, args.backbones[0], "base"))
        GlobalHydra.instance().clear()
        datamodule = IRSTDDataModule(root=str(cfg.data.root), split=str(cfg.data.split), label="full",
                                     bank_dir=f"{run_dir}/bank", patch_size=cfg.data.patch_size,
                                     loading={"num_workers": 0, "cache_mb": 0}, progress=False)
        datamodule.setup("fit")
        samples = datamodule.train_scan.samples
        released = ReleasedStyleDataset(Path(cfg.data.root), str(cfg.data.split), cfg.data.patch_size,
                                        datamodule.mean, datamodule.std)
        cache = DecodedCache(2**40)
        start = time.perf_counter()
        fill_image_cache(cache, samples)
        fill_s, images_mb = time.perf_counter() - start, cache.used / 2**20

        def dataset(cached: bool) -> TrainDataset:
            return TrainDataset(samples, datamodule.bank, datamodule.mean, datamodule.std, cfg.data.patch_size,
                                cache=cache if cached else None)

        uncached, cached = dataset(False), dataset(True)
        paths = {"plain (PIL per sample, numpy crop/flip)": lambda i: released[i],
                 "irstd, decoded per sample (cache_mb=0)": lambda i: uncached[(0, i)],
                 "irstd, cached (after the first epoch)": lambda i: cached[(0, i)]}
        result = {}
        for name, item in paths.items():
            best = float("inf")
            for _ in range(3):  # the cached path's first pass fills its labels
                start = time.perf_counter()
                for i in range(len(samples)):
                    item(i)
                best = min(best, time.perf_counter() - start)
            result[name] = 1e3 * best / len(samples)
    return {"ms_per_sample": result, "images": len(samples), "cache_fill_s": fill_s, "images_mb": images_mb,
            "cache_mb": cache.used / 2**20}


# ---- orchestration --------------------------------------------------------------------------------------------
def run_worker(args: argparse.Namespace, kind: str, backbone: str, variant: str) -> dict | None:
    command = [sys.executable, os.path.abspath(__file__), "--worker", kind, "--backbones", backbone,
               "--variant", variant, "--epochs", str(args.epochs), "--warmup", str(args.warmup),
               "--workers", str(args.workers), "--threads", str(args.threads), "--device", args.device,
               "--patch-size", str(args.patch_size), "--batch", str(args.batch), "--lesps-f", str(args.lesps_f)]
    if args.data_root is not None:
        command += ["--data-root", args.data_root]
    if args.split:
        command += ["--split", args.split]
    for override in args.override:
        command += ["--override", override]
    start = time.perf_counter()
    result = run_measurement(command, f"{backbone} {variant}")
    print(f"# {backbone} {variant}: {'done' if result else 'FAILED'} in {time.perf_counter() - start:.0f} s",
          flush=True)
    return result


def pooled(results: list[dict | None], warmup: int) -> dict | None:
    """One result from the repeats of a run: each repeat's epochs after its warm-up, together (None if one failed)."""
    if not results or any(result is None for result in results):
        return None
    merged = dict(results[-1])
    merged["timed_seconds"] = [s for result in results for s in result["seconds"][warmup:]]
    if "rounds" in merged:
        merged["timed_rounds"] = [n for result in results for n in result["rounds"][warmup:]]
    merged["repeats"] = results
    return merged


def timed(result: dict, warmup: int) -> list[float]:
    return result["timed_seconds"] if "timed_seconds" in result else result["seconds"][warmup:]


def summary(result: dict | None, warmup: int) -> tuple[float, float] | None:
    if result is None or not timed(result, warmup):
        return None
    seconds = timed(result, warmup)
    return min(seconds), statistics.median(seconds)


def fmt(pair: tuple[float, float] | None) -> str:
    return "-" if pair is None else f"{pair[0]:.3f} / {pair[1]:.3f}"


def ratio(a: tuple[float, float] | None, b: tuple[float, float] | None) -> str:
    return "-" if a is None or b is None else f"{a[0] / b[0]:.2f} / {a[1] / b[1]:.2f}"


def main_table(rows: list[dict], warmup: int) -> str:
    lines = ["| backbone | steps / epoch | plain s / epoch (min / median) | irstd s / epoch (min / median) "
             "| irstd / plain (min / median) | load 1 min (plain / irstd) |",
             "|---|---:|---:|---:|---:|---:|"]
    for row in rows:
        plain, irstd = summary(row["plain"], warmup), summary(row["base"], warmup)
        steps = (row["base"] or row["plain"] or {}).get("steps", "-")
        load = " / ".join(f"{r['load_1m'][1]:.2f}" if r else "-" for r in (row["plain"], row["base"]))
        lines.append(f"| {row['backbone']} | {steps} | {fmt(plain)} | {fmt(irstd)} | {ratio(irstd, plain)} "
                     f"| {load} |")
    return "\n".join(lines)


def lesps_table(rows: list[dict], warmup: int) -> str:
    lines = ["| backbone | label updates | s / epoch (min / median) | rounds in the timed epochs "
             "| epochs / hour (rounds included) | vs updates off |",
             "|---|---|---:|---:|---:|---:|"]
    for row in rows:
        per_hour = {}
        for variant in ("lesps_off", "lesps_on"):
            result = row.get(variant)
            if result and timed(result, warmup):
                per_hour[variant] = 3600 * len(timed(result, warmup)) / sum(timed(result, warmup))
        for variant, label in (("lesps_off", "off (lesps=off)"), ("lesps_on", "LESPS (lesps=default)")):
            result = row.get(variant)
            rounds = sum(result["timed_rounds"]) if result else "-"
            hour = f"{per_hour[variant]:.0f}" if variant in per_hour else "-"
            versus = (f"{per_hour[variant] / per_hour['lesps_off']:.2f}"
                      if variant in per_hour and "lesps_off" in per_hour else "-")
            lines.append(f"| {row['backbone']} | {label} | {fmt(summary(result, warmup))} | {rounds} | {hour} "
                         f"| {versus} |")
    return "\n".join(lines)


def levers_table(rows: list[dict], levers: list[str], warmup: int) -> str:
    lines = ["| backbone | lever | s / epoch (min / median) | vs irstd (min / median) | vs plain (min / median) |",
             "|---|---|---:|---:|---:|"]
    for row in rows:
        base, plain = summary(row["base"], warmup), summary(row["plain"], warmup)
        lines.append(f"| {row['backbone']} | irstd as measured above | {fmt(base)} | 1.00 / 1.00 "
                     f"| {ratio(base, plain)} |")
        for lever in levers:
            result = summary(row.get(lever), warmup)
            lines.append(f"| {row['backbone']} | {lever} | {fmt(result)} | {ratio(result, base)} "
                         f"| {ratio(result, plain)} |")
    return "\n".join(lines)


def loading_table(result: dict) -> str:
    values = result["ms_per_sample"]
    reference = next(iter(values.values()))
    lines = ["| loading path | ms / sample | vs plain |", "|---|---:|---:|"]
    lines += [f"| {name} | {ms:.3f} | {ms / reference:.2f} |" for name, ms in values.items()]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", default=str(SIRST) if SIRST.is_dir() else None,
                        help="dataset folder (images/, masks/, img_idx/); default ../shared/datasets/SIRST when it "
                             "exists, else the built-in synthetic set, generated where irstd-train generates it")
    parser.add_argument("--split", default=None, help="the X of img_idx/train_X.txt (default: the folder's name)")
    parser.add_argument("--backbones", nargs="+", default=list(BACKBONES), choices=list(BACKBONES))
    parser.add_argument("--epochs", type=int, default=6, help="epochs per run, warm-up included (default: 6)")
    parser.add_argument("--warmup", type=int, default=1, help="first epochs left out of the timing (default: 1)")
    parser.add_argument("--workers", type=int, default=2, help="data-loader workers of both loops (default: 2, "
                        "irstd's data.loading.num_workers)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch CPU threads (default: all)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--patch-size", type=int, default=256, help="training crop side (default: 256)")
    parser.add_argument("--batch", type=int, default=16, help="crops per batch (default: 16)")
    parser.add_argument("--repeats", type=int, default=1, help="runs of every variant, taken in turn; their timed "
                        "epochs are pooled (default: 1)")
    parser.add_argument("--lesps", action="store_true", help="also LESPS on vs off, as epochs per hour")
    parser.add_argument("--lesps-f", type=int, default=5, help="LESPS rounds every f epochs (default: 5)")
    parser.add_argument("--levers", nargs="*", default=[], choices=[*LEVERS, "all"],
                        help=f"irstd with one setting changed at a time; all = {' '.join(ALL_LEVERS)}")
    parser.add_argument("--override", action="append", default=[],
                        help="a Hydra override for every irstd run, and the plain loop's network (repeatable), "
                             "e.g. --override model.backbone.width=8")
    parser.add_argument("--json", help="also write the raw results to this file")
    parser.add_argument("--worker", choices=["plain", "irstd", "loading"], help=argparse.SUPPRESS)
    parser.add_argument("--variant", default="base", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not 0 <= args.warmup < args.epochs:
        parser.error(f"--warmup must be >= 0 and below --epochs, got --warmup {args.warmup} --epochs {args.epochs}")
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")
    device = resolve_device(args.device)
    args.device = device.type
    torch.set_num_threads(args.threads)

    if args.worker:
        backbone = args.backbones[0]
        result = (plain_worker(args, backbone) if args.worker == "plain" else loading_worker(args)
                  if args.worker == "loading" else irstd_worker(args, backbone, args.variant))
        print(json.dumps(result))
        return

    levers = list(ALL_LEVERS) + [lever for lever in args.levers if lever == "compile"] if "all" in args.levers \
        else list(dict.fromkeys(args.levers))
    if args.data_root is None:
        # generate the built-in set once here, as irstd-train would, so that both loops read the same files
        from hydra.core.global_hydra import GlobalHydra

        from irstd.data.synthetic import SyntheticSpec, generate_synthetic

        with tempfile.TemporaryDirectory() as run_dir:
            cfg = compose_config("train", run_dir, data_overrides(args))
            GlobalHydra.instance().clear()
        generate_synthetic(cfg.data.root, SyntheticSpec(split_name=cfg.data.split, **cfg.data.synthetic))
    hardware = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{os.cpu_count()} CPU cores"
    load = os.getloadavg()
    print(f"# bench_train: {args.data_root or 'built-in synthetic data'}, batch {args.batch} of "
          f"{args.patch_size}x{args.patch_size} crops, {args.epochs} epochs ({args.warmup} warm-up) x {args.repeats} "
          "runs, on "
          f"{device.type} ({hardware}), {args.threads} threads, {args.workers} loader workers, "
          f"torch {torch.__version__}, one process per run")
    print(f"# load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}", flush=True)
    if device.type == "cpu" and load[0] > 1.0:
        print("# WARNING: other processes are using the cores: compare rows of similar load only", flush=True)

    rows = []
    for backbone in args.backbones:
        variants = ["plain", "base", *(["lesps_off", "lesps_on"] if args.lesps else []), *levers]
        # repeats go round every variant in turn, so that a busy spell of the machine hits them alike
        runs = {variant: [] for variant in variants}
        for _ in range(args.repeats):
            for variant in variants:
                runs[variant].append(run_worker(args, "plain" if variant == "plain" else "irstd", backbone, variant))
        rows.append({"backbone": backbone, **{variant: pooled(results, args.warmup)
                                              for variant, results in runs.items()}})
    loading = run_worker(args, "loading", args.backbones[0], "loading") if levers else None

    load = os.getloadavg()
    print(f"# load average after: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print("# seconds per epoch: start of an epoch to the start of the next (the last: to the end of training), "
          f"the first {args.warmup} dropped; ratios: irstd / plain of the mins and of the medians, same run")
    print("# irstd writes no checkpoint in these epochs (its checkpoint callbacks are removed; last_ckpt puts "
          "them back)\n")
    print(main_table(rows, args.warmup))
    if args.lesps:
        print(f"\n# LESPS from centroid points: rounds every {args.lesps_f} epochs after the first at the end of "
              "epoch 0; epochs per hour = timed epochs / their seconds, rounds included\n")
        print(lesps_table(rows, args.warmup))
        timed_epochs = args.epochs - args.warmup
        if timed_epochs < args.lesps_f:
            print(f"# NOTE: {timed_epochs} timed epochs hold no round at f={args.lesps_f}: use --epochs "
                  f"{args.warmup + args.lesps_f} or more")
    if levers:
        print("\n# levers: irstd with one setting changed (ratios: this / irstd, this / plain)\n")
        print(levers_table(rows, levers, args.warmup))
    if loading:
        print(f"\n# loading one training sample in the main process, {loading['images']} images (min of 3 "
              f"passes); decoding the images into the cache took {loading['cache_fill_s']:.2f} s "
              f"({loading['images_mb']:.0f} MiB; {loading['cache_mb']:.0f} MiB with the labels)\n")
        print(loading_table(loading))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"args": vars(args), "load": load, "levers": levers, "results": rows, "loading": loading},
                      handle, indent=2)


if __name__ == "__main__":
    main()
