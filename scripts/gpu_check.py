"""The checks of `scripts/gpu_check.sh`, one subcommand each; every check appends its rows (check, device, result,
figures, seconds) to a JSON-lines file that `table` prints. On a machine without a GPU the CUDA rows read
SKIPPED (no GPU) and the CPU halves still run.

  components       kornia's union-find labeller = SciPy's on the training masks: on the CPU, then on CUDA
                   (`irstd.ops.components.connected_components`, labels and component statistics)
  lesps_round      two LESPS rounds (`evolve_labels`) from centroid points on ACM's predictions of the training images:
                   CPU = the sequential reference (irstd.lesps.reference), then CUDA = CPU bit for bit
  bf16             training with trainer.precision=bf16-mixed, a LESPS round every epoch: losses, labels and test
                   metrics finite (CPU on a tiny synthetic set, CUDA on the dataset)
  ddp              a LESPS round under 2-process DDP = the single-process round from the same checkpoint bit for bit,
                   and the same test metrics: 2 gloo processes on the CPU (as tests/test_ddp.py), then 2 processes on
                   CUDA: NCCL on 2 GPUs, or both on the one GPU over gloo (NCCL refuses two ranks on one GPU)
  bench_evolution  scripts/bench_evolution.py --device cuda (short settings)
  bench_models     scripts/bench_models.py --device cuda on a few backbones
  bench_train      scripts/bench_train.py --device cuda, 3 epochs
  table            print the rows of --results; exit 1 if a check failed

    .venv/bin/python scripts/gpu_check.py components --results rows.jsonl [--data-root DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from benchutil import compose_config  # a sibling script: python puts scripts/ on the path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
SIRST = SHARED / "datasets" / "SIRST"
ACM_WEIGHTS = SHARED / "checkpoints" / "ACM_LESPS_centroid.pth.tar"
NO_GPU = "SKIPPED (no GPU)"
# where the CUDA halves run: cuda; GPU_CHECK_DEVICE=cpu dry-runs their code on the CPU (to test this script)
CUDA = torch.device(os.environ.get("GPU_CHECK_DEVICE", "cuda"))
# the DDP check's tiny set: 7 training images over 2 ranks (shards of 4 and 3), as tests/test_ddp.py
DDP_SPEC = dict(num_train=7, num_test=3, height=64, width=64, seed=5)
TINY_SPEC = dict(num_train=6, num_test=3, height=64, width=64, seed=3)


class Rows:
    """The rows one check appends to the results file."""

    def __init__(self, path: str, check: str):
        self.path, self.check = path, check

    def add(self, device: str, result: str, figures: str, seconds: float | None = None) -> None:
        row = {"check": self.check, "device": device, "result": result, "figures": figures, "seconds": seconds}
        with open(self.path, "a") as handle:
            handle.write(json.dumps(row) + "\n")
        print(f"# {self.check} [{device}]: {result}: {figures}", flush=True)

    def run(self, device: str, body: Callable[[], tuple[bool, str]]) -> None:
        """Run one half of a check; an exception is a FAIL naming it."""
        if device == "cuda" and CUDA.type == "cuda" and not torch.cuda.is_available():
            self.add(device, NO_GPU, "")
            return
        if device == "cuda" and CUDA.type != "cuda":
            device = f"cuda (dry run on {CUDA.type})"
        start = time.perf_counter()
        try:
            ok, figures = body()
        except Exception as err:  # a check that crashes has failed; say where
            traceback.print_exc()
            ok, figures = False, f"{type(err).__name__}: {str(err).strip().splitlines()[0][:300] if str(err) else ''}"
        self.add(device, "PASS" if ok else "FAIL", figures, time.perf_counter() - start)


def synchronize() -> None:
    if CUDA.type == "cuda":
        torch.cuda.synchronize()


def accelerator(device: str) -> str:
    return "gpu" if device == "cuda" else "cpu"


# ---- data ------------------------------------------------------------------------------------------------------
def dataset(args: argparse.Namespace) -> tuple[Path, str]:
    """(root, split): --data-root, else SIRST beside the repo, else the built-in synthetic set where irstd-train
    generates it."""
    if args.data_root:
        root = Path(args.data_root).resolve()
        return root, args.split or root.name
    from hydra.core.global_hydra import GlobalHydra

    from irstd.data.synthetic import SyntheticSpec, generate_synthetic

    with tempfile.TemporaryDirectory() as run_dir:
        cfg = compose_config("train", run_dir, ["data=synthetic"])
        GlobalHydra.instance().clear()
    root = generate_synthetic(cfg.data.root, SyntheticSpec(split_name=cfg.data.split, **cfg.data.synthetic))
    return Path(root), str(cfg.data.split)


def tiny_dataset(folder: Path, spec: dict) -> Path:
    from irstd.data.synthetic import SyntheticSpec, generate_synthetic

    return Path(generate_synthetic(folder / "synthetic", SyntheticSpec(**spec)))


def data_overrides(root: Path, split: str) -> list[str]:
    return ["data=folder", f"data.root={root}", f"data.split={split}", "data.progress=false"]


# ---- components ------------------------------------------------------------------------------------------------
def check_components(args: argparse.Namespace, rows: Rows) -> None:
    from irstd.data.sources import scan_split
    from irstd.ops.components import _union_find_labels, connected_components, find_components
    from irstd.ops.padding import pad_bottom_right

    root, split = dataset(args)
    scan = scan_split(root, "train", split, label="full", need_masks=True, progress=False)
    masks = [torch.from_numpy(sample.load_mask())[None] for sample in scan.samples[:args.images]]
    start = time.perf_counter()
    reference = [connected_components(mask) for mask in masks]  # SciPy on the CPU
    scipy_s = time.perf_counter() - start
    total = sum(int(labels.max()) for labels in reference)
    where = f"{len(masks)} training masks of {root.name}, {total} components"

    def cpu() -> tuple[bool, str]:
        # kornia's union-find, the labeller CUDA runs, here on the CPU
        start = time.perf_counter()
        unequal = [i for i, mask in enumerate(masks)
                   if not torch.equal(_union_find_labels(mask).view(mask.shape), reference[i])]
        seconds = time.perf_counter() - start
        return not unequal, (f"{where}: kornia union-find on the CPU = SciPy labels on "
                             f"{len(masks) - len(unequal)} / {len(masks)} ({seconds:.2f} s vs SciPy {scipy_s:.3f} s)")

    def cuda() -> tuple[bool, str]:
        device = CUDA
        synchronize()
        start = time.perf_counter()
        labels = [connected_components(mask.to(device)) for mask in masks]
        synchronize()
        seconds = time.perf_counter() - start
        unequal = [i for i, label in enumerate(labels) if not torch.equal(label.cpu(), reference[i])]
        # batched: 16 masks padded to a common size per call, with areas and centroids
        stats_unequal = 0
        for first in range(0, len(masks), 16):
            group = masks[first:first + 16]
            height, width = max(m.shape[-2] for m in group), max(m.shape[-1] for m in group)
            batch = torch.stack([pad_bottom_right(m, height, width) for m in group])
            on_cpu, on_cuda = find_components(batch), find_components(batch.to(device))
            same = all(torch.equal(getattr(on_cpu, key), getattr(on_cuda, key).cpu())
                       for key in ("counts", "offsets", "image_index", "area", "centroid"))
            same &= torch.equal(connected_components(batch), connected_components(batch.to(device)).cpu())
            stats_unequal += not same
        ok = not unequal and not stats_unequal
        return ok, (f"{where}: CUDA labels = SciPy on {len(masks) - len(unequal)} / {len(masks)}, batches of 16 "
                    f"(labels, areas, centroids) equal on {-(-len(masks) // 16) - stats_unequal} / "
                    f"{-(-len(masks) // 16)} ({seconds:.3f} s one by one vs SciPy {scipy_s:.3f} s)")

    rows.run("cpu", cpu)
    rows.run("cuda", cuda)


# ---- LESPS rounds ----------------------------------------------------------------------------------------------
def check_lesps_round(args: argparse.Namespace, rows: Rows) -> None:
    from irstd.data.datamodule import HoldoutOptions, IRSTDDataModule
    from irstd.data.datasets import pad_collate
    from irstd.lesps import evolve_labels
    from irstd.lesps.reference import evolve_labels_reference
    from irstd.training.module import IRSTDModule

    root, split = dataset(args)
    with tempfile.TemporaryDirectory() as bank_dir:
        datamodule = IRSTDDataModule(root=str(root), split=split, label="centroid", bank_dir=bank_dir,
                                     loading={"num_workers": 0}, holdout=HoldoutOptions(split=None), progress=False)
        datamodule.setup("fit")
        full = datamodule.evolve_dataloader().dataset
        items = [full[i] for i in range(min(len(full), args.images))]
    weights = str(ACM_WEIGHTS) if ACM_WEIGHTS.is_file() else None
    torch.manual_seed(0)
    model = IRSTDModule(backbone={"name": "acm"}, weights=weights).eval()
    groups = [pad_collate(items[i:i + 16]) for i in range(0, len(items), 16)]
    with torch.no_grad():
        predictions = [model.probabilities(group["image"]) for group in groups]
    where = (f"{len(items)} training images of {root.name}, ACM "
             f"({'released weights' if weights else 'random weights'}), 2 rounds from centroid points")

    def rounds(device: torch.device) -> tuple[list[list[torch.Tensor]], float]:
        """The labels after round 1 and round 2 of every group, and the seconds of the evolution calls."""
        labels = [group["label"].to(device) for group in groups]
        preds = [pred.to(device) for pred in predictions]
        sizes = [group["valid_hw"].to(device) for group in groups]
        seconds, out = 0.0, []
        for _ in range(2):
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            labels = [evolve_labels(p, lab, v) for p, lab, v in zip(preds, labels, sizes, strict=True)]
            if device.type == "cuda":
                torch.cuda.synchronize()
            seconds += time.perf_counter() - start
            out.append([lab.cpu() for lab in labels])
        return out, seconds

    cpu_rounds, cpu_s = rounds(torch.device("cpu"))

    def cpu() -> tuple[bool, str]:
        worst, changed = 0.0, 0
        label = [group["label"].numpy() for group in groups]
        for round_index in range(2):
            for g, group in enumerate(groups):
                expected = evolve_labels_reference(predictions[g].numpy(), label[g], group["valid_hw"].numpy())
                ours = cpu_rounds[round_index][g].numpy()
                valid = np.isfinite(expected)
                worst = max(worst, float(np.abs(ours[valid] - expected[valid]).max(initial=0.0)))
                changed += int((ours != (label[g])).sum())
                label[g] = ours  # the next round starts from ours, as training would
        return worst <= 1e-6, (f"{where}: evolve_labels on the CPU = the sequential reference, max abs diff "
                               f"{worst:.1e} (tolerance 1e-6), {changed} pixels changed ({cpu_s:.3f} s)")

    def cuda() -> tuple[bool, str]:
        cuda_rounds, cuda_s = rounds(CUDA)
        different, worst = 0, 0.0
        for mine, theirs in zip(cuda_rounds, cpu_rounds, strict=True):
            for a, b in zip(mine, theirs, strict=True):
                different += int((a != b).sum())
                worst = max(worst, float((a - b).abs().max()))
        return different == 0, (f"{where}: CUDA = CPU bit for bit: {different} pixels differ (max abs diff "
                                f"{worst:.1e}); {cuda_s:.3f} s on CUDA vs {cpu_s:.3f} s on the CPU")

    rows.run("cpu", cpu)
    rows.run("cuda", cuda)


# ---- bf16 ------------------------------------------------------------------------------------------------------
def check_bf16(args: argparse.Namespace, rows: Rows) -> None:
    from hydra.core.global_hydra import GlobalHydra

    from irstd.data.label_bank import LabelBank
    from irstd.lesps.callback import LESPSCallback
    from irstd.training.run import train

    def run(device: str, data: list[str], backbone: str, extra: list[str]) -> tuple[bool, str]:
        with tempfile.TemporaryDirectory() as run_dir:
            overrides = [*data, f"model={backbone}", "label=centroid", "lesps=default", "start=epoch",
                         "start.Tepoch=0", "label_update.f=1", "trainer.precision=bf16-mixed",
                         f"trainer.accelerator={accelerator(device)}", "trainer.devices=1",
                         "trainer.max_epochs=2", "data.holdout.split=null", "data.loading.num_workers=0",
                         "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false",
                         "~callbacks.model_checkpoint", *extra]
            cfg = compose_config("train", run_dir, overrides)
            try:
                metrics, objects = train(cfg)
            finally:
                GlobalHydra.instance().clear()
            callback = next(c for c in objects["trainer"].callbacks if isinstance(c, LESPSCallback))
            bank = LabelBank(Path(run_dir) / "label_bank")
            labels_finite = all(np.isfinite(label).all() for label in bank.read_round().values())
            values = {k: float(v) for k, v in metrics.items() if k.startswith("test/")}
            finite = (all(np.isfinite(callback.loss_history)) and labels_finite and bool(values)
                      and all(np.isfinite(v) for v in values.values()))
            return finite, (f"{backbone}: epoch losses {', '.join(f'{v:.4f}' for v in callback.loss_history)}, "
                            f"{bank.current_round()} rounds, labels finite: {labels_finite}, "
                            f"test/iou {values.get('test/iou', float('nan')):.4f}")

    def cpu() -> tuple[bool, str]:
        with tempfile.TemporaryDirectory() as folder:
            root = tiny_dataset(Path(folder), TINY_SPEC)
            tiny = [*data_overrides(root, "synthetic"), "data.patch_size=32", "data.batch_size=4",
                    "data.loading.eval_batch_size=2"]
            ok, figures = run("cpu", tiny, "acm", [])
            return ok, f"tiny synthetic set (6 images, 64 x 64), {figures}"

    def cuda() -> tuple[bool, str]:
        root, split = dataset(args)
        quick = ["data.patch_size=64", "data.batch_size=4"] if args.quick else []
        results = [run(CUDA.type, data_overrides(root, split), backbone, quick) for backbone in args.bench_backbones
                   if backbone in ("acm", "unet")]
        return all(ok for ok, _ in results), f"{root.name}: " + "; ".join(figures for _, figures in results)

    rows.run("cpu", cpu)
    rows.run("cuda", cuda)


# ---- DDP -------------------------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def clean_environment(folder: Path) -> dict[str, str]:
    env = {**os.environ, "IRSTD_ROOT": str(folder)}
    for name in ("LOCAL_RANK", "WORLD_SIZE", "NODE_RANK", "MASTER_ADDR", "MASTER_PORT", "GROUP_RANK"):
        env.pop(name, None)
    return env


def run_cli(commands: list[tuple[list[str], dict[str, str]]], cwd: Path, timeout: float) -> str | None:
    """Run the processes together as one 2-rank job; None when all exit 0 and 2 ranks joined one process group,
    else what went wrong (with the end of the failing process's output)."""
    procs = [subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for command, env in commands]
    failure, outputs = None, []
    for proc in procs:
        try:
            output, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for other in procs:
                other.kill()
            return f"timed out after {timeout:.0f} s"
        outputs.append(output)
        print(output[-3000:], flush=True)
        if proc.returncode != 0 and failure is None:
            failure = f"exit {proc.returncode}: {output.strip()[-1500:]}"
    # Lightning logs this line on every rank; the ranks' own logs (train.log, train_rank1.log) hold it too
    logs = "".join(outputs) + "".join(path.read_text() for path in cwd.rglob("train*.log"))
    members = set(re.findall(r"GLOBAL_RANK: (\d+), MEMBER: \d+/(\d+)", logs))
    if failure is None and members != {("0", "2"), ("1", "2")}:
        failure = f"the processes did not join one 2-rank group (Lightning logged ranks {sorted(members)})"
    return failure


def compare_ddp_round(run_dir: Path, data: list[str], root: Path, split: str, device: torch.device,
                      folder: Path) -> tuple[bool, str]:
    """The DDP run's round 1 against the single process's from the same checkpoint, and the test metrics."""
    from hydra.core.global_hydra import GlobalHydra

    from irstd.data.datamodule import IRSTDDataModule
    from irstd.data.label_bank import LabelBank
    from irstd.inference.tasks import evaluate
    from irstd.lesps.callback import LESPSCallback
    from irstd.training.module import IRSTDModule

    bank = LabelBank(run_dir / "label_bank")
    checkpoint = run_dir / "checkpoints" / "last.ckpt"
    module = IRSTDModule.load_from_checkpoint(checkpoint, map_location=device).to(device)
    normalization = json.loads((run_dir / "normalization.json").read_text())
    reference_bank = folder / "reference_bank"
    shutil.copytree(run_dir / "label_bank", reference_bank)
    LabelBank(reference_bank).rollback(0)
    datamodule = IRSTDDataModule(root=str(root), split=split, label="centroid", bank_dir=str(reference_bank),
                                 loading={"eval_batch_size": 1, "num_workers": 0}, progress=False,
                                 mean=normalization["mean"], std=normalization["std"])
    datamodule.setup("fit")
    evolved, _ = LESPSCallback(batch_size=1, evolve_chunk=2).evolve_samples(module, datamodule,
                                                                            datamodule.train_scan.samples)
    committed = bank.read_round(1)
    same_names = sorted(evolved) == sorted(committed) == sorted(bank.names())
    unequal = [n for n in committed if n not in evolved or not np.array_equal(evolved[n], committed[n])]
    differing = sum(int((evolved[n] != committed[n]).sum()) for n in unequal if n in evolved)
    changed = sum(int((committed[n] != bank.read(n, round=0)).sum()) for n in committed)
    ddp_metrics = json.loads((run_dir / "metrics.json").read_text())
    single, _ = evaluate(compose_config("eval", folder / "eval", data + [
        f"ckpt_path={checkpoint}", f"device={device.type}", "roc=false"]))
    GlobalHydra.instance().clear()
    keys = ("targets", "found", "false_targets", "iou", "niou", "pixacc", "pd", "fa")
    off = [k for k in keys if not np.isclose(ddp_metrics[f"test/{k}"], single[k], rtol=1e-5, atol=1e-9)]
    ok = same_names and not unequal and changed > 0 and not off
    metrics = "equal" if not off else "DIFFER: " + ", ".join(off)
    differences = f", {differing} pixels differ" if unequal else ""
    return ok, (f"round 1 of {len(committed)} images: {len(committed) - len(unequal)} equal bit for bit to the single "
                f"process ({changed} pixels evolved{differences}); test metrics {metrics} "
                f"(test/iou {ddp_metrics['test/iou']:.4f})")


def ddp_overrides(data: list[str], backbone_overrides: list[str]) -> list[str]:
    """LESPS evolves at the end of the first (only) epoch, image by image (batch 1: no padding differences)."""
    return [*data, "data.loading.eval_batch_size=1", "data.loading.num_workers=0", "label=centroid", "lesps=default",
            "start=epoch", "start.Tepoch=0", "label_update.f=1", "label_update.batch_size=1",
            "label_update.evolve_chunk=2", *backbone_overrides, "trainer.max_epochs=1",
            "trainer.check_val_every_n_epoch=1", "trainer.enable_progress_bar=false",
            "trainer.enable_model_summary=false", "trainer.log_every_n_steps=1"]


def check_ddp(args: argparse.Namespace, rows: Rows) -> None:
    from irstd.training.ddp import quote_override_value

    entry = [sys.executable, "-m", "irstd.cli.train"]

    def cpu() -> tuple[bool, str]:
        with tempfile.TemporaryDirectory() as folder:
            folder = Path(folder)
            root = tiny_dataset(folder, DDP_SPEC)
            data = [*data_overrides(root, "synthetic"), "data.patch_size=32", "data.batch_size=2"]
            run_dir = folder / "run"
            command = [*entry, *ddp_overrides(data, ["model.backbone.width=4", "model.backbone.depth=2"]),
                       "trainer=ddp_cpu", f"hydra.run.dir={quote_override_value(str(run_dir))}"]
            failure = run_cli([(command, clean_environment(folder))], folder, args.timeout)
            if failure:
                return False, f"2 gloo processes: {failure}"
            ok, figures = compare_ddp_round(run_dir, data, root, "synthetic", torch.device("cpu"), folder)
            return ok, f"2 gloo processes on the CPU, tiny synthetic set (7 images): {figures}"

    def cuda() -> tuple[bool, str]:
        # cuDNN's choice of convolution algorithm differs between processes (and with the memory the other rank
        # holds); after one epoch ACM's maps are nearly flat, so float noise moves LESPS's thresholds: both sides
        # take deterministic algorithms so that the comparison checks the sharding, not the arithmetic
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        root, split = dataset(args)
        gpus = torch.cuda.device_count() if CUDA.type == "cuda" else 0
        backend = args.ddp_backend if args.ddp_backend != "auto" else "nccl" if gpus >= 2 else "gloo"
        with tempfile.TemporaryDirectory() as folder:
            folder = Path(folder)
            data = data_overrides(root, split)
            run_dir = folder / "run"
            quick = ["data.patch_size=64", "data.batch_size=4"] if args.quick else []
            common = [*entry, *ddp_overrides(data + quick, ["model=acm"]), "trainer=ddp", "trainer.deterministic=warn",
                      f"trainer.accelerator={accelerator(CUDA.type)}",
                      f"trainer.strategy.process_group_backend={backend}",
                      f"hydra.run.dir={quote_override_value(str(run_dir))}"]
            env = clean_environment(folder)
            if gpus >= 2:
                how = f"2 processes on 2 of {gpus} GPUs over {backend}"
                commands = [([*common, "trainer.devices=2"], env)]
            else:
                # Lightning puts one rank on each device; two "nodes" of one device each share the one GPU
                how = f"2 processes on the one GPU over {backend}"
                rendezvous = dict(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()), WORLD_SIZE="2",
                                  LOCAL_RANK="0")
                ranks = [*common, "trainer.devices=1", "+trainer.num_nodes=2"]
                commands = [(ranks, {**env, **rendezvous, "NODE_RANK": "0"}),
                            ([*ranks, "hydra.job.name=train_rank1", "hydra.output_subdir=null"],
                             {**env, **rendezvous, "NODE_RANK": "1"})]
            failure = run_cli(commands, folder, args.timeout)
            if failure:
                hint = (" (NCCL refuses two ranks on one GPU: --ddp-backend auto uses gloo there)"
                        if backend == "nccl" and gpus < 2 else "")
                return False, f"{how}: {failure}{hint}"
            ok, figures = compare_ddp_round(run_dir, data, root, split, CUDA, folder)
            return ok, f"{how}, ACM on {root.name}: {figures}"

    rows.run("cpu", cpu)
    rows.run("cuda", cuda)


