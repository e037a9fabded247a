import torch

from irstd.metrics import DatasetIoU, NormalizedIoU, PixelAccuracy


def batch(pred_boxes, true_boxes, size=(8, 8)):
    probs = torch.zeros(len(pred_boxes), 1, *size)
    masks = torch.zeros_like(probs)
    for i, (p, t) in enumerate(zip(pred_boxes, true_boxes, strict=True)):
        if p:
            probs[i, 0, p[0]:p[1], p[2]:p[3]] = 0.9
        if t:
            masks[i, 0, t[0]:t[1], t[2]:t[3]] = 1
    return probs, masks


def test_dataset_iou_sums_before_dividing():
    # image 0: 4 px predicted, 2 of them on a 2 px target -> I=2, U=4; image 1: I=0, U=1
    probs, masks = batch([(0, 2, 0, 2), None], [(0, 1, 0, 2), (5, 6, 5, 6)])
    iou, niou = DatasetIoU(), NormalizedIoU()
    iou.update(probs, masks)
    niou.update(probs, masks)
    assert torch.isclose(iou.compute(), torch.tensor(2 / 5, dtype=torch.float64))
    assert torch.isclose(niou.compute(), torch.tensor((2 / 4 + 0) / 2, dtype=torch.float64))


def test_padding_is_ignored():
    probs, masks = batch([(0, 2, 0, 2)], [(0, 2, 0, 2)])
    probs[0, 0, 6:, :] = 0.9  # false positives inside the padding only
    masks[0, 0, 7, 7] = 1
    valid_hw = torch.tensor([[6, 8]])
    iou, acc = DatasetIoU(), PixelAccuracy()
    iou.update(probs, masks, valid_hw)
    acc.update(probs, masks, valid_hw)
    assert iou.compute() == 1.0 and acc.compute() == 1.0
    unmasked = DatasetIoU()
    unmasked.update(probs, masks)
    assert unmasked.compute() < 1.0


def test_threshold_is_strict():
    probs = torch.full((1, 1, 2, 2), 0.5)
    masks = torch.ones(1, 1, 2, 2)
    iou = DatasetIoU(threshold=0.5)
    iou.update(probs, masks)
    assert iou.compute() == 0.0


def test_pixel_accuracy_counts_target_pixels():
    probs, masks = batch([(0, 1, 0, 1)], [(0, 2, 0, 2)])
    acc = PixelAccuracy()
    acc.update(probs, masks)
    assert torch.isclose(acc.compute(), torch.tensor(0.25, dtype=torch.float64))
