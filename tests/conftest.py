"""Shared fixtures: tiny synthetic data, composed Hydra configs for fast CPU runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from irstd.config import CONFIG_MODULE
from irstd.data.synthetic import SyntheticSpec, generate_synthetic

SIRST = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "SIRST"
requires_sirst = pytest.mark.skipif(not SIRST.is_dir(), reason=f"real SIRST dataset not found at {SIRST}")

TINY_SPEC = dict(num_train=6, num_test=3, height=64, width=64, seed=3)


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data") / "synthetic"
    return generate_synthetic(root, SyntheticSpec(**TINY_SPEC))


def compose_config(name: str, output_dir: Path, overrides: list[str]) -> DictConfig:
    """Compose a shipped entry config as `irstd-train`/`irstd-eval` would, rooted in `output_dir`."""
    GlobalHydra.instance().clear()
    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        cfg = compose(config_name=name, return_hydra_config=True, overrides=overrides)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(output_dir)
        cfg.hydra.job.num = 0
    HydraConfig().set_config(cfg)
    return cfg


def tiny_train_overrides(data_root: Path, label: str = "full", lesps: str = "off") -> list[str]:
    """A few seconds of CPU training on the tiny synthetic set, no background workers.

    Full supervision without evolution by default: the mechanics under test, not the method."""
    return [
        f"data.root={data_root}",
        "data.synthetic.num_train=6", "data.synthetic.num_test=3", "data.synthetic.height=64",
        "data.synthetic.width=64", "data.synthetic.seed=3",
        "data.patch_size=32", "data.batch_size=4", "data.loading.eval_batch_size=2", "data.loading.num_workers=0",
        "data.progress=false", f"label={label}", f"lesps={lesps}",
        "model.backbone.width=4", "model.backbone.depth=2",
        "trainer=cpu", "trainer.max_epochs=2", "trainer.check_val_every_n_epoch=1",
        "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false",
        "trainer.log_every_n_steps=1",
    ]


def run_predict(output: Path, overrides: list[str]) -> dict:
    """`irstd-predict` in-process on the CPU into `output`, as the CLI composes it."""
    from irstd.inference.tasks import predict

    cfg = compose_config("predict", output, [f"output={output}", "device=cpu", "progress=false", *overrides])
    try:
        return predict(cfg)
    finally:
        GlobalHydra.instance().clear()


def read_png(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image)


@pytest.fixture
def train_cfg(tmp_path, tiny_dataset) -> DictConfig:
    cfg = compose_config("train", tmp_path / "run", tiny_train_overrides(tiny_dataset))
    yield cfg
    GlobalHydra.instance().clear()


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
DTYPES = [torch.float32, torch.float64]


@pytest.fixture(params=[(device, dtype) for device in DEVICES for dtype in DTYPES], ids=lambda p: f"{p[0]}-{p[1]}")
def to_tensor(request):
    """Turns an H x W (or B x H x W) array into a B x 1 x H x W tensor of the parametrised device and dtype."""
    device, dtype = request.param

    def convert(array) -> torch.Tensor:
        tensor = torch.as_tensor(np.asarray(array, dtype=np.float64), dtype=dtype, device=device)
        return tensor.view(-1, 1, *tensor.shape[-2:])

    return convert