# ---- benchmarks on CUDA ----------------------------------------------------------------------------------------
def run_script(arguments: list[str], timeout: float) -> dict:
    """A bench script with --json into a temporary file; its JSON, or RuntimeError with the end of its output."""
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "result.json"
        proc = subprocess.run([sys.executable, *arguments, "--json", str(out)], capture_output=True, text=True,
                              timeout=timeout, cwd=REPO)
        print(proc.stdout[-6000:], flush=True)
        if proc.returncode != 0 or not out.is_file():
            print(proc.stderr[-6000:], file=sys.stderr)
            raise RuntimeError(f"{arguments[0]} exit {proc.returncode}: {proc.stderr.strip()[-300:]}")
        return json.loads(out.read_text())


def check_bench_evolution(args: argparse.Namespace, rows: Rows) -> None:
    def cuda() -> tuple[bool, str]:
        root, split = dataset(args)
        result = run_script(["scripts/bench_evolution.py", "--device", CUDA.type, "--repeats", "3", "--root", str(root),
                             "--split", split], args.timeout)
        best = {name: min(times) for name, times in result["seconds"].items()}
        return True, (f"{result['images']} images, {result['targets']} targets: ours (16) {best['ours (16)']:.4f} s, "
                      f"released loop {best['released']:.3f} s ({best['released'] / best['ours (16)']:.0f}x), "
                      f"forward {best['forward']:.3f} s")

    rows.run("cuda", cuda)


