"""`irstd-predict`: masks, probability maps, overlays and a detection table for new images."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from irstd.cli import config_dir
from irstd.cli.common import log, reject_classic_detector, resolve_device, save_resolved_config, seed
from irstd.cli.eval import load_model
from irstd.predict import predict_images


def predict(cfg: DictConfig) -> dict[str, Any]:
    reject_classic_detector(cfg, "irstd-predict")
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
    seed(cfg)
    name, model, normalization = load_model(cfg)
    mean, std = normalization.get("mean", cfg.data.mean), normalization.get("std", cfg.data.std)
    source = {"model": name, "weights": str(cfg.get("ckpt_path") or cfg.model.weights)}
    summary = predict_images(
        model, Path(cfg.input), output, mean=float(mean), std=float(std), device=resolve_device(cfg.device),
        threshold=cfg.threshold, batch_size=cfg.batch_size, tile_size=cfg.get("tile_size"),
        tile_overlap=cfg.tile_overlap, pad_always=cfg.data.pad_always, recursive=cfg.recursive, strict=cfg.strict,
        progress=_progress if cfg.progress else None, run_info=source)
    log.info("%d image(s) predicted, %d skipped, %d detection(s) in %.1f s", summary["images_done"],
             summary["images_skipped"], summary["detections"], summary["seconds"])
    for entry in summary["skipped"]:
        log.info("skipped %s: %s", entry["file"], entry["reason"])
    return summary


def _progress(total: int):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="predicting", unit="image", leave=False)


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="predict")
def main(cfg: DictConfig) -> None:
    try:
        predict(cfg)
    finally:
        log.info("outputs: %s", cfg.output)


if __name__ == "__main__":
    main()
