"""Mapping-degeneration study: the IoU rule, vmapped single-sample training, the phenomenon, the study outputs."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from irstd.data import synthetic as syn
from irstd.degeneration.samples import label_iou
from irstd.degeneration.study import run_study
from irstd.degeneration.training import (
    StudySamples,
    dihedral,
    positive_iou,
    train_many_sample,
    train_single_sample,
    undo_dihedral,
)
from irstd.losses import focal_loss
from irstd.models.unet import UNet
from tests.conftest import compose_config


def tiny_unet() -> UNet:
    return UNet(width=4, depth=2, target_prior=0.5)


def gaussian_samples(count: int, size: int = 32, radius: float = 3.0, peak: float = 100.0,
                     seed: int = 0) -> StudySamples:
    """`count` frames with one Gaussian target each at varied places on a noisy ramp, centroid point labels."""
    rng = np.random.default_rng(seed)
    signal, footprint = syn.gaussian_target(radius, peak)
    images, labels, masks = [], [], []
    yy, xx = np.mgrid[0:size, 0:size]
    for _ in range(count):
        background = 80 + 0.5 * xx + rng.normal(0, 2, (size, size))
        row, col = (int(v) for v in rng.integers(size // 4, 3 * size // 4, 2))
        image, mask = syn.place_target(background.astype(np.float32), signal, footprint, row, col)
        images.append((image - 90) / 20)
        labels.append(syn.points_label([syn.centroid_pixel(mask)], mask.shape))
        masks.append(mask)

    def stack(arrays):
        return torch.from_numpy(np.stack(arrays)[:, None].copy())

    return StudySamples(stack(images).float(), stack(labels).float(), stack(masks).bool(),
                        [f"img{i}" for i in range(count)])


def test_positive_iou_thresholds_at_half_the_maximum():
    prob = torch.zeros(1, 1, 4, 4)
    prob[0, 0, 0, :3] = torch.tensor([0.2, 0.11, 0.1])  # 0.1 is not above half of 0.2
    mask = torch.zeros(1, 1, 4, 4, dtype=torch.bool)
    mask[0, 0, 0, 1:4] = True
    # positives {0, 1}, mask {1, 2, 3}: intersection 1, union 4
    assert positive_iou(prob, mask).item() == pytest.approx(0.25)
    valid = torch.ones_like(mask)
    valid[0, 0, 0, 0] = False  # the peak is padding: the max becomes 0.11, so 0.1 counts
    assert positive_iou(prob, mask, valid).item() == pytest.approx(2 / 3)


def test_vmapped_runs_equal_separate_trainings():
    samples = gaussian_samples(3)
    vmapped = train_single_sample(tiny_unet, samples, epochs=4, lr=1e-3, seed=5)
    for run in range(3):
        torch.manual_seed(5 + run)
        network = tiny_unet().train()
        optimizer = torch.optim.Adam(network.parameters(), lr=1e-3)
        for epoch in range(4):
            logits = network(samples.images[run:run + 1])
            loss = focal_loss(logits, samples.labels[run:run + 1])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            assert vmapped.loss[epoch, run].item() == pytest.approx(loss.item(), rel=1e-4)
            iou = positive_iou(torch.sigmoid(logits.detach()), samples.masks[run:run + 1])
            assert vmapped.iou[epoch, run].item() == pytest.approx(iou.item(), abs=1e-6)
    # training moved every run: the loss fell
    assert (vmapped.loss[-1] < vmapped.loss[0]).all()


def test_chunking_does_not_change_the_runs():
    samples = gaussian_samples(3)
    whole = train_single_sample(tiny_unet, samples, epochs=3, seed=1)
    chunked = train_single_sample(tiny_unet, samples, epochs=3, seed=1, chunk_size=2)
    torch.testing.assert_close(chunked.loss, whole.loss, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(chunked.best_prediction, whole.best_prediction, rtol=1e-3, atol=1e-4)


def test_many_sample_records_every_image_each_epoch_and_is_seeded():
    samples = gaussian_samples(5)
    torch.manual_seed(0)
    first = train_many_sample(tiny_unet(), samples, epochs=3, batch_size=2, seed=0)
    torch.manual_seed(0)
    again = train_many_sample(tiny_unet(), samples, epochs=3, batch_size=2, seed=0)
    assert (first.loss > 0).all()  # every image got a prediction in every epoch
    torch.testing.assert_close(first.iou, again.iou)
    assert first.best_epoch.min() >= 1 and first.best_epoch.max() <= 3


def test_a_unet_on_a_point_label_first_segments_the_target_then_degenerates():
    """The phenomenon (Sec. 3): peak IoU well above the point label's own IoU, then a fall towards the point."""
    samples = gaussian_samples(1, size=64, radius=3.0, peak=100.0, seed=2)
    curves = train_single_sample(lambda: UNet(width=16, depth=3, target_prior=0.5), samples, epochs=120, seed=0)
    point = label_iou(samples).item()
    peak, epoch = curves.best_iou.item(), int(curves.best_epoch.item())
    assert point < 0.05
    assert peak > 0.3 and peak > 6 * point
    assert 1 < epoch < 120  # it rises first, at some epoch inside training
    assert curves.iou[-1, 0].item() < 0.6 * peak  # and falls back afterwards


def study_overrides(data_root) -> list[str]:
    """A whole study in seconds: 32-px crops, a 4-wide U-Net, 3 epochs, 2 runs, two factors with two values."""
    return [
        f"dataset.root={data_root}", "dataset.split=synthetic", "dataset.crop_size=32", "dataset.epochs=3",
        "dataset.many_epochs=2", "dataset.batch_size=4", "network.width=4", "network.depth=2",
        "factors.run=[size,count]", "factors.runs=2", "factors.frame_size=32", "factors.epochs=3",
        "factors.size.values=[2,4]", "factors.count.values=[1,3]", "factors.count.radius=4", "device=cpu",
    ]


