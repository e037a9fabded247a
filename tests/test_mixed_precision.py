"""trainer.precision=bf16-mixed / 16-mixed: the backbone under autocast, the loss, the sigmoid, the metrics and the
label updates in float32."""

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.core.global_hydra import GlobalHydra

from conftest import SMALL_BACKBONES, compose_config, tiny_train_overrides
from irstd.data.label_bank import LabelBank
from irstd.lesps.evolution import evolve_labels
from irstd.models import available_backbones
from irstd.training.module import IRSTDModule
from irstd.training.run import train

# |mixed - float32| / float32 of one training step's loss. The largest over 6 seeds at these widths: 4 % (ACM, both
# dtypes), 3.5 % (UIU-Net), below 1.5 % for the others; a half-precision forward carries 8 (bf16) or 11 (float16)
# mantissa bits, and batch norm over 2 tiny frames amplifies it.
LOSS_RTOL = 0.06


def _cpu_autocast_supports(dtype: torch.dtype) -> bool:
    # an unsupported dtype disables autocast with a warning, leaving the convolution in float32
    with warnings.catch_warnings(), torch.autocast("cpu", dtype=dtype):
        warnings.simplefilter("ignore")
        return torch.nn.functional.conv2d(torch.ones(1, 1, 3, 3), torch.ones(1, 1, 1, 1)).dtype == dtype


def small_module(name: str) -> IRSTDModule:
    torch.manual_seed(0)
    return IRSTDModule({"name": name, **SMALL_BACKBONES[name]})


def target_batch() -> dict[str, torch.Tensor]:
    """Two 32 x 32 noise frames with three bright square targets, labelled exactly."""
    generator = torch.Generator().manual_seed(0)
    label = torch.zeros(2, 1, 32, 32)
    label[:, :, 10:13, 14:17] = 1
    label[1, :, 22:26, 5:9] = 1
    return {"image": torch.randn(2, 1, 32, 32, generator=generator) + 4 * label, "label": label}


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "float16"])
@pytest.mark.parametrize("name", available_backbones())
def test_a_training_step_under_autocast_matches_float32(name, dtype):
    if not _cpu_autocast_supports(dtype):
        pytest.skip(f"CPU autocast of this torch ({torch.__version__}) does not run {dtype}")
    module = small_module(name).train()
    batch = target_batch()
    reference = float(module.training_loss(batch).detach())
    with torch.autocast("cpu", dtype=dtype):
        mixed = module.training_loss(batch)
    assert mixed.dtype == torch.float32 and torch.isfinite(mixed), (name, mixed)
    assert float(mixed.detach()) == pytest.approx(reference, rel=LOSS_RTOL), name
    mixed.backward()
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    assert grads and all(g.dtype == torch.float32 and torch.isfinite(g).all() for g in grads), name

    # evaluation and label evolution get float32 probabilities from the half-precision forward
    module.eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=dtype):
        probs = module.probabilities(batch["image"])
    assert probs.dtype == torch.float32 and torch.isfinite(probs).all(), name
    valid_hw = torch.tensor([[32, 32], [32, 32]])
    evolved = evolve_labels(probs, batch["label"], valid_hw)
    assert evolved.dtype == torch.float32 and torch.isfinite(evolved).all(), name


def test_a_tiny_bf16_run_with_lesps_ends_with_finite_metrics_and_float32_rounds(tiny_dataset, tmp_path):
    cfg = compose_config("train", tmp_path / "run", tiny_train_overrides(tiny_dataset, label="centroid",
                                                                         lesps="default") + [
        "trainer.precision=bf16-mixed", "label_init=clustering", "start.Tloss=1e9", "label_update.f=1"])
    metrics, objects = train(cfg)
    GlobalHydra.instance().clear()
    assert objects["trainer"].precision == "bf16-mixed"
    for key in ("train/loss_epoch", "val/iou", "test/iou", "test/niou", "test/pd", "test/fa", "lesps/label_iou"):
        assert np.isfinite(float(metrics[key])), (key, metrics[key])
    bank = LabelBank(Path(cfg.paths.output_dir) / "label_bank")
    assert bank.rounds() == [0, 1, 2]
    for round_index in bank.rounds():
        labels = bank.read_round(round_index)
        assert all(a.dtype == np.float32 and np.isfinite(a).all() for a in labels.values()), round_index
    # the rounds moved: the evolution worked on the bf16 model's predictions
    assert any(not np.array_equal(bank.read(n, 0), bank.read(n, 2)) for n in bank.names())
