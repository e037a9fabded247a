"""Shared fixtures: tiny synthetic data, composed Hydra configs for fast CPU runs."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict
from torch import nn

from irstd.config import CONFIG_MODULE
from irstd.data.synthetic import SyntheticSpec, generate_synthetic
from irstd.models import build_backbone

SIRST = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "SIRST"
requires_sirst = pytest.mark.skipif(not SIRST.is_dir(), reason=f"real SIRST dataset not found at {SIRST}")

# Reduced widths of every registered backbone, for tests that build and run each of them on tiny inputs (their
# default widths reach 50 M parameters); tests/test_models.py checks that every registered backbone has one.
SMALL_BACKBONES: dict[str, dict[str, Any]] = {
    "acm": {"layers": [1, 1, 1], "channels": [4, 8, 16, 32]},
    "alcnet": {"layers": [1, 1, 1], "channels": [4, 8, 16, 32]},
    "dnanet": {"channels": [4, 8, 16, 32, 64], "num_blocks": [1, 1, 1, 1]},
    "unet": {"width": 4, "depth": 2},
    "alclnet": {"channels": [8, 8, 16, 16, 16], "blocks": 1},
    "mlclnet": {"channels": [4, 4, 8], "blocks": 1},
    "msdanet": {"channels": [8, 12, 8, 8, 8], "side_channels": 4},
    "ggl": {"channels": [8, 8, 16, 16, 32]},
    "istdunet": {"layers": [1, 1, 1, 1], "channels": [8, 8, 16, 16], "stem_width": 8, "bottleneck_width": 64,
                 "attention_units": 16},
    "mshnet": {"channels": [4, 8, 16, 32, 64], "num_blocks": [1, 1, 1, 1]},
    "rdian": {"channels": 8, "num_blocks": [1, 1, 1, 1]},
    "sctransnet": {"base_channels": 4, "num_layers": 1, "patch_sizes": [8, 4, 2, 1], "img_size": 32},
    "uiunet": {"channels": [8, 8, 16, 16, 16, 16], "mid_channels": [4, 4, 8, 8, 8, 8],
               "decoder_mid_channels": [4, 4, 8, 8, 8]},
}
# Parameters a backbone keeps (so that released weights load strictly) but its forward never reads, by backbone; each
# of these backbones declares `has_unused_parameters` (irstd.training.ddp then turns on find_unused_parameters).
UNUSED_PARAMETERS: dict[str, Callable[[str], bool]] = {
    "alcnet": lambda key: key.startswith(("uplayer1.", "uplayer2.")),  # two decoder stages of the release
    "istdunet": lambda key: key.startswith("headDet."),  # the release's detection head
    "msdanet": lambda key: key.startswith("mlcl") and ".conv_res." in key,  # PAL's local-contrast 1x1 convs
    # position embeddings and the channel attention's `q{i}_attn{j}` scalars
    "sctransnet": lambda key: key.endswith("position_embeddings") or "_attn" in key.rsplit(".", 1)[-1],
}
TINY_SPEC = dict(num_train=6, num_test=3, height=64, width=64, seed=3)


# ---- backbones (tests/test_models_*.py, tests/test_backbone_contract.py) -------------------------------------------
BN_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread: on a shared CPU, extra threads working on small tensors (tiny networks, small windows)
    only wait for one another. A module opts in with `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def seeded_backbone(name: str, seed: int = 0, **kwargs: Any) -> nn.Module:
    """`build_backbone(name, **kwargs)` after `torch.manual_seed(seed)`."""
    torch.manual_seed(seed)
    return build_backbone(name, **kwargs)


def count_parameters(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def unused_parameters(name: str, net: nn.Module) -> set[str]:
    """The parameters of backbone `name` that its forward never reads (UNUSED_PARAMETERS)."""
    unused = UNUSED_PARAMETERS.get(name, lambda key: False)
    return {key for key, _ in net.named_parameters() if unused(key)}


def randomised_eval(net: nn.Module, seed: int = 0) -> nn.Module:
    """`net` in eval mode with random batch-norm running statistics and affine parameters, so that eval mode is
    not the identity normalisation."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)):
                if module.track_running_stats:
                    module.running_mean.normal_(0, 0.2, generator=generator)
                    module.running_var.uniform_(0.5, 2.0, generator=generator)
                if module.affine:
                    module.weight.uniform_(0.5, 1.5, generator=generator)
                    module.bias.normal_(0, 0.2, generator=generator)
    return net.eval()


