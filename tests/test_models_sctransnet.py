"""SCTransNet (Yuan et al., TGRS 2024) as released by xdFai/SCTransNet: architecture, sides, behaviour.

Equality of outputs with the authors' code is checked by scripts/check_reference.py (adapter
scripts/reference/sctransnet.py); here the released configuration's size and key layout are pinned.
"""

import pytest
import torch
from omegaconf import OmegaConf

from conftest import BN_BUFFERS, count_parameters, seeded_backbone, unused_parameters
from irstd.config import config_root
from irstd.models import build_backbone

# SCTransNet(get_CTranS_config(), img_size=256, deepsuper=True) of the release, counted
REFERENCE_PARAMETERS = 11_325_939
# parameters its forward never touches: four position embeddings of 256 tokens (16 x 16 at img_size 256) of
# widths 32 + 64 + 128 + 256, and 16 scalars `q{i}_attn{j}` in each of the 4 transformer blocks
UNUSED_PARAMETERS = 256 * (32 + 64 + 128 + 256) + 4 * 16
SMALL = {"base_channels": 4, "num_layers": 1, "img_size": 32}


@pytest.fixture(scope="module")
def released() -> torch.nn.Module:
    return seeded_backbone("sctransnet")


@pytest.fixture(scope="module")
def small() -> torch.nn.Module:
    return seeded_backbone("sctransnet", **SMALL)


def test_parameter_count_and_keys_match_the_release(released):
    assert count_parameters(released) == REFERENCE_PARAMETERS
    unused = unused_parameters("sctransnet", released)
    assert sum(p.numel() for key, p in released.named_parameters() if key in unused) == UNUSED_PARAMETERS
    assert len(unused) == 4 + 4 * 16
    shapes = {key: tuple(value.shape) for key, value in released.state_dict().items()}
    expected = {
        "inc.0.conv1.weight": (32, 1, 3, 3), "inc.0.shortcut.0.weight": (32, 1, 1, 1),
        "down_encoder4.0.conv2.weight": (256, 256, 3, 3),
        "mtc.embeddings_1.patch_embeddings.weight": (32, 32, 16, 16),
        "mtc.embeddings_4.patch_embeddings.weight": (256, 256, 2, 2),
        "mtc.embeddings_1.position_embeddings": (1, 256, 32), "mtc.embeddings_4.position_embeddings": (1, 256, 256),
        "mtc.encoder.layer.3.attn_norm.body.weight": (480,),
        "mtc.encoder.layer.3.channel_attn.q4_attn4": (1,),
        "mtc.encoder.layer.0.channel_attn.q1.weight": (32, 2, 3, 3),
        "mtc.encoder.layer.0.channel_attn.k.weight": (480, 1, 3, 3),
        "mtc.encoder.layer.0.channel_attn.mheadv.weight": (480, 480, 1, 1),
        "mtc.encoder.layer.0.ffn4.project_in.weight": (1360, 256, 1, 1),
        "mtc.encoder.layer.0.ffn1.dwconv5x5.weight": (85, 1, 5, 5),
        "mtc.encoder.layer.0.ffn2.eca.conv.0.weight": (1, 1, 3),
        "mtc.encoder.encoder_norm4.body.bias": (256,), "mtc.reconstruct_3.norm.running_var": (128,),
        "up_decoder4.coatt.mlp_g.1.weight": (256, 256), "up_decoder4.nConvs.0.conv.weight": (128, 512, 3, 3),
        "up_decoder1.nConvs.1.norm.weight": (32,), "outc.weight": (1, 32, 1, 1),
        "gt_conv5.0.weight": (1, 256, 1, 1), "gt_conv2.0.weight": (1, 32, 1, 1), "outconv.weight": (1, 5, 1, 1),
    }
    assert {key: shapes.get(key) for key in expected} == expected
    assert "mtc.encoder.layer.4.attn_norm.body.weight" not in shapes
    assert "down_encoder4.0.shortcut.0.weight" not in shapes  # 256 -> 256: identity shortcut
    assert len([key for key in shapes if not key.endswith(BN_BUFFERS)]) == 432


def test_shipped_config_builds_the_release():
    config = OmegaConf.load(config_root() / "model" / "sctransnet.yaml")
    assert count_parameters(build_backbone(**OmegaConf.to_container(config.backbone))) == REFERENCE_PARAMETERS


def test_eval_returns_the_final_map_which_training_lists_last(small):
    image = torch.randn(1, 1, 32, 64)
    small.eval()
    with torch.no_grad():
        logits = small(image)
        # the same network, batch norm frozen, in training mode: its last map is eval's
        for module in small.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.eval()
        small.training = True
        listed = small(image)
        small.eval()
    assert isinstance(logits, torch.Tensor) and logits.shape == (1, 1, 32, 64)
    assert isinstance(listed, list) and len(listed) == 6
    torch.testing.assert_close(listed[-1], logits)


def test_img_size_shapes_only_the_unused_position_embeddings():
    torch.manual_seed(0)
    at_256 = build_backbone("sctransnet", base_channels=4, num_layers=1)
    at_64 = build_backbone("sctransnet", base_channels=4, num_layers=1, img_size=64)
    assert at_256.mtc.embeddings_2.position_embeddings.shape == (1, 256, 8)
    assert at_64.mtc.embeddings_2.position_embeddings.shape == (1, 16, 8)
    state = {key: value for key, value in at_256.state_dict().items() if not key.endswith("position_embeddings")}
    missing, unexpected = at_64.load_state_dict(state, strict=False)
    assert sorted(missing) == [f"mtc.embeddings_{i}.position_embeddings" for i in range(1, 5)] and not unexpected
    image = torch.randn(1, 1, 96, 48)  # neither network's img_size
    with torch.no_grad():
        torch.testing.assert_close(at_64.eval()(image), at_256.eval()(image))


def test_logit_layers_and_no_deep_supervision():
    net = build_backbone("sctransnet", deep_supervision=False, **SMALL)
    assert net.logit_layers() == [net.outc]
    assert not any(key.startswith(("gt_conv", "outconv")) for key in net.state_dict())
    with torch.no_grad():
        logits = net.train()(torch.randn(2, 1, 32, 32))
    assert isinstance(logits, torch.Tensor) and logits.shape == (2, 1, 32, 32)
    deep = build_backbone("sctransnet", **SMALL)
    assert len(deep.logit_layers()) == 6 and all(layer.out_channels == 1 for layer in deep.logit_layers())


def test_sides_must_be_multiples_of_the_side_multiple(small):
    assert small.side_multiple == 16
    with pytest.raises(ValueError, match="multiples of 16.*40 x 32"):
        small(torch.randn(1, 1, 40, 32))
    coarse = build_backbone("sctransnet", base_channels=4, num_layers=1, patch_sizes=[32, 16, 8, 4], img_size=64)
    assert coarse.side_multiple == 32
    with pytest.raises(ValueError, match="multiples of 32"):
        coarse(torch.randn(1, 1, 48, 64))
    with torch.no_grad():
        assert coarse.eval()(torch.randn(1, 1, 64, 96)).shape == (1, 1, 64, 96)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"patch_sizes": [16, 8, 4, 4]}, "one token grid"),
    ({"patch_sizes": [16, 8, 4]}, "4 positive patch sizes"),
    ({"base_channels": 5}, "even base_channels"),
    ({"num_layers": 0}, "num_layers >= 1"),
    ({"img_size": 8}, "img_size >= 16"),
])
def test_rejects_a_bad_configuration(kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_backbone("sctransnet", **{**SMALL, **kwargs})
