"""Fixed pseudo labels from point labels (the paper's Table 3 baselines): generation, label kinds, experiments."""


import numpy as np
import pytest
import torch
from hydra.core.global_hydra import GlobalHydra

import irstd.classic
from conftest import compose_config, tiny_train_overrides
from irstd.classic.base import ClassicDetector, mean_std_threshold
from irstd.config import config_root
from irstd.data.datamodule import IRSTDDataModule
from irstd.data.points import label_targets, map_to_points, points_to_map
from irstd.data.pseudo_labels import PseudoLabeler, keep_point_regions, threshold_detections
from irstd.data.sources import decode_image
from irstd.results.reference import TABLES
from irstd.results.reproduce import load_jobs, summarize, write_results
from irstd.training.run import train

TABLE3_DIR = config_root() / "experiment" / "table3"
TABLE3 = sorted(f"table3/{path.stem}" for path in TABLE3_DIR.glob("*.yaml"))
DETECTORS = ("rlcm", "tllcm", "mslcm", "mspcm")


@pytest.fixture(autouse=True)
def clear_hydra():
    yield
    GlobalHydra.instance().clear()


class BrightPixels(ClassicDetector):
    """Stands in for the local-contrast detectors: the image as saliency, mean + 3 std as the rule."""

    def saliency(self, image: torch.Tensor) -> torch.Tensor:
        return image.clone()

    def segment(self, saliency: torch.Tensor) -> torch.Tensor:
        return mean_std_threshold(saliency, 3.0)


@pytest.fixture
def fake_detectors(monkeypatch):
    """Every detector of Table 3 built as `BrightPixels` (the real ones are tested in their own module)."""
    registry = dict(irstd.classic.DETECTORS._entries)
    registry.update({name: f"{__name__}:BrightPixels" for name in DETECTORS})
    monkeypatch.setattr(irstd.classic.DETECTORS, "_entries", registry)


def gaussian(shape, center, sigma, amplitude):
    rows, cols = np.indices(shape)
    return amplitude * np.exp(-((rows - center[0]) ** 2 + (cols - center[1]) ** 2) / (2 * sigma ** 2))


def scene():
    """A 64 x 64 frame: a Gaussian target at (20, 20) and, 12 pixels away inside its window, a dimmer blob."""
    rng = np.random.default_rng(0)
    background = 40 + rng.uniform(0, 2, (64, 64))
    return (background + gaussian((64, 64), (20, 20), 1.5, 150) + gaussian((64, 64), (20, 32), 1.0, 120)).astype(
        np.float32)


@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.7])
def test_threshold_label_is_the_target_around_the_point_and_nothing_disconnected(threshold):
    image = scene()
    label = PseudoLabeler("threshold", threshold)(image, points_to_map(np.array([[20, 20]]), image.shape))
    assert label.dtype == np.float32 and set(np.unique(label)) == {0.0, 1.0}
    # the window (33 x 33 around the point) scaled by its own range: the target's pixels above the threshold
    window = image[4:37, 4:37]
    scaled = (image - window.min()) / (window.max() - window.min())
    target = gaussian(image.shape, (20, 20), 1.5, 1) > 0.2
    expected = (scaled >= threshold) & target
    assert np.array_equal(label > 0, expected) and expected.sum() > 1
    # the blob beside it is bright enough to pass the threshold, but is not connected to the point
    assert scaled[20, 32] >= threshold and label[20, 32] == 0
    assert label_targets(label)[1] == 1


def test_threshold_window_is_local_and_a_flat_window_detects_nothing():
    image = scene()
    # a point 40 pixels from the target: its window does not reach it, so only its own flat background counts
    far = threshold_detections(image, np.array([[60, 60]]), 0.5)
    assert not far[:40, :40].any()
    assert not threshold_detections(np.full((16, 16), 7.0), np.array([[8, 8]]), 0.3).any()
    with pytest.raises(ValueError, match="label_init.threshold"):
        PseudoLabeler("threshold", 1.5)
    with pytest.raises(ValueError, match="label_init.window"):
        PseudoLabeler("threshold", 0.5, window=32)
    with pytest.raises(ValueError, match="label_init.method"):
        PseudoLabeler("otsu")


def test_regions_without_a_point_are_dropped_and_an_undetected_point_keeps_its_pixel():
    detections = np.zeros((10, 10), dtype=bool)
    detections[1:3, 1:3] = True  # holds a point
    detections[3, 3] = True  # touches it diagonally: the same 8-connected region
    detections[6:8, 6:8] = True  # no point: dropped
    points = points_to_map(np.array([[1, 1], [9, 0]]), (10, 10))
    kept = keep_point_regions(detections, points)
    expected = np.zeros_like(detections)
    expected[1:3, 1:3] = expected[3, 3] = expected[9, 0] = True
    assert np.array_equal(kept, expected)


def test_a_point_below_the_threshold_keeps_only_itself():
    # a coarse point on the target's rim, darker than half the window's range
    image = scene()
    point = np.array([[20, 23]])
    label = PseudoLabeler("threshold", 0.7)(image, points_to_map(point, image.shape))
    assert map_to_points(label).tolist() == point.tolist()