def check_bench_models(args: argparse.Namespace, rows: Rows) -> None:
    def cuda() -> tuple[bool, str]:
        quick = ["--batch", "2", "--size", "64", "--repeats", "2"] if args.quick else ["--repeats", "10"]
        result = run_script(["scripts/bench_models.py", "--device", CUDA.type, *quick, "--backbones",
                             *args.bench_backbones], args.timeout)
        times = {r["backbone"]: r["fwd_bwd"]["min"] for r in result["results"]}
        missing = [name for name in args.bench_backbones if name not in times]
        shown = ", ".join(f"{name} {seconds * 1e3:.1f} ms" for name, seconds in times.items())
        batch = "x".join(str(v) for v in result["results"][0]["batch"]) if result["results"] else "-"
        return not missing, (f"fwd+bwd of {batch}: {shown}"
                             + (f"; FAILED: {', '.join(missing)}" if missing else ""))

    rows.run("cuda", cuda)


def check_bench_train(args: argparse.Namespace, rows: Rows) -> None:
    def cuda() -> tuple[bool, str]:
        root, split = dataset(args)
        quick = ["--patch-size", "64", "--batch", "4", "--backbones", "acm", "--threads", "1"] if args.quick else []
        result = run_script(["scripts/bench_train.py", "--device", CUDA.type, "--epochs", "3", "--warmup", "1",
                             "--data-root", str(root), "--split", split, *quick], args.timeout)
        shown, ok = [], True
        for row in result["results"]:
            if not row["plain"] or not row["base"]:
                ok = False
                shown.append(f"{row['backbone']} FAILED")
                continue
            plain, irstd = (min(r["timed_seconds"]) for r in (row["plain"], row["base"]))
            shown.append(f"{row['backbone']} {irstd:.2f} s / epoch, plain {plain:.2f} s: {irstd / plain:.2f}x")
        return ok, f"{root.name}, 2 timed epochs: " + "; ".join(shown)

    rows.run("cuda", cuda)


