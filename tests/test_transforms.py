import pytest
import torch

from irstd.data.transforms import random_crop, random_dihedral
from irstd.ops.padding import pad_bottom_right, padded_size


def test_padding_to_a_multiple_pads_bottom_right_only():
    x = torch.arange(35 * 70, dtype=torch.float32).view(1, 35, 70)
    padded = pad_bottom_right(x, padded_size(35, 32), padded_size(70, 32))
    assert padded.shape == (1, 64, 96)
    assert torch.equal(padded[:, :35, :70], x)
    assert padded[:, 35:, :].abs().sum() == 0 and padded[:, :, 70:].abs().sum() == 0
    assert padded_size(64, 32) == 64 and padded_size(1, 32) == 32
    with pytest.raises(ValueError, match="cannot pad"):
        pad_bottom_right(x, 30, 70)


def test_random_crop_applies_same_window():
    image = torch.arange(100 * 90, dtype=torch.float32).view(1, 100, 90)
    crop_image, crop_label = random_crop(image, image.clone() * 2, 32, torch.Generator().manual_seed(0))
    assert crop_image.shape == (1, 32, 32)
    assert torch.equal(crop_label, crop_image * 2)


def test_random_crop_zero_pads_small_images():
    image = torch.ones(1, 20, 50)
    crop_image, crop_label = random_crop(image, image.clone(), 32, torch.Generator().manual_seed(1))
    assert crop_image.shape == crop_label.shape == (1, 32, 32)
    assert crop_image[:, 20:, :].sum() == 0  # rows beyond the image are padding
    assert torch.equal(crop_image, crop_label)


def _two_targets(height: int = 200, width: int = 300) -> torch.Tensor:
    """A label with a 1-pixel target at the top-left corner and a 3 x 3 one at the bottom-right."""
    label = torch.zeros(1, height, width)
    label[:, 0, 0] = 1
    label[:, height - 3:, width - 3:] = 1
    return label


def test_positive_crops_hold_a_whole_target_and_visit_every_target():
    label = _two_targets()
    generator = torch.Generator().manual_seed(0)
    small_seen = large_seen = 0
    for _ in range(200):
        _, crop = random_crop(label.clone(), label, 64, generator, positive=1.0)
        small_seen += int(crop.sum() == 1)
        large_seen += int(crop.sum() == 9)  # the 3 x 3 target is never cut
        assert crop.sum() in (1, 9)
    # the components are drawn uniformly, whatever their size
    assert small_seen > 60 and large_seen > 60


def test_uniform_crops_miss_small_corner_targets():
    label = _two_targets()
    generator = torch.Generator().manual_seed(0)
    empty = sum(int(random_crop(label.clone(), label, 64, generator)[1].sum() == 0) for _ in range(200))
    assert empty > 150


def test_positive_fraction_and_empty_labels():
    label = _two_targets()
    generator = torch.Generator().manual_seed(0)
    empty = sum(int(random_crop(label.clone(), label, 64, generator, positive=0.5)[1].sum() == 0) for _ in range(400))
    assert 100 < empty < 300  # half the crops are uniform, and almost all of those are empty
    background = torch.zeros(1, 50, 70)
    image = torch.arange(50 * 70, dtype=torch.float32).view(1, 50, 70)
    crop_image, crop_label = random_crop(image, background, 32, torch.Generator().manual_seed(0), positive=1.0)
    assert crop_image.shape == (1, 32, 32) and crop_label.sum() == 0  # no target: a uniform window


def test_positive_crop_keeps_a_too_large_target_in_view():
    label = torch.zeros(1, 100, 100)
    label[:, 10:90, 20:30] = 1  # taller than the window
    for seed in range(20):
        _, crop = random_crop(label.clone(), label, 32, torch.Generator().manual_seed(seed), positive=1.0)
        assert crop.sum() > 0


def test_zero_positive_fraction_draws_the_same_windows_as_before():
    """`positive=0` must not consume random numbers: the uniform crops of released seeds stay the same."""
    image = torch.randn(1, 100, 90)
    label = _two_targets(100, 90)
    for seed in range(5):
        plain = random_crop(image, label, 32, torch.Generator().manual_seed(seed))
        zero = random_crop(image, label, 32, torch.Generator().manual_seed(seed), positive=0.0)
        generator = torch.Generator().manual_seed(seed)
        top = int(torch.randint(0, 100 - 32 + 1, (1,), generator=generator))
        left = int(torch.randint(0, 90 - 32 + 1, (1,), generator=generator))
        assert torch.equal(plain[0], image[..., top:top + 32, left:left + 32])
        assert torch.equal(zero[0], plain[0]) and torch.equal(zero[1], plain[1])


def test_dihedral_covers_all_eight_and_is_identical_for_both():
    image = torch.arange(9, dtype=torch.float32).view(1, 3, 3)
    generator = torch.Generator().manual_seed(0)
    seen = set()
    for _ in range(200):
        out_image, out_label = random_dihedral(image, image + 100, generator)
        assert torch.equal(out_label, out_image + 100)
        seen.add(tuple(out_image.flatten().tolist()))
    assert len(seen) == 8
