"""Training-free detectors through `irstd-eval` (`detector=<detector>`) and `irstd-reproduce classic`."""

from __future__ import annotations

import json
from pathlib import Path

import hydra
import pytest
import torch
import torch.nn.functional as F
from hydra.core.global_hydra import GlobalHydra

import irstd.classic
from conftest import compose_config, tiny_train_overrides
from irstd.classic import available_detectors
from irstd.classic.base import ClassicDetector
from irstd.cli.reproduce import main
from irstd.inference.tasks import evaluate, load_predictor
from irstd.metrics import metric_suite
from irstd.results.classic import write_classic_results
from irstd.results.reference import CLASSIC_PAPER

CLASSIC_CONFIGS = ("tophat", "maxmedian", "rlcm", "tllcm", "mslcm", "mspcm", "wslcm", "ipi", "pstnn")


class LocalPeak(ClassicDetector):
    """Pixels brighter than their 7x7 neighbourhood mean by more than `k` native units.

    The margin is absolute, so the detector only finds targets when it sees native units; the neighbourhood
    mean changes near the bottom/right edges when zero padding is fed in, so it also notices padding."""

    seen_max = 0.0

    def __init__(self, k: float = 25.0):
        super().__init__()
        self.k = k

    def saliency(self, image: torch.Tensor) -> torch.Tensor:
        LocalPeak.seen_max = max(LocalPeak.seen_max, float(image.max()))
        return image - F.avg_pool2d(image, 7, stride=1, padding=3, count_include_pad=False)

    def segment(self, saliency: torch.Tensor) -> torch.Tensor:
        return saliency > self.k


@pytest.fixture
def local_peak(monkeypatch):
    """LocalPeak registered as `localpeak` for the test: the mechanics under test, not a real detector."""
    monkeypatch.setitem(irstd.classic.DETECTORS._entries, "localpeak", f"{__name__}:LocalPeak")
    LocalPeak.seen_max = 0.0
    yield LocalPeak
    GlobalHydra.instance().clear()


# detector=tophat's config with its detector swapped for LocalPeak, whose only parameter is k (added with +k=...)
LOCAL_PEAK = ["detector=tophat", "detector.name=localpeak", "~detector.size", "~detector.shape", "~detector.ratio"]


def _data_overrides(root) -> list[str]:
    # pad_always: the 64x64 frames get a full block of padding, which the detector must not see
    return [o for o in tiny_train_overrides(root) if o.startswith("data.")] + ["data.evaluation.pad_always=true"]


def _direct_metrics(samples, k: float) -> dict[str, float]:
    """The detector on each unpadded test frame in native units, scored by the metric classes directly."""
    suite = metric_suite(0.5)
    detector = LocalPeak(k)
    for sample in samples:
        image = torch.from_numpy(sample.load_image()).float()[None, None]
        target = torch.from_numpy(sample.load_mask()).float()[None, None]
        probs = detector(image).float()
        suite.update(probs, target, torch.tensor([image.shape[-2:]]))
    return {key: float(value) for key, value in suite.compute().items()}


def test_eval_of_a_classic_detector_matches_running_it_directly(local_peak, tiny_dataset, tmp_path):
    # data.mean/std are given on purpose: a classic model must still see native units
    cfg = compose_config("eval", tmp_path / "eval", _data_overrides(tiny_dataset) + LOCAL_PEAK + [
        "+detector.k=20", "device=cpu", "data.mean=100", "data.std=50"])
    metrics, objects = evaluate(cfg)
    assert local_peak.seen_max > 100, "the detector saw normalised images"
    assert objects["curves"] is None, "a binary detection has no ROC worth drawing"
    direct = _direct_metrics(objects["datamodule"].test_scan.samples, k=20)
    assert direct["found"] > 0, "the test detector finds nothing: the comparison would be vacuous"
    for key in ("iou", "niou", "pixacc", "pd", "fa", "targets", "found", "false_targets"):
        assert metrics[key] == pytest.approx(direct[key], abs=1e-12), key
    record = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert record["name"] == "localpeak" and record["seconds_per_image"] > 0
    assert "| localpeak |" in (tmp_path / "eval" / "results.md").read_text()


def test_the_padded_border_would_change_the_decisions(local_peak, tiny_dataset, tmp_path):
    """Guards the test above: fed whole padded frames the detector decides differently, so matching the direct
    scores shows the valid region alone was used."""
    from irstd.classic.evaluation import ClassicModel

    cfg = compose_config("eval", tmp_path / "eval", _data_overrides(tiny_dataset))
    datamodule = hydra.utils.instantiate(cfg.data, mean=0.0, std=1.0)
    datamodule.setup("test")
    batch = next(iter(datamodule.test_dataloader()))
    model = ClassicModel(LocalPeak(20))
    whole = model.probabilities(batch["image"])
    valid = model.batch_predictor(torch.device("cpu"))(batch)
    assert set(whole.unique().tolist()) <= {0.0, 1.0}
    assert not torch.equal(whole, valid)


