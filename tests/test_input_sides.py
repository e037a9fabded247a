"""Input sides: every backbone declares the multiple its input sides must be (`side_multiple`); evaluation and
prediction pad to it, training refuses padding that violates it, export refuses a backbone its contract cannot
serve."""

from types import SimpleNamespace

import pytest
import torch

from conftest import SMALL_BACKBONES
from irstd.inference.evaluation import model_predictor
from irstd.models import build_backbone, final_output, input_side_multiple
from irstd.training.run import check_input_sides


def odd_multiple(multiple: int, at_least: int) -> int:
    count = -(-at_least // multiple)
    return multiple * (count + 1 - count % 2)


@pytest.mark.parametrize("name", sorted(SMALL_BACKBONES))
def test_the_declared_multiple_divides_the_framework_padding_and_sizes_it_allows_run(name):
    torch.manual_seed(0)
    net = build_backbone(name, **SMALL_BACKBONES[name]).eval()
    multiple = input_side_multiple(net)
    assert multiple >= 1 and 32 % multiple == 0, (name, multiple)
    # sides that are odd multiples of the declared one: no hidden stricter rule
    height, width = odd_multiple(multiple, 40), odd_multiple(multiple, 72)
    with torch.no_grad():
        out = final_output(net(torch.randn(2, 1, height, width)))
    assert out.shape == (2, 1, height, width), name


def test_the_predictor_pads_an_odd_frame_to_the_backbone_multiple_and_crops_back():
    torch.manual_seed(0)
    net = build_backbone("acm", **SMALL_BACKBONES["acm"]).eval()
    assert input_side_multiple(net) == 16
    image = torch.randn(1, 1, 40, 56)
    probs = model_predictor(net, torch.device("cpu"))({"image": image})
    assert probs.shape == (1, 1, 40, 56)
    padded = torch.zeros(1, 1, 48, 64)
    padded[..., :40, :56] = image
    with torch.no_grad():
        expected = torch.sigmoid(net(padded))[..., :40, :56]
    torch.testing.assert_close(probs, expected)


def test_training_refuses_evaluation_padding_the_backbone_cannot_take():
    net = build_backbone("unet", width=4, depth=4)
    model = SimpleNamespace(net=net)
    datamodule = SimpleNamespace(evaluation=SimpleNamespace(pad_multiple=8), hparams=SimpleNamespace(patch_size=64))
    with pytest.raises(ValueError, match=r"multiples of 16.*data\.evaluation\.pad_multiple \(now 8\)"):
        check_input_sides(model, datamodule)
    datamodule.evaluation.pad_multiple = 32
    check_input_sides(model, datamodule)


def test_export_refuses_a_backbone_its_side_contract_cannot_serve(tmp_path):
    from irstd.inference.export import export_model

    net = build_backbone("unet", width=2, depth=6)  # six poolings: sides must be multiples of 64
    with pytest.raises(ValueError, match="multiples of 64"):
        export_model(net, tmp_path / "model.pt", "torchscript", {})
    assert not (tmp_path / "model.pt").exists()
