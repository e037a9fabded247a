"""irstd-export: the exported files compute what the PyTorch model computes, at any allowed size and batch."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from hydra.core.global_hydra import GlobalHydra

from conftest import SMALL_BACKBONES, compose_config
from irstd.inference.export import SIDE_MULTIPLE, export_metadata, export_model, read_metadata
from irstd.inference.tasks import export
from irstd.models import build_backbone
from irstd.training.module import IRSTDModule

# TorchScript is the format under test; torch's deprecation of torch.jit is noted in docs/inference.md
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.*` is deprecated:DeprecationWarning")

RELEASED_ACM = Path(__file__).resolve().parents[2] / "shared" / "checkpoints" / "ACM_LESPS_centroid.pth.tar"
# every backbone, the paper's two at their own widths and the others small: the graph's structure is what the
# export must get right
BACKBONES = {**SMALL_BACKBONES, "acm": {}, "alcnet": {}, "dnanet": {"channels": [4, 8, 8, 8, 8],
                                                                    "num_blocks": [1, 1, 1, 1]}}
# sizes other than the one the export traces at (2 x 1 x 64 x 64), batch 1 and 2
SHAPES = [(1, 1, 96, 64), (2, 1, 64, 128)]
TOLERANCE = 1e-5
# onnxruntime's fused kernels sum in another order; these networks chain long products of attention maps, which
# carries the float32 round-off further (measured max |diff| of the probabilities: MSDA-Net ~1e-3, UIU-Net ~2e-4,
# GGL-Net 1.6e-5)
ONNX_TOLERANCE = {"msdanet": 3e-3, "uiunet": 1e-3, "ggl": 1e-4}


def randomised(net: torch.nn.Module) -> torch.nn.Module:
    """`net` in eval mode with batch-norm statistics measured on a random batch and random affine parameters.

    At initialisation the running statistics are 0 and 1 and the maps fade layer by layer into a constant output,
    against which a wrong normalisation or head would go unnoticed."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.reset_running_stats()
                module.momentum = None  # the batch's own statistics, not a blend with the initial ones
                if module.affine:
                    module.weight.uniform_(0.5, 1.5, generator=generator)
                    module.bias.normal_(0, 0.2, generator=generator)
        net.train()(torch.randn(2, 1, 64, 64, generator=generator))
    return net.eval()


def reference(net: torch.nn.Module, image: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        probabilities = torch.sigmoid(net(image))  # eval mode: one map, DNA-Net's fused head
    # a saturated map would make the comparison vacuous
    assert probabilities.std() > 1e-3
    return probabilities


def images(shape: tuple[int, ...]) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(sum(shape)))


# their ONNX export takes 10-40 s each on 2 CPU cores: in `make test-slow`
SLOW_ONNX = {"ggl", "istdunet", "msdanet", "mshnet", "sctransnet", "uiunet"}


@pytest.fixture(params=sorted(BACKBONES))
def backbone(request) -> tuple[str, torch.nn.Module]:
    return request.param, built(request.param)


def built(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return randomised(build_backbone(name, **BACKBONES[name]))


def metadata_for(name: str) -> dict[str, str]:
    return export_metadata({"name": name, **BACKBONES[name]}, mean=101.5, std=37.25, threshold=0.5, source="test")


def test_torchscript_matches_pytorch_at_other_sizes_and_batches(backbone, tmp_path):
    name, net = backbone
    path = export_model(net, tmp_path / f"{name}.pt", "torchscript", metadata_for(name))
    loaded = torch.jit.load(str(path))
    for shape in SHAPES:
        with torch.no_grad():
            exported = loaded(images(shape))
        assert exported.shape == shape
        torch.testing.assert_close(exported, reference(net, images(shape)), atol=TOLERANCE, rtol=0)
    assert read_metadata(path) == metadata_for(name)
    # readable by torch alone, as a user without irstd would
    extra = {"irstd.json": ""}
    torch.jit.load(str(path), _extra_files=extra)
    assert json.loads(extra["irstd.json"])["mean"] == "101.5"


@pytest.mark.parametrize("name", [pytest.param(name, marks=pytest.mark.slow) if name in SLOW_ONNX else name
                                  for name in sorted(BACKBONES)])
def test_onnx_matches_pytorch_at_other_sizes_and_batches(name, tmp_path):
    onnxruntime = pytest.importorskip("onnxruntime")
    net = built(name)
    path = export_model(net, tmp_path / f"{name}.onnx", "onnx", metadata_for(name))
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (graph_input,), (graph_output,) = session.get_inputs(), session.get_outputs()
    assert (graph_input.name, graph_output.name) == ("image", "probability")
    batch, channels, height, width = graph_input.shape
    assert channels == 1 and all(isinstance(dim, str) for dim in (batch, height, width)), graph_input.shape
    for shape in SHAPES:
        (exported,) = session.run(None, {"image": images(shape).numpy()})
        assert exported.shape == shape
        torch.testing.assert_close(torch.from_numpy(exported), reference(net, images(shape)),
                                   atol=ONNX_TOLERANCE.get(name, TOLERANCE), rtol=0)
    assert read_metadata(path) == metadata_for(name)
    assert sorted(tmp_path.iterdir()) == [path]  # written through a temporary file, nothing left beside it


@pytest.fixture
def checkpoint(tmp_path) -> Path:
    """A checkpoint as irstd-train writes it: module hyperparameters and weights, the DataModule's statistics."""
    torch.manual_seed(0)
    module = IRSTDModule(backbone={"name": "unet", **BACKBONES["unet"]}, threshold=0.4)
    randomised(module.net)
    path = tmp_path / "last.ckpt"
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams),
                "pytorch-lightning_version": pl.__version__, "IRSTDDataModule": {"mean": 88.25, "std": 30.5}}, path)
    return path


