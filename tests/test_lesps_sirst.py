"""Label evolution on the real SIRST data (slow: a few minutes on 2 CPU cores).

A shorter version of the CPU run in docs/lesps.md: a small U-Net trained from centroid points; the
evolved labels must grow from the points towards the masks.
"""

import csv
from pathlib import Path

import pytest
from hydra.core.global_hydra import GlobalHydra

from conftest import SIRST, compose_config, requires_sirst
from irstd.training.run import train


@pytest.mark.slow
@requires_sirst
def test_evolved_labels_grow_towards_the_masks(tmp_path):
    cfg = compose_config("train", tmp_path / "run", [
        "data=sirst", f"data.root={SIRST}", "label=centroid", "model=unet", "model.backbone.width=8",
        "lesps=default", "start=epoch", "start.Tepoch=20", "label_update.f=3", "trainer=cpu",
        "trainer.max_epochs=36", "trainer.check_val_every_n_epoch=100", "trainer.enable_progress_bar=false",
        "data.progress=false", "test=false"])
    train(cfg)
    with open(Path(cfg.paths.output_dir) / "lesps_rounds.csv") as handle:
        rounds = list(csv.DictReader(handle))
    assert len(rounds) >= 5
    points_iou = float(rounds[0]["label_iou_before"])
    final_iou = float(rounds[-1]["label_iou"])
    assert int(rounds[-1]["labelled_pixels"]) > int(float(rounds[0]["labelled_pixels"]))
    assert final_iou > 1.5 * points_iou, (points_iou, final_iou)
    GlobalHydra.instance().clear()
