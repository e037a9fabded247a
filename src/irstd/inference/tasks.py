"""The inference tasks behind `irstd-eval`, `irstd-predict` and `irstd-export`, each taking a composed config.

What they load: a checkpoint of ours (`ckpt_path=`), released weights (`model=NAME model.weights=PATH`), saved
predictions (`pred_dir=`, eval only) or a training-free detector (`detector=NAME`, eval only).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from irstd.classic.evaluation import ClassicModel
from irstd.data.datamodule import IRSTDDataModule
from irstd.inference.annotation_export import export_formats
from irstd.inference.evaluation import (
    RESULT_KEYS,
    SavedPredictions,
    evaluate_batches,
    model_predictor,
    results_table,
    save_roc,
)
from irstd.inference.export import FORMATS, check_format, export_metadata, export_model
from irstd.inference.predict import predict_images
from irstd.training.checkpoints import checkpoint_normalization, read_checkpoint
from irstd.training.module import IRSTDModule
from irstd.training.run_dir import save_resolved_config, seed_from_config
from irstd.utils.device import resolve_device
from irstd.utils.files import write_text_atomic
from irstd.utils.run_layout import METRICS_FILE

log = logging.getLogger("irstd")


def load_model(cfg: DictConfig) -> tuple[str, torch.nn.Module, dict[str, float]]:
    """(name, model, normalisation) from `ckpt_path=...` or `model=NAME model.weights=PATH`.

    The normalisation is the checkpoint's when `data.mean` is not given, else empty (the caller uses data.mean/std).
    """
    normalization = {}
    if cfg.get("ckpt_path"):
        ckpt_path = Path(cfg.ckpt_path)
        if not ckpt_path.is_file():
            raise FileNotFoundError(f"ckpt_path={ckpt_path} does not exist")
        if cfg.data.get("mean") is None:
            normalization["mean"], normalization["std"] = checkpoint_normalization(ckpt_path)
        else:
            read_checkpoint(ckpt_path)
        model = IRSTDModule.load_from_checkpoint(ckpt_path, map_location="cpu")
        return cfg.get("name") or ckpt_path.stem, model, normalization
    if not cfg.model.get("weights"):
        raise ValueError(f"model={cfg.model.backbone.name} needs model.weights=PATH (released weights)")
    if not Path(cfg.model.weights).is_file():
        raise FileNotFoundError(f"model.weights={cfg.model.weights} does not exist")
    if cfg.data.get("mean") is None:
        raise ValueError("released weights carry no normalisation: set data.mean and data.std to the statistics "
                         "they were trained with (native image units)")
    model = hydra.utils.instantiate(cfg.model, _convert_="partial")
    return cfg.get("name") or Path(cfg.model.weights).name.split(".")[0], model, normalization


def load_predictor(cfg: DictConfig) -> tuple[str, Any, dict[str, float]]:
    """(row name, model or SavedPredictions, normalisation overrides) from whichever input was given."""
    given = [key for key in ("ckpt_path", "pred_dir", "model", "detector") if cfg.get(key)]
    if len(given) != 1:
        raise ValueError("irstd-eval needs exactly one of ckpt_path=..., pred_dir=..., model=NAME "
                         f"model.weights=PATH or detector=NAME (tophat, ipi, ...); got {given or 'none'}")
    if cfg.get("pred_dir"):
        return cfg.get("name") or Path(cfg.pred_dir).name, SavedPredictions(cfg.pred_dir), {"mean": 0.0, "std": 1.0}
    if cfg.get("detector"):
        # a detector sees native units (mean 0 / std 1 whatever data.mean/std say): its parameters and
        # thresholds are stated in them
        detector = OmegaConf.to_container(cfg.detector, resolve=True)
        return cfg.get("name") or detector["name"], ClassicModel.from_config(detector), {"mean": 0.0, "std": 1.0}
    return load_model(cfg)


def evaluate(cfg: DictConfig) -> tuple[dict[str, float], dict[str, Any]]:
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    save_resolved_config(cfg, output_dir)
    seed_from_config(cfg)
    name, predictor, normalization = load_predictor(cfg)

    datamodule: IRSTDDataModule = hydra.utils.instantiate(cfg.data, _convert_="all", **normalization)
    datamodule.prepare_data()
    datamodule.setup("test")
    loader = datamodule.test_dataloader()
    if not loader:
        raise ValueError(f"dataset {datamodule.root} has no masks/: there is nothing to score against")
    device = resolve_device(cfg.device)
    roc = cfg.roc
    if isinstance(predictor, SavedPredictions):
        predict = predictor
    elif isinstance(predictor, ClassicModel):
        # detectors see each image without its padding; they output 0/1, so a ROC would be a single point
        predict = predictor.batch_predictor(device)
        roc = False
    else:
        predict = model_predictor(predictor, device, cfg.get("tile_size"), cfg.get("tile_overlap", 64))
    samples = {sample.name: sample for sample in datamodule.test_scan.samples}
    seconds: list[float] = []
    metrics, curves = evaluate_batches(
        _progress(loader, f"evaluating {name}"), _timed(predict, seconds), device=device, threshold=cfg.threshold,
        fa_rule=cfg.fa_rule, roc=roc, samples=samples,
        save_dir=output_dir if cfg.save_predictions else None)

    table = results_table({name: metrics})
    write_text_atomic(output_dir / "results.md", table + "\n")
    record = {key: metrics[key] for key in RESULT_KEYS} | {
        "auc": metrics.get("auc"), "threshold": cfg.threshold, "images": len(samples), "name": name,
        "seconds_per_image": sum(seconds) / max(len(samples), 1),
        "dataset": str(datamodule.root), "split": f"test_{datamodule.hparams.split}",
        "size_mismatch": datamodule.policies.size_mismatch}
    write_text_atomic(output_dir / METRICS_FILE, json.dumps(record, indent=2) + "\n")
    if curves is not None:
        save_roc(curves, output_dir, name)
    print(table)
    return metrics, {"datamodule": datamodule, "predictor": predictor, "curves": curves}


def _timed(predict: Callable[[Mapping[str, Any]], torch.Tensor],
           seconds: list[float]) -> Callable[[Mapping[str, Any]], torch.Tensor]:
    """`predict`, appending the seconds of each call to `seconds` (GPU work waited for, so the time is real)."""
    def timed(batch: Mapping[str, Any]) -> torch.Tensor:
        start = time.perf_counter()
        probs = predict(batch)
        if probs.is_cuda:
            torch.cuda.synchronize(probs.device)
        seconds.append(time.perf_counter() - start)
        return probs

    return timed


def _progress(loader, desc: str):
    from tqdm.auto import tqdm

    return tqdm(loader, desc=desc, leave=False)


def predict(cfg: DictConfig) -> dict[str, Any]:
    # checked before the model loads: a typo in export= should not cost a run
    formats = export_formats(cfg.get("export"))
    given = [key for key in ("ckpt_path", "model") if cfg.get(key)]
    if len(given) != 1:
        raise ValueError("irstd-predict needs exactly one of ckpt_path=... or model=NAME model.weights=PATH; "
                         f"got {given or 'none'}")
    if not cfg.get("input"):
        raise ValueError("irstd-predict needs input=PATH: an image or a folder of images")
    if (cfg.data.get("mean") is None) != (cfg.data.get("std") is None):
        raise ValueError("set both data.mean and data.std, or neither (the checkpoint's are used then)")
    output = Path(cfg.output)
    output.mkdir(parents=True, exist_ok=True)
    save_resolved_config(cfg, output)
    seed_from_config(cfg)
    name, model, normalization = load_model(cfg)
    mean, std = normalization.get("mean", cfg.data.mean), normalization.get("std", cfg.data.std)
    source = {"model": name, "weights": str(cfg.get("ckpt_path") or cfg.model.weights)}
    summary = predict_images(
        model, Path(cfg.input), output, mean=float(mean), std=float(std), device=resolve_device(cfg.device),
        threshold=cfg.threshold, batch_size=cfg.batch_size, tile_size=cfg.get("tile_size"),
        tile_overlap=cfg.tile_overlap, pad_always=cfg.data.evaluation.pad_always, recursive=cfg.recursive,
        strict=cfg.strict, progress=_predict_progress if cfg.progress else None, run_info=source, export=formats)
    log.info("%d image(s) predicted, %d skipped, %d detection(s) in %.1f s", summary["images_done"],
             summary["images_skipped"], summary["detections"], summary["seconds"])
    for entry in summary["skipped"]:
        log.info("skipped %s: %s", entry["file"], entry["reason"])
    return summary


def _predict_progress(total: int):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="predicting", unit="image", leave=False)


def export(cfg: DictConfig) -> Path:
    """Export the model `cfg` names; returns the written file."""
    check_format(cfg.format)
    given = [key for key in ("ckpt_path", "model") if cfg.get(key)]
    if len(given) != 1:
        raise ValueError("irstd-export needs exactly one of ckpt_path=... or model=NAME model.weights=PATH; "
                         f"got {given or 'none'}")
    if (cfg.data.mean is None) != (cfg.data.std is None):
        raise ValueError("give data.mean and data.std together (native image units), or neither")
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    save_resolved_config(cfg, output_dir)
    name, module, normalization = load_model(cfg)
    mean, std = normalization.get("mean", cfg.data.mean), normalization.get("std", cfg.data.std)
    source = Path(cfg.ckpt_path or cfg.model.weights).name
    metadata = export_metadata(module.hparams.backbone, mean, std, module.hparams.threshold, source)
    output = Path(cfg.output) if cfg.output else output_dir / f"{name}{FORMATS[cfg.format]}"
    export_model(module.net, output, cfg.format, metadata, opset=cfg.opset)
    log.info("exported %s (%s, mean %s, std %s) to %s", source, cfg.format, metadata["mean"], metadata["std"], output)
    return output
