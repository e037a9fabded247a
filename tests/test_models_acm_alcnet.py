"""ACM and ALCNet as released with LESPS: architecture, strict loading of the released weights, behaviour."""

from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from conftest import BN_BUFFERS, SIRST, count_parameters, requires_sirst, unused_parameters
from irstd.config import config_root
from irstd.models import build_backbone
from irstd.models.weights import load_official_weights

CHECKPOINTS = Path(__file__).resolve().parents[2] / "shared" / "checkpoints"
requires_checkpoints = pytest.mark.skipif(not CHECKPOINTS.is_dir(),
                                          reason=f"official LESPS checkpoints not found at {CHECKPOINTS}")

# backbone name -> (released checkpoint, parameter count of the reference implementation)
RELEASES = {"acm": ("ACM_LESPS_centroid.pth.tar", 397_823), "alcnet": ("ALCNet_LESPS_centroid.pth.tar", 519_889)}

# SIRST3 statistics, as in the official evaluation
SIRST3_MEAN, SIRST3_STD = 95.010, 41.511


def released_state(name: str) -> dict[str, torch.Tensor]:
    checkpoint = torch.load(CHECKPOINTS / RELEASES[name][0], map_location="cpu", weights_only=False)
    return checkpoint["state_dict"]


@pytest.mark.parametrize("name", sorted(RELEASES))
def test_parameter_count_matches_the_reference(name):
    assert count_parameters(build_backbone(name)) == RELEASES[name][1]


@requires_checkpoints
@pytest.mark.parametrize("name", sorted(RELEASES))
def test_parameter_count_matches_the_released_tensor_shapes(name):
    from_file = sum(t.numel() for key, t in released_state(name).items() if not key.endswith(BN_BUFFERS))
    assert from_file == RELEASES[name][1] == count_parameters(build_backbone(name))


def test_alcnet_keeps_its_two_unused_stages():
    # the two decoder stages its forward never calls (kept for strict loading)
    net = build_backbone("alcnet")
    unused = unused_parameters("alcnet", net)
    assert sum(p.numel() for key, p in net.named_parameters() if key in unused) == 92_928


@pytest.mark.parametrize("name", sorted(RELEASES))
def test_shipped_model_config_builds_the_released_network(name):
    config = OmegaConf.load(config_root() / "model" / f"{name}.yaml")
    assert count_parameters(build_backbone(**OmegaConf.to_container(config.backbone))) == RELEASES[name][1]


@pytest.mark.parametrize("name", sorted(RELEASES))
def test_train_and_eval_modes_both_give_finite_logits(name):
    torch.manual_seed(0)
    net = build_backbone(name)
    image = torch.randn(2, 1, 64, 96)
    with torch.no_grad():
        train_logits = net.train()(image)
        eval_logits = net.eval()(image)
    for logits in (train_logits, eval_logits):
        assert logits.shape == (2, 1, 64, 96) and torch.isfinite(logits).all()
    # batch statistics and dropout vs running statistics
    assert not torch.allclose(train_logits, eval_logits)


@pytest.mark.parametrize("name", sorted(RELEASES))
def test_bad_widths_are_rejected(name):
    with pytest.raises(ValueError, match="layers"):
        build_backbone(name, layers=[2, 2])
    with pytest.raises(ValueError, match="channels"):
        build_backbone(name, channels=[8, 32, 32, 64])


@requires_checkpoints
@pytest.mark.parametrize("name", sorted(RELEASES))
def test_released_weights_load_strictly(name):
    net = build_backbone(name)
    load_official_weights(net, CHECKPOINTS / RELEASES[name][0])
    released = released_state(name)
    for key, value in net.state_dict().items():
        assert torch.equal(value, released[f"model.{key}"]), key


@requires_checkpoints
def test_extra_missing_or_mis_shaped_keys_are_errors_naming_them(tmp_path):
    state = dict(released_state("acm"))
    path = tmp_path / "edited.pth.tar"

    torch.save({"state_dict": {**state, "model.extra.weight": torch.zeros(1)}}, path)
    with pytest.raises(ValueError, match=r"unexpected keys \(1\): extra\.weight") as error:
        load_official_weights(build_backbone("acm"), path)
    assert str(path) in str(error.value)

    torch.save({"state_dict": {k: v for k, v in state.items() if k != "model.head.block.4.bias"}}, path)
    with pytest.raises(ValueError, match=r"missing keys \(1\): head\.block\.4\.bias"):
        load_official_weights(build_backbone("acm"), path)

    torch.save({"state_dict": {**state, "model.head.block.4.bias": torch.zeros(2)}}, path)
    with pytest.raises(ValueError, match=r"shape mismatches \(1\): head\.block\.4\.bias: file \(2,\) vs model \(1,\)"):
        load_official_weights(build_backbone("acm"), path)

    with pytest.raises(ValueError, match="missing keys"):  # the other network's weights
        load_official_weights(build_backbone("acm"), CHECKPOINTS / RELEASES["alcnet"][0])


def load_sirst_test_image(stem: str) -> tuple[torch.Tensor, np.ndarray]:
    """Image as the official evaluation feeds it (normalised, zero-padded bottom/right to the next
    multiple of 32, at least one row/column), and its binary ground truth."""
    image = np.asarray(Image.open(SIRST / "images" / f"{stem}.png").convert("I"), dtype=np.float32)
    image = (image - SIRST3_MEAN) / SIRST3_STD
    height, width = image.shape
    image = np.pad(image, ((0, (height // 32 + 1) * 32 - height), (0, (width // 32 + 1) * 32 - width)))
    mask = np.asarray(Image.open(SIRST / "masks" / f"{stem}.png")) > 0
    assert mask.shape == (height, width)
    return torch.from_numpy(image)[None, None], mask


@requires_checkpoints
@requires_sirst
@pytest.mark.parametrize("name", sorted(RELEASES))
def test_released_weights_detect_a_real_target(name):
    """Guards the forward itself: a wrong layer order still loads strictly but misses the target."""
    net = build_backbone(name).eval()
    load_official_weights(net, CHECKPOINTS / RELEASES[name][0])
    image, mask = load_sirst_test_image("Misc_338")
    with torch.no_grad():
        logits = net(image)
    assert logits.min() < 0  # logits, not probabilities: the backbone has no final sigmoid
    height, width = mask.shape
    detected = (torch.sigmoid(logits)[0, 0, :height, :width] > 0.5).numpy()
    assert detected[mask].all()  # the whole 6-pixel target is found
    # and nothing beyond a few pixels around it (trained on centroid points, the blobs come out wider)
    rows, cols = np.nonzero(detected)
    target_rows, target_cols = np.nonzero(mask)
    assert target_rows.min() - 4 <= rows.min() and rows.max() <= target_rows.max() + 4
    assert target_cols.min() - 4 <= cols.min() and cols.max() <= target_cols.max() + 4
