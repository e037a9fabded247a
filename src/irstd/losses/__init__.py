"""Training losses on logits; each sums over deep-supervision heads when a backbone returns several maps."""

from irstd.losses.bce_dice import BCEDiceLoss, bce_dice_loss
from irstd.losses.edge_bce import EdgeBCELoss, edge_bce_loss, label_edges
from irstd.losses.focal import FocalLoss, focal_loss
from irstd.losses.sls import SLSLoss, sls_loss
from irstd.losses.softiou import SoftIoULoss, soft_iou_loss

__all__ = [
    "BCEDiceLoss", "EdgeBCELoss", "FocalLoss", "SLSLoss", "SoftIoULoss",
    "bce_dice_loss", "edge_bce_loss", "focal_loss", "label_edges", "sls_loss", "soft_iou_loss",
]
