"""`irstd-eval`: score a checkpoint, released weights or saved predictions on a test split."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from irstd.classic.evaluation import ClassicModel
from irstd.cli import config_dir
from irstd.cli.common import log, resolve_device, save_resolved_config, seed
from irstd.data.datamodule import IRSTDDataModule
from irstd.evaluation import RESULT_KEYS, SavedPredictions, evaluate_batches, model_predictor, results_table, save_roc
from irstd.fsutil import write_text_atomic
from irstd.module import IRSTDModule


def read_checkpoint(ckpt_path: str | Path) -> dict[str, Any]:
    """A checkpoint irstd-train wrote; any other file is a ValueError naming it and saying what to give instead."""
    ours = "give a checkpoint irstd-train wrote (RUN/checkpoints/last.ckpt)"
    try:
        checkpoint = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    except Exception as err:  # a foreign file fails in pickle, zip, EOF or runtime errors alike
        raise ValueError(f"ckpt_path={ckpt_path} is not a PyTorch checkpoint ({type(err).__name__}: {err}); "
                         f"{ours}") from err
    if not isinstance(checkpoint, dict) or "pytorch-lightning_version" not in checkpoint \
            or "backbone" not in checkpoint.get("hyper_parameters", {}):
        released = isinstance(checkpoint, dict) and "state_dict" in checkpoint
        hint = ("it holds bare weights (a released .pth.tar?): load them with model=NAME model.weights="
                f"{ckpt_path} data.mean=M data.std=S" if released else ours)
        raise ValueError(f"ckpt_path={ckpt_path} is not an irstd training checkpoint; {hint}")
    return checkpoint


def checkpoint_normalization(ckpt_path: str | Path) -> tuple[float, float]:
    """The training statistics a checkpoint of ours carries in its DataModule state."""
    checkpoint = read_checkpoint(ckpt_path)
    state = checkpoint.get(IRSTDDataModule.__qualname__)
    if not state or state.get("mean") is None:
        raise ValueError(f"checkpoint {ckpt_path} carries no normalisation statistics; "
                         "set data.mean and data.std (native image units)")
    return float(state["mean"]), float(state["std"])


def _source(cfg: DictConfig) -> tuple[str, Any, dict[str, float]]:
    """(row name, model or SavedPredictions, normalisation overrides) from whichever input was given."""
    given = [key for key in ("ckpt_path", "pred_dir") if cfg.get(key)] + (["model"] if cfg.get("model") else [])
    if len(given) != 1:
        raise ValueError("irstd-eval needs exactly one of ckpt_path=..., pred_dir=..., model=NAME "
                         f"model.weights=PATH or model=DETECTOR (tophat, ipi, ...); got {given or 'none'}")
    if cfg.get("pred_dir"):
        return cfg.get("name") or Path(cfg.pred_dir).name, SavedPredictions(cfg.pred_dir), {"mean": 0.0, "std": 1.0}
    return load_model(cfg)


def load_model(cfg: DictConfig) -> tuple[str, torch.nn.Module, dict[str, float]]:
    """(name, model, normalisation) from `ckpt_path=...` or `model=NAME model.weights=PATH`.

    The normalisation is the checkpoint's when `data.mean` is not given, else empty (the caller uses data.mean/std).
    A training-free detector (`model=tophat`, any `model.classic`) gets mean 0 / std 1 whatever data.mean/std say:
    its images then stay in native units, the units its parameters and thresholds are stated in.
    """
    if cfg.get("model") and cfg.model.get("classic"):
        classic = OmegaConf.to_container(cfg.model.classic, resolve=True)
        return cfg.get("name") or classic["name"], ClassicModel.from_config(classic), {"mean": 0.0, "std": 1.0}
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


def evaluate(cfg: DictConfig) -> tuple[dict[str, float], dict[str, Any]]:
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    save_resolved_config(cfg, output_dir)
    seed(cfg)
    name, predictor, normalization = _source(cfg)

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
        "size_mismatch": datamodule.hparams.size_mismatch}
    write_text_atomic(output_dir / "metrics.json", json.dumps(record, indent=2) + "\n")
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


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="eval")
def main(cfg: DictConfig) -> None:
    try:
        evaluate(cfg)
    finally:
        log.info("run directory: %s", cfg.paths.output_dir)


if __name__ == "__main__":
    main()