@pytest.mark.parametrize("name", CLASSIC_CONFIGS)
def test_every_classic_config_composes_and_builds_its_detector(name, tiny_dataset, tmp_path):
    cfg = compose_config("eval", tmp_path / "eval", [f"data.root={tiny_dataset}", f"detector={name}"])
    assert cfg.detector.name == name and name in available_detectors()
    # the listed keys are the detector's keyword arguments, so each is overridable as detector.KEY=...
    _, model, _ = load_predictor(cfg)
    assert isinstance(model.detector, ClassicDetector)
    GlobalHydra.instance().clear()


def test_classic_parameters_reach_the_detector(local_peak, tiny_dataset, tmp_path):
    cfg = compose_config("eval", tmp_path / "eval", [f"data.root={tiny_dataset}", *LOCAL_PEAK,
                                                     "+detector.k=7.5", "name=row"])
    name, model, normalization = load_predictor(cfg)
    assert (name, model.detector.k, normalization) == ("row", 7.5, {"mean": 0.0, "std": 1.0})


def _fake_run(run_dir, detector: str, iou: float, pd: float, fa: float, seconds: float) -> None:
    (run_dir / detector).mkdir(parents=True)
    (run_dir / detector / "metrics.json").write_text(json.dumps(
        {"iou": iou, "pd": pd, "fa": fa, "niou": 0.0, "images": 214, "seconds_per_image": seconds}))


def test_classic_table_sets_ours_beside_the_papers_sirst_columns(tmp_path):
    _fake_run(tmp_path, "wslcm", 0.3, 0.8, 2e-5, 0.5)
    _fake_run(tmp_path, "tophat", 0.0714, 0.7984, 1.012e-3, 0.01)
    (tmp_path / "ipi").mkdir()  # a detector that failed
    markdown = write_classic_results(tmp_path).read_text()
    rows = [line for line in markdown.splitlines() if line.startswith("| ")]
    assert rows[0].startswith("| method | detector | images | IoU x100 | paper | Pd x100 | paper | Fa x1e6 | paper")
    # the paper's order; Top-Hat's figures equal the paper's, WSLCM has no paper row
    assert rows[1] == "| Top-Hat | `detector=tophat` | 214 | 7.14 | 7.14 | 79.84 | 79.84 | 1012.00 | 1012.00 | 0.010 |"
    assert rows[2] == "| WSLCM | `detector=wslcm` | 214 | 30.00 | 1.02 | 80.00 | 80.99 | 20.00 | 45846.16 | 0.500 |"
    assert "ipi: no metrics.json" in markdown
    lines = (tmp_path / "results.csv").read_text().splitlines()
    assert lines[0] == "detector,method,images,iou,pd,fa,paper_iou,paper_pd,paper_fa,seconds_per_image"
    assert lines[1].startswith("tophat,Top-Hat,214,") and lines[1].endswith(",7.14,79.84,1012.0,0.01")
    assert lines[2].endswith(",1.02,80.99,45846.16,0.5")


def test_the_paper_rows_are_table_2s_sirst_columns():
    assert {name: (f.iou, f.pd, f.fa) for name, f in CLASSIC_PAPER.items()} == {
        "tophat": (7.14, 79.84, 1012.00), "rlcm": (21.02, 80.61, 199.15), "tllcm": (11.03, 79.47, 7.27),
        "mspcm": (12.38, 83.27, 17.77), "ipi": (25.67, 85.55, 11.47), "pstnn": (22.40, 77.95, 29.11),
        "maxmedian": (4.17, 69.20, 55.33), "mslcm": (11.56, 78.33, 8.37), "wslcm": (1.02, 80.99, 45846.16)}


def test_reproduce_classic_runs_irstd_eval_per_detector(monkeypatch, tmp_path):
    import irstd.results.classic as classic

    commands = []

    def fake_run(command, check):
        commands.append(command)
        run_dir = next(arg.split("=", 1)[1] for arg in command if arg.startswith("hydra.run.dir="))
        Path(run_dir).mkdir(parents=True)
        (Path(run_dir) / "metrics.json").write_text(json.dumps({"iou": 0.1, "pd": 0.5, "fa": 1e-5}))
        return type("Done", (), {"returncode": 0})()

    monkeypatch.setattr(classic.subprocess, "run", fake_run)
    status = main(["classic", "--detectors", "tophat,ipi", "--data-root", "/data/SIRST", "--out-dir", str(tmp_path),
                   "device=cpu"])
    assert status == 0
    assert [c[3:6] for c in commands] == [["detector=tophat", "data=sirst", "data.root=/data/SIRST"],
                                          ["detector=ipi", "data=sirst", "data.root=/data/SIRST"]]
    assert all(c[-1] == "device=cpu" and c[1:3] == ["-m", "irstd.cli.eval"] for c in commands)
    results = next((tmp_path / "classic").iterdir()) / "results.md"
    assert "| IPI | `detector=ipi` |  | 10.00 | 25.67 |" in results.read_text()
    with pytest.raises(SystemExit):
        main(["classic", "--detectors", "nope", "--out-dir", str(tmp_path)])


@pytest.mark.parametrize("entry", ["train", "predict", "export"])
def test_model_means_a_network_everywhere(entry, tmp_path):
    # detectors are their own config group, known to irstd-eval only; `model=` lists networks alone
    with pytest.raises(Exception, match="(?s)Could not find 'model/tophat'.*unet"):
        compose_config(entry, tmp_path / entry, ["model=tophat"])
    GlobalHydra.instance().clear()