def assert_rgb_weights_fold(name: str, small: dict[str, Any], collapse: Callable[[dict], dict], train: bool) -> None:
    """PAL's three-channel weights, folded by `collapse` into the one-channel network, give its output on a grey
    image copied to three channels (both networks in train or in eval mode). In float64: in float32, batch statistics
    of the few pixels at 1/16 resolution amplify the round-off of the summed first convolution to ~1e-3 in train
    mode."""
    pal = randomised_eval(seeded_backbone(name, in_channels=3, **small)).double()
    ours = seeded_backbone(name, **small).double()
    ours.load_state_dict(collapse(pal.state_dict()), strict=True)
    grey = torch.randn(2, 1, 32, 32, dtype=torch.float64)
    pal.train(train)
    ours.train(train)
    with torch.no_grad():
        torch.testing.assert_close(ours(grey), pal(grey.expand(-1, 3, -1, -1)), atol=1e-9, rtol=1e-9)


# reference state-dict layouts, written out key by key: key -> shape
Shapes = dict[str, tuple[int, ...]]


def trainable_parameters(shapes: Shapes) -> int:
    """The parameter count of a state-dict layout: every entry but the batch-norm buffers."""
    return sum(math.prod(shape) for key, shape in shapes.items() if not key.endswith(BN_BUFFERS))


def bn_shapes(prefix: str, channels: int, affine: bool = True) -> Shapes:
    names = ("weight", "bias", "running_mean", "running_var") if affine else ("running_mean", "running_var")
    return {f"{prefix}.{name}": (channels,) for name in names} | {f"{prefix}.num_batches_tracked": ()}


