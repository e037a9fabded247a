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


def test_dihedral_covers_all_eight_and_is_identical_for_both():
    image = torch.arange(9, dtype=torch.float32).view(1, 3, 3)
    generator = torch.Generator().manual_seed(0)
    seen = set()
    for _ in range(200):
        out_image, out_label = random_dihedral(image, image + 100, generator)
        assert torch.equal(out_label, out_image + 100)
        seen.add(tuple(out_image.flatten().tolist()))
    assert len(seen) == 8