def run_export(tmp_path: Path, overrides: list[str]) -> Path:
    try:
        return export(compose_config("export", tmp_path / "run", overrides))
    finally:
        GlobalHydra.instance().clear()


def test_checkpoint_exports_with_its_normalisation_and_chosen_opset(checkpoint, tmp_path):
    onnx = pytest.importorskip("onnx")
    onnxruntime = pytest.importorskip("onnxruntime")
    path = run_export(tmp_path, [f"ckpt_path={checkpoint}", "format=onnx", "opset=20"])
    assert path == tmp_path / "run" / "last.onnx"
    metadata = read_metadata(path)
    assert (float(metadata["mean"]), float(metadata["std"]), float(metadata["threshold"])) == (88.25, 30.5, 0.4)
    assert int(metadata["side_multiple"]) == SIDE_MULTIPLE and metadata["source"] == "last.ckpt"
    assert json.loads(metadata["backbone"]) == {"name": "unet", **BACKBONES["unet"]}
    opsets = {entry.domain: entry.version for entry in onnx.load(str(path)).opset_import}
    assert opsets[""] == 20
    module = IRSTDModule.load_from_checkpoint(checkpoint, map_location="cpu").eval()
    image = images((1, 1, 64, 96))
    (exported,) = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
        None, {"image": image.numpy()})
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(exported), module.probabilities(image), atol=TOLERANCE, rtol=0)


def test_given_statistics_override_the_checkpoint_and_output_is_replaced(checkpoint, tmp_path):
    output = tmp_path / "model.pt"
    output.write_text("an older export")
    overrides = [f"ckpt_path={checkpoint}", "format=torchscript", f"output={output}", "data.mean=10", "data.std=2"]
    assert run_export(tmp_path, overrides) == output
    metadata = read_metadata(output)
    assert (float(metadata["mean"]), float(metadata["std"])) == (10.0, 2.0)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["last.ckpt", "model.pt", "run"]


@pytest.mark.skipif(not RELEASED_ACM.is_file(), reason=f"released weights not found at {RELEASED_ACM}")
def test_released_weights_export_like_eval_loads_them(tmp_path):
    weights = RELEASED_ACM
    path = run_export(tmp_path, ["model=acm", f"model.weights={weights}", "data.mean=95.010", "data.std=41.511",
                                 "format=torchscript"])
    assert path.name == "ACM_LESPS_centroid.pt"
    assert read_metadata(path)["mean"] == "95.01"
    module = IRSTDModule(backbone={"name": "acm"}, weights=str(weights)).eval()
    image = images((1, 1, 128, 160))
    with torch.no_grad():
        torch.testing.assert_close(torch.jit.load(str(path))(image), module.probabilities(image), atol=TOLERANCE,
                                   rtol=0)


def test_released_weights_need_their_statistics(tmp_path):
    weights = RELEASED_ACM
    if not weights.is_file():
        weights = tmp_path / "weights.pth.tar"
        torch.save({"state_dict": build_backbone("acm").state_dict()}, weights)
    with pytest.raises(ValueError, match="data.mean"):
        run_export(tmp_path, ["model=acm", f"model.weights={weights}"])
    with pytest.raises(ValueError, match="data.mean and data.std together"):
        run_export(tmp_path, ["model=acm", f"model.weights={weights}", "data.mean=95"])


def test_export_needs_exactly_one_source(checkpoint, tmp_path):
    with pytest.raises(ValueError, match="exactly one of ckpt_path"):
        run_export(tmp_path, [])
    with pytest.raises(ValueError, match="exactly one of ckpt_path"):
        run_export(tmp_path, [f"ckpt_path={checkpoint}", "model=acm"])


def test_missing_or_foreign_checkpoint_is_an_error_naming_it(tmp_path):
    missing = tmp_path / "nowhere" / "gone.ckpt"
    with pytest.raises(FileNotFoundError, match="ckpt_path=.*gone.ckpt"):
        run_export(tmp_path, [f"ckpt_path={missing}"])
    foreign = tmp_path / "notes.ckpt"
    foreign.write_text("not a checkpoint")
    with pytest.raises(ValueError, match="ckpt_path=.*notes.ckpt"):
        run_export(tmp_path, [f"ckpt_path={foreign}"])


def test_unknown_format_is_a_config_error_naming_the_key(checkpoint, tmp_path):
    with pytest.raises(ValueError, match=r"format='tflite'.*\['onnx', 'torchscript'\]"):
        run_export(tmp_path, [f"ckpt_path={checkpoint}", "format=tflite"])
    assert not (tmp_path / "run").exists()  # rejected before anything is written