# ---- the table -------------------------------------------------------------------------------------------------
def table(args: argparse.Namespace) -> int:
    rows = [json.loads(line) for line in Path(args.results).read_text().splitlines() if line.strip()]
    print("| check | device | result | figures | s |")
    print("|---|---|---|---|---:|")
    for row in rows:
        seconds = "" if row.get("seconds") is None else f"{row['seconds']:.0f}"
        figures = " ".join(str(row["figures"]).split()).replace("|", "/")  # one line, no cell breaks
        print(f"| {row['check']} | {row['device']} | {row['result']} | {figures} | {seconds} |")
    counts = {kind: sum(row["result"].startswith(kind) for row in rows) for kind in ("PASS", "FAIL", "SKIPPED")}
    elapsed = f" in {args.elapsed:.0f} s" if args.elapsed is not None else ""
    print(f"\n{counts['PASS']} passed, {counts['FAIL']} failed, {counts['SKIPPED']} skipped{elapsed}")
    return 1 if counts["FAIL"] else 0


CHECKS = {"components": check_components, "lesps_round": check_lesps_round, "bf16": check_bf16, "ddp": check_ddp,
          "bench_evolution": check_bench_evolution, "bench_models": check_bench_models,
          "bench_train": check_bench_train}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=[*CHECKS, "table", "record"])
    parser.add_argument("--results", required=True, help="the JSON-lines file of rows")
    parser.add_argument("--data-root", default=str(SIRST) if SIRST.is_dir() else None,
                        help="dataset folder (default ../shared/datasets/SIRST when it exists, else the built-in "
                             "synthetic set)")
    parser.add_argument("--split", default=None, help="the X of img_idx/train_X.txt (default: the folder's name)")
    parser.add_argument("--images", type=int, default=10**9, help="training images the components and lesps_round "
                        "checks take (default: all)")
    parser.add_argument("--ddp-backend", default="auto", choices=["auto", "nccl", "gloo"],
                        help="the CUDA DDP check's backend; auto: nccl on 2 GPUs, gloo when both ranks share one")
    parser.add_argument("--bench-backbones", nargs="+", default=["acm", "alcnet", "dnanet", "unet"],
                        help="bench_models' backbones; bf16 trains those of them among acm and unet")
    parser.add_argument("--quick", action="store_true", help="small crops and batches in the bench, bf16 and DDP "
                        "checks (to try this script out on a CPU with GPU_CHECK_DEVICE=cpu)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--timeout", type=float, default=240, help="seconds for one subprocess (default: 240)")
    # `record`: the row of a check whose process died before it wrote one
    parser.add_argument("--check", help=argparse.SUPPRESS)
    parser.add_argument("--status", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--elapsed", type=float, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.command == "table":
        return table(args)
    if args.command == "record":
        why = "timed out" if args.status == 124 else f"exited with status {args.status} before reporting"
        Rows(args.results, args.check).add("-", "FAIL", why)
        return 0
    rows = Rows(args.results, args.command)
    CHECKS[args.command](args, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