def conv_shapes(prefix: str, cin: int, cout: int, k: int, bias: bool = True, groups: int = 1) -> Shapes:
    return {f"{prefix}.weight": (cout, cin // groups, k, k)} | ({f"{prefix}.bias": (cout,)} if bias else {})


def res_cbam_stage_shapes(stage: str, cin: int, cout: int, blocks: int) -> Shapes:
    """A stage of residual CBAM blocks as DNA-Net and MSHNet release it (shortcut where the width changes)."""
    shapes: Shapes = {}
    for b in range(blocks):
        p, width_in = f"{stage}.{b}", cin if b == 0 else cout
        shapes |= conv_shapes(f"{p}.conv1", width_in, cout, 3) | bn_shapes(f"{p}.bn1", cout)
        shapes |= conv_shapes(f"{p}.conv2", cout, cout, 3) | bn_shapes(f"{p}.bn2", cout)
        if width_in != cout:
            shapes |= conv_shapes(f"{p}.shortcut.0", width_in, cout, 1) | bn_shapes(f"{p}.shortcut.1", cout)
        shapes |= conv_shapes(f"{p}.ca.fc1", cout, cout // 16, 1, bias=False)
        shapes |= conv_shapes(f"{p}.ca.fc2", cout // 16, cout, 1, bias=False)
        shapes |= conv_shapes(f"{p}.sa.conv1", 2, 1, 7, bias=False)
    return shapes


# ---- data ----------------------------------------------------------------------------------------------------------
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


# ---- training processes, killed and resumed (test_resume.py, test_faults.py, test_ddp.py) --------------------------
RESUME_EPOCHS = 10


def exact_resume_overrides(data_root: Path, run_dir: Path, max_epochs: int = RESUME_EPOCHS) -> list[str]:
    """LESPS on centroid points; rounds at epochs 1, 3, 5, 7, 9; the LR drops at epochs 4 and 8; deterministic
    kernels: a run that any resume must reproduce bit for bit."""
    return [*tiny_train_overrides(data_root, label="centroid", lesps="default"),
            "start=epoch", "start.Tepoch=1", "label_update.f=2", f"trainer.max_epochs={max_epochs}",
            "trainer.check_val_every_n_epoch=5", "trainer.deterministic=true", "model.scheduler.milestones=[4,8]",
            f"hydra.run.dir={run_dir}"]


def train_command(args: list[str]) -> list[str]:
    """`irstd-train ARGS` as a fresh Python process."""
    return [sys.executable, "-m", "irstd.cli.train", *args]


def clean_env(cwd: Path, **extra: str) -> dict[str, str]:
    """This environment without DDP rendezvous variables (a DDP test's rank must not leak into the next run)."""
    env = {**os.environ, "IRSTD_ROOT": str(cwd), **extra}
    for name in ("LOCAL_RANK", "WORLD_SIZE", "NODE_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    return env


def run_to_end(args: list[str], cwd: Path, timeout: int = 300, **env: str) -> subprocess.CompletedProcess:
    """Train in a fresh process; it must succeed."""
    result = subprocess.run(train_command(args), cwd=cwd, env=clean_env(cwd, **env), capture_output=True,
                            text=True, timeout=timeout)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return result


def load_checkpoint(path: Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=False)


def lesps_state(checkpoint: dict) -> dict:
    return next(state for key, state in checkpoint["callbacks"].items() if key.startswith("LESPSCallback"))


def _in_run(value: Any, run_dir: Path) -> Any:
    """A string with `run_dir` (as given or resolved) written as `<run>`; anything else as it is."""
    if not isinstance(value, str):
        return value
    return value.replace(str(run_dir.resolve()), "<run>").replace(str(run_dir), "<run>")


def checkpoint_differences(reference: Any, other: Any, reference_dir: Path, other_dir: Path,
                           key: str = "") -> list[str]:
    """Where two checkpoints (or parts of them) differ: every entry (weights, optimizer and scheduler state, loops,
    callbacks, RNG states, data-module state), tensors bit for bit; a path into either run directory is `<run>`."""
    reference, other = _in_run(reference, reference_dir), _in_run(other, other_dir)
    if isinstance(reference, dict) and isinstance(other, dict):
        reference = {_in_run(k, reference_dir): v for k, v in reference.items()}
        other = {_in_run(k, other_dir): v for k, v in other.items()}
        if set(reference) != set(other):
            return [f"{key}: keys {sorted(map(str, reference))} != {sorted(map(str, other))}"]
        return [d for k in reference for d in checkpoint_differences(reference[k], other[k], reference_dir, other_dir,
                                                                     f"{key}/{k}")]
    if isinstance(reference, (list, tuple)) and isinstance(other, (list, tuple)):
        if type(reference) is not type(other) or len(reference) != len(other):
            return [f"{key}: {type(reference).__name__} of {len(reference)} != {type(other).__name__} of {len(other)}"]
        return [d for i, (a, b) in enumerate(zip(reference, other, strict=True))
                for d in checkpoint_differences(a, b, reference_dir, other_dir, f"{key}[{i}]")]
    if isinstance(reference, torch.Tensor) and isinstance(other, torch.Tensor):
        same = reference.dtype == other.dtype and reference.shape == other.shape and torch.equal(reference, other)
        return [] if same else [f"{key}: tensors differ"]
    if isinstance(reference, np.ndarray) and isinstance(other, np.ndarray):
        same = reference.dtype == other.dtype and np.array_equal(reference, other)
        return [] if same else [f"{key}: arrays differ"]
    if type(reference) is not type(other) or reference != other:
        return [f"{key}: {reference!r} != {other!r}"]
    return []


def bank_differences(reference_dir: Path, other_dir: Path) -> list[str]:
    """Where the label banks of two run directories differ: current round, recorded rounds, the current round's
    images and labels (bit for bit)."""
    from irstd.data.label_bank import LabelBank

    reference, other = LabelBank(reference_dir / "label_bank"), LabelBank(other_dir / "label_bank")
    if (reference.current_round(), reference.rounds()) != (other.current_round(), other.rounds()):
        return [f"rounds {reference.current_round()} of {reference.rounds()} != {other.current_round()} of "
                f"{other.rounds()}"]
    expected, got = reference.read_round(), other.read_round()
    if list(expected) != list(got):
        return [f"images {list(expected)} != {list(got)}"]
    return [f"label of {name}" for name in expected
            if expected[name].dtype != got[name].dtype or not np.array_equal(expected[name], got[name])]


def assert_ends_alike(reference_dir: Path, final_dir: Path) -> None:
    """A resumed run ended where the uninterrupted one did: its last checkpoint equal in every entry, its label
    bank's current round (and the rounds it records) equal bit for bit."""
    reference = load_checkpoint(reference_dir / "checkpoints" / "last.ckpt")
    final = load_checkpoint(final_dir / "checkpoints" / "last.ckpt")
    differences = checkpoint_differences(reference, final, reference_dir, final_dir)
    differences += [f"label bank: {d}" for d in bank_differences(reference_dir, final_dir)]
    assert not differences, f"{final_dir} differs from {reference_dir}:\n" + "\n".join(differences[:20])


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