def test_detector_labels_keep_the_detections_that_hold_a_point(fake_detectors):
    image = scene()
    image[50:52, 50:52] += 150  # a bright clutter region away from every point
    labeler = PseudoLabeler("mspcm")
    assert isinstance(labeler.detector, BrightPixels)
    detections = labeler.detections(image, np.zeros_like(image))
    assert detections[20, 20] and detections[50, 50] and detections[20, 32]
    label = labeler(image, points_to_map(np.array([[20, 20]]), image.shape)) > 0
    regions, _ = label_targets(detections)
    assert np.array_equal(label, regions == regions[20, 20])
    assert not label[50, 50] and not label[20, 32]


@pytest.mark.parametrize("source", ["centroid", "coarse"])
def test_round_zero_holds_pseudo_labels_grown_from_the_source_points(source, tiny_dataset, tmp_path):
    initialiser = PseudoLabeler(method="threshold", threshold=0.5, window=33)
    datamodule = IRSTDDataModule(root=str(tiny_dataset), split="synthetic", label=source,
                                 label_options={"kind": source, "seed": 0}, label_init=initialiser,
                                 bank_dir=str(tmp_path / "bank"), stats_file=str(tmp_path / "stats.json"),
                                 patch_size=32, loading={"num_workers": 0}, progress=False)
    datamodule.setup("fit")
    grown = 0
    for sample in datamodule.train_scan.samples:
        label = datamodule.bank.read(sample.name)
        points = sample.load_label(source, 0) > 0
        assert label[points].all()
        regions, count = label_targets(label)
        # every region holds a point of the source, and the regions overlap the real targets
        assert all(points[regions == index].any() for index in range(1, count + 1))
        mask = decode_image(sample.mask) > 0
        grown += int((label > 0).sum() - points.sum())
        assert (label > 0)[mask].any()
    assert grown > 0
    assert datamodule.bank.round_meta(0)["label_init"] == "pseudo"


def test_label_init_pseudo_composes_and_trains_a_step(tiny_dataset, tmp_path):
    cfg = compose_config("train", tmp_path / "run", [
        *tiny_train_overrides(tiny_dataset, label="coarse"), "label_init=pseudo", "label_init.threshold=0.3",
        "+trainer.fast_dev_run=1"])
    assert cfg.data.label == "coarse" and cfg.data.label_init.threshold == 0.3
    metrics, _ = train(cfg)
    assert np.isfinite(metrics["train/loss_step"])


def test_every_table3_row_has_its_experiment_file():
    rows = [row.experiment for row in TABLES["table3"]]
    assert sorted(name for name in rows if name.startswith("table3/")) == TABLE3
    assert len(TABLE3) == 14 and {"table1/centroid_lesps", "table1/coarse_lesps"} < set(rows)


@pytest.mark.parametrize("experiment", TABLE3)
def test_table3_experiment_composes(experiment, tiny_dataset, tmp_path):
    method, source = experiment.removeprefix("table3/").split("_")
    cfg = compose_config("train", tmp_path / "run", [f"experiment={experiment}", "scale=smoke"])
    assert (cfg.model.backbone.name, cfg.label.kind) == ("dnanet", source)
    assert cfg.label_init._target_.endswith("PseudoLabeler")
    assert cfg.label_update._target_.endswith("FixedLabelsCallback")
    if method.startswith("threshold"):
        assert cfg.label_init.method == "threshold" and cfg.label_init.threshold == float(f"0.{method[-1]}")
    else:
        assert cfg.label_init.method == method


@pytest.mark.parametrize("experiment", ["table3/threshold05_centroid", "table3/tllcm_coarse"])
def test_table3_experiment_trains_a_step(experiment, fake_detectors, tiny_dataset, tmp_path):
    overrides = [o for o in tiny_train_overrides(tiny_dataset) if o.startswith(("data.", "trainer."))]
    cfg = compose_config("train", tmp_path / "run", [
        f"experiment={experiment}", "scale=smoke", *overrides, "data.batch_size=2", "+trainer.fast_dev_run=1"])
    metrics, _ = train(cfg)
    assert np.isfinite(metrics["train/loss_step"]) and 0 <= metrics["test/iou"] <= 1


def test_table3_results_sit_beside_the_papers_numbers(tmp_path):
    from test_experiments import fake_job, fake_metrics

    sweep = tmp_path / "sweep"
    for index, row in enumerate(TABLES["table3"]):
        fake_job(sweep / str(index), row.experiment, 0, fake_metrics(0.1, 0.8, 2e-6))
    results, notes = summarize("table3", load_jobs(sweep))
    assert notes == [] and len(results) == 16
    rlcm = next(result for result in results if result.row.experiment == "table3/rlcm_coarse")
    assert (rlcm.paper.iou, rlcm.paper.pd, rlcm.paper.fa) == (22.53, 90.56, 3.69)
    assert rlcm.paper_iou_ratio == pytest.approx(22.53 / 75.67) and rlcm.iou_ratio is None
    markdown = write_results(sweep, "table3", "smoke").read_text()
    assert markdown.startswith("# Table 3 of Ying et al.")
    assert "| Threshold=0.3 | centroid | synthetic | 1 | 10.00 | 4.92 |" in markdown
    assert "| MSLCM | coarse | synthetic | 1 | 10.00 |  |" in markdown
