import pytest
import torch
import torch.nn.functional as F

from irstd.ops.tiling import predict_tiled, tile_starts


def local_filter(image: torch.Tensor) -> torch.Tensor:
    """A small-receptive-field 'network': sigmoid of a 5x5 box filter (zero padding)."""
    return torch.sigmoid(F.avg_pool2d(image, 5, stride=1, padding=2, count_include_pad=True) * 4)


def test_tiles_cover_the_frame_with_the_requested_overlap():
    starts = tile_starts(1000, 256, 64)
    assert starts[0] == 0 and starts[-1] == 1000 - 256
    assert all(b - a <= 256 - 64 for a, b in zip(starts, starts[1:], strict=False))
    assert tile_starts(200, 256, 64) == [0]


def test_pointwise_predictor_is_reproduced_exactly():
    image = torch.randn(2, 1, 300, 520)
    tiled = predict_tiled(torch.sigmoid, image, tile=128, overlap=32)
    assert tiled.shape == image.shape
    assert torch.allclose(tiled, torch.sigmoid(image), atol=1e-6)


def test_tiled_matches_full_frame_away_from_tile_borders_and_finds_straddling_targets():
    image = torch.full((1, 1, 256, 384), -2.0)
    image[..., 126:131, 126:131] = 3.0  # a target across the first tile border (tile 128)
    full = local_filter(image)
    tiled = predict_tiled(local_filter, image, tile=128, overlap=32)
    # the receptive field is 5 px: with 32 px of overlap the feathered blend equals the full-frame output
    assert torch.allclose(tiled, full, atol=1e-5)
    from irstd.ops.components import find_components

    assert find_components(tiled > 0.5).counts.tolist() == [1]


def test_small_frames_go_through_in_one_pass():
    calls = []

    def predict(x):
        calls.append(tuple(x.shape))
        return torch.sigmoid(x)

    out = predict_tiled(predict, torch.zeros(1, 1, 100, 70), tile=128, overlap=16)
    assert calls == [(1, 1, 128, 96)] and out.shape == (1, 1, 100, 70)


@pytest.mark.parametrize(("tile", "overlap"), [(100, 10), (128, 128), (128, -1)])
def test_bad_tile_settings_are_rejected(tile, overlap):
    with pytest.raises(ValueError, match="tile"):
        predict_tiled(torch.sigmoid, torch.zeros(1, 1, 64, 64), tile=tile, overlap=overlap)


def test_model_predictor_tiles_only_large_frames():
    from irstd.inference.evaluation import model_predictor

    seen = []

    class Recorder(torch.nn.Module):
        def forward(self, image):
            seen.append(tuple(image.shape[-2:]))
            return image

    predict = model_predictor(Recorder(), torch.device("cpu"), tile_size=64, tile_overlap=16)
    predict({"image": torch.zeros(1, 1, 64, 64)})
    assert seen == [(64, 64)]
    seen.clear()
    out = predict({"image": torch.zeros(1, 1, 96, 160)})
    assert out.shape == (1, 1, 96, 160) and len(seen) > 1 and set(seen) == {(64, 64)}