def read_csv(path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_study_writes_the_figures_tables_and_summary(tmp_path, tiny_dataset):
    cfg = compose_config("degeneration", tmp_path, study_overrides(tiny_dataset))
    summary = run_study(OmegaConf.to_container(cfg, resolve=True), tmp_path, torch.device("cpu"))

    for name in ("fig2.png", "fig5_size.png", "fig5_count.png", "summary.json"):
        assert (tmp_path / name).stat().st_size > 0, name
    images = read_csv(tmp_path / "fig2_images.csv")
    assert len(images) == summary["fig2"]["images"] == 6  # every training image of the tiny set has targets
    assert [row["epoch"] for row in read_csv(tmp_path / "fig2_curves.csv")] == ["1", "2", "3"]
    curves = read_csv(tmp_path / "fig2_curves.csv")
    assert curves[2]["many_mean_iou"] == ""  # many-sample ran 2 epochs only
    histogram = read_csv(tmp_path / "fig2_histogram.csv")
    assert sum(int(row["single"]) for row in histogram) == 6
    assert sum(int(row["many"]) for row in histogram) == 6
    best = [float(row["single_best_iou"]) for row in images]
    fraction = summary["fig2"]["single"]["fraction_best_iou_above_0.5"]
    assert fraction == pytest.approx(np.mean([b > 0.5 for b in best]), abs=1e-6)

    rows = read_csv(tmp_path / "fig5_summary.csv")
    assert [(row["factor"], row["value"]) for row in rows] == [
        ("size", "2"), ("size", "4"), ("count", "1"), ("count", "3")]
    # three points in a radius-4 disk hold three times the single point's share of the mask
    count = {row["value"]: float(row["label_iou"]) for row in rows if row["factor"] == "count"}
    assert count["3"] == pytest.approx(3 * count["1"], rel=1e-4)
    assert len(read_csv(tmp_path / "fig5_size.csv")) == 3
    assert json.loads((tmp_path / "summary.json").read_text())["fig5"][0]["runs"] == 2


@pytest.mark.parametrize(("override", "message"), [
    ("factors.run=[colour]", "factors.run"),
    ("dataset.schemes=[few]", "dataset.schemes"),
    ("network.name=resnet", "network.name"),
])
def test_study_config_mistakes_name_the_key(tmp_path, tiny_dataset, override, message):
    cfg = compose_config("degeneration", tmp_path, study_overrides(tiny_dataset) + [override])
    with pytest.raises(ValueError, match=message):
        run_study(OmegaConf.to_container(cfg, resolve=True), tmp_path, torch.device("cpu"))


def test_the_command_runs_a_synthetic_only_study_into_its_run_directory(tmp_path):
    overrides = [o for o in study_overrides("unused") if not o.startswith("dataset.")]
    result = subprocess.run([sys.executable, "-m", "irstd.cli.degeneration", "dataset.root=null",
                             "factors.run=[position]", "factors.position.values=[0,2]", "factors.position.radius=4",
                             f"hydra.run.dir={tmp_path}", *[o for o in overrides if not o.startswith("factors.run")]],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "config_resolved.yaml").is_file()
    assert [row["value"] for row in read_csv(tmp_path / "fig5_summary.csv")] == ["0", "2"]
    assert "fig2" not in json.loads((tmp_path / "summary.json").read_text())

    missing = subprocess.run([sys.executable, "-m", "irstd.cli.degeneration", f"dataset.root={tmp_path / 'none'}",
                              f"hydra.run.dir={tmp_path / 'run2'}"], capture_output=True, text=True, timeout=300)
    assert missing.returncode != 0
    assert "dataset.root=" in missing.stderr and "dataset.root=null" in missing.stderr


def test_the_eight_dihedral_views_are_distinct_and_undone_exactly():
    image = torch.arange(16.0).view(1, 1, 4, 4).expand(8, 1, 4, 4)
    ops = torch.arange(8)
    turned = dihedral(image, ops)
    assert len({tuple(view.flatten().tolist()) for view in turned}) == 8
    torch.testing.assert_close(undo_dihedral(turned, ops), image)


def test_augmented_runs_are_seeded_chunk_free_and_store_predictions_upright():
    samples = gaussian_samples(3)
    whole = train_single_sample(tiny_unet, samples, epochs=3, seed=2, augment=True)
    chunked = train_single_sample(tiny_unet, samples, epochs=3, seed=2, augment=True, chunk_size=1)
    torch.testing.assert_close(chunked.loss, whole.loss, rtol=1e-4, atol=1e-5)
    plain = train_single_sample(tiny_unet, samples, epochs=3, seed=2)
    assert not torch.allclose(plain.loss, whole.loss)  # the views did change what the networks saw
    # stored best predictions are in the image's own frame: their IoU with the upright mask is the recorded best
    upright = positive_iou(whole.best_prediction.unsqueeze(1), samples.masks)
    torch.testing.assert_close(upright, whole.best_iou, atol=1e-3, rtol=0)


def test_the_paper_scale_composes_with_the_papers_sizes(tmp_path):
    cfg = compose_config("degeneration", tmp_path, ["scale=study_paper"])
    assert (cfg.network.width, cfg.network.depth, cfg.chunk_size) == (64, 4, 32)
    assert (cfg.dataset.crop_size, cfg.factors.frame_size, cfg.factors.runs) == (256, 256, 100)
    assert cfg.factors.intensity["values"] == [10, 50, 100, 200, 500]
    assert cfg.factors.size["values"] == [3, 5, 7, 9, 13]
