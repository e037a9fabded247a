"""The mapping-degeneration study end to end: train, track IoU per epoch, write CSVs, PNGs and a summary.

Fig. 2: single-sample and many-sample training on crops of a real dataset. Fig. 5 (and the supplement's shape
study): single-sample training on synthetic targets, one factor at a time, averaged over runs.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from irstd.data import synthetic as syn
from irstd.degeneration import report
from irstd.degeneration.samples import (
    FACTORS,
    backgrounds,
    condition_samples,
    dataset_samples,
    factor_conditions,
    label_iou,
)
from irstd.degeneration.training import DegenerationCurves, train_many_sample, train_single_sample
from irstd.models import build_backbone
from irstd.utils.files import write_text_atomic

log = logging.getLogger("irstd")

SCHEMES = ("single", "many")
# The paper's headline: IoU above 0.5 on more than 60 % of the training images.
GOOD_IOU = 0.5


def network_builder(network: Mapping[str, Any]) -> Callable[[], torch.nn.Module]:
    """A zero-argument factory of the backbone `network.name` with the rest of `network` as its arguments."""
    kwargs = dict(network)
    name = kwargs.pop("name")
    try:
        build_backbone(name, **kwargs)  # fail on a bad name or argument now, not after loading data
    except (ValueError, TypeError) as err:
        raise ValueError(f"network.name={name!r} with arguments {kwargs}: {err}") from err
    return lambda: build_backbone(name, **kwargs)


def _progress(what: str) -> Callable[[int, int], None]:
    return lambda done, total: log.info("%s: %d/%d", what, done, total)


def run_dataset_study(cfg: Mapping[str, Any], build: Callable[[], torch.nn.Module], out_dir: Path,
                      device: torch.device, seed: int, chunk_size: int | None) -> dict[str, Any]:
    """Fig. 2 on `cfg.root`: per-epoch IoU of each image under the chosen schemes; returns the key numbers."""
    schemes = list(cfg["schemes"])
    unknown = sorted(set(schemes) - set(SCHEMES))
    if unknown or not schemes:
        raise ValueError(f"dataset.schemes must be a non-empty subset of {list(SCHEMES)}, got {schemes}")
    if not Path(cfg["root"]).is_dir():
        raise ValueError(f"dataset.root={cfg['root']} is not a folder; give a dataset (images/, masks/, img_idx/) "
                         "or dataset.root=null to skip Fig. 2")
    samples = dataset_samples(cfg["root"], cfg["split"], int(cfg["crop_size"]), stage=cfg["stage"], label=cfg["label"],
                              max_images=cfg.get("max_images"), seed=seed)
    log.info("Fig. 2: %d images of %s (%s), %dx%d crops", len(samples), cfg["root"], cfg["split"],
             samples.images.shape[-2], samples.images.shape[-1])
    on_device = samples.to(device)
    curves: dict[str, DegenerationCurves] = {}
    if "single" in schemes:
        curves["single"] = train_single_sample(build, on_device, int(cfg["epochs"]), lr=float(cfg["lr"]), seed=seed,
                                               chunk_size=chunk_size, augment=bool(cfg["augment"]),
                                               progress=_progress("single-sample runs"))
    if "many" in schemes:
        torch.manual_seed(seed)
        curves["many"] = train_many_sample(build(), on_device, int(cfg["many_epochs"]),
                                           batch_size=int(cfg["batch_size"]), lr=float(cfg["lr"]), seed=seed,
                                           augment=bool(cfg["augment"]), progress=_progress("many-sample epochs"))
    point_iou = label_iou(samples).numpy()

    longest = max(result.iou.shape[0] for result in curves.values())
    report.write_csv(out_dir / "fig2_curves.csv", ["epoch"] + [f"{s}_mean_iou" for s in curves], [
        [epoch + 1] + [float(r.iou[epoch].mean()) if epoch < r.iou.shape[0] else float("nan")
                       for r in curves.values()] for epoch in range(longest)])
    report.write_csv(out_dir / "fig2_images.csv",
                     ["image", "label_iou"] + [f"{s}_{k}" for s in curves for k in ("best_iou", "best_epoch")],
                     [[name, float(point_iou[i])] + [v for r in curves.values()
                                                     for v in (float(r.best_iou[i]), int(r.best_epoch[i]))]
                      for i, name in enumerate(samples.names)])
    counts = {scheme: report.histogram(result.best_iou.numpy()) for scheme, result in curves.items()}
    edges = report.HISTOGRAM_EDGES
    report.write_csv(out_dir / "fig2_histogram.csv", ["iou_from", "iou_to"] + list(curves), [
        [float(edges[b]), float(edges[b + 1])] + [int(counts[s][b]) for s in curves] for b in range(len(edges) - 1)])
    # Examples: the images of a few quantiles of the first scheme's maximum IoU, best first.
    order = np.argsort(-next(iter(curves.values())).best_iou.numpy(), kind="stable")
    picks = sorted({int(order[round(q * (len(order) - 1))]) for q in np.linspace(0, 1, min(6, len(order)))},
                   key=lambda i: list(order).index(i))
    report.plot_fig2(curves, samples.images[:, 0].numpy(), samples.labels[:, 0].numpy(),
                     samples.masks[:, 0].numpy(), picks, out_dir / "fig2.png")
    return {
        "images": len(samples),
        "label_iou_mean": float(point_iou.mean()),
        **{scheme: {
            "epochs": int(result.iou.shape[0]),
            "peak_mean_iou": float(result.iou.mean(1).max()),
            "peak_mean_iou_epoch": int(result.iou.mean(1).argmax()) + 1,
            "mean_best_iou": float(result.best_iou.mean()),
            "median_best_epoch": float(result.best_epoch.float().median()),
            "fraction_best_iou_above_0.5": float((result.best_iou > GOOD_IOU).float().mean()),
            "final_mean_iou": float(result.iou[-1].mean()),
        } for scheme, result in curves.items()},
    }


def run_factor_study(factor: str, cfg: Mapping[str, Any], build: Callable[[], torch.nn.Module], out_dir: Path,
                     device: torch.device, seed: int, chunk_size: int | None) -> list[dict[str, Any]]:
    """Fig. 5 for one factor: `cfg.runs` single-sample runs per value; returns one summary row per value."""
    spec = cfg[factor]
    conditions = factor_conditions(factor, spec)
    runs, size = int(cfg["runs"]), int(cfg["frame_size"])
    scenes = backgrounds(runs, size, seed, root=cfg.get("background_root"), split=cfg.get("background_split"))
    shapes = syn.real_target_shapes(spec["root"], spec["names"]) if factor == "shape" else None
    samples = condition_samples(conditions, runs, size, scenes, shapes=shapes, seed=seed)
    log.info("Fig. 5 (%s): %d values x %d runs, %dx%d", factor, len(conditions), runs, size, size)
    curves = train_single_sample(build, samples.to(device), int(cfg["epochs"]), lr=float(cfg["lr"]), seed=seed,
                                 chunk_size=chunk_size, augment=bool(cfg["augment"]),
                                 progress=_progress(f"{factor} runs"))
    values = [condition.value for condition in conditions]
    # Images are condition-major: image c * runs + r is run r of condition c.
    iou = curves.iou.view(-1, len(conditions), runs)
    mean_iou = iou.mean(2).numpy()
    point_iou = label_iou(samples).view(len(conditions), runs)
    best = curves.best_iou.view(len(conditions), runs)
    report.write_csv(out_dir / f"fig5_{factor}.csv", ["epoch"] + [f"{factor}={v}" for v in values],
                     [[epoch + 1] + [float(x) for x in mean_iou[epoch]] for epoch in range(mean_iou.shape[0])])
    examples, rows = {}, []
    for c, value in enumerate(values):
        first = c * runs
        examples[value] = {
            "image": samples.images[first, 0].numpy(), "label": samples.labels[first, 0].numpy(),
            "mask": samples.masks[first, 0].numpy(), "prediction": curves.best_prediction[first].numpy(),
            "iou": float(curves.best_iou[first]), "epoch": int(curves.best_epoch[first]),
        }
        rows.append({
            "factor": factor, "value": value, "runs": runs,
            "label_iou": float(point_iou[c].mean()),
            "peak_mean_iou": float(mean_iou[:, c].max()),
            "peak_mean_iou_epoch": int(mean_iou[:, c].argmax()) + 1,
            "mean_best_iou": float(best[c].mean()),
            "std_best_iou": float(best[c].std()) if runs > 1 else 0.0,
            "final_mean_iou": float(mean_iou[-1, c]),
        })
    report.plot_factor(factor, values, mean_iou, examples, out_dir / f"fig5_{factor}.png")
    return rows


def run_study(cfg: Mapping[str, Any], out_dir: str | Path, device: torch.device) -> dict[str, Any]:
    """Every part `cfg` asks for; writes into `out_dir` and returns (and writes) `summary.json`."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    build = network_builder(cfg["network"])
    seed = int(cfg["seed"])
    chunk_size = cfg.get("chunk_size")
    factors = list(cfg["factors"]["run"] or [])
    unknown = sorted(set(factors) - set(FACTORS))
    if unknown:
        raise ValueError(f"factors.run has unknown factors {unknown}; choose from {list(FACTORS)}")
    if not cfg["dataset"].get("root") and not factors:
        raise ValueError("nothing to study: set dataset.root (Fig. 2) and/or factors.run (Fig. 5)")
    summary: dict[str, Any] = {"network": dict(cfg["network"]), "seed": seed}
    if cfg["dataset"].get("root"):
        summary["fig2"] = run_dataset_study(cfg["dataset"], build, out_dir, device, seed, chunk_size)
    rows: list[dict[str, Any]] = []
    for factor in factors:
        rows.extend(run_factor_study(factor, cfg["factors"], build, out_dir, device, seed, chunk_size))
        # Rewritten after each factor, so a long study that stops early keeps what it finished.
        report.write_csv(out_dir / "fig5_summary.csv", list(rows[0]), [list(row.values()) for row in rows])
    if rows:
        summary["fig5"] = rows
    write_text_atomic(out_dir / "summary.json", json.dumps(summary, indent=2, default=_json_default) + "\n")
    return summary


def _json_default(value: object) -> object:
    if isinstance(value, (np.generic,)):
        return value.item()
    raise TypeError(f"cannot write {type(value).__name__} to JSON")
