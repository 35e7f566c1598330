"""The LGG tutorial's soft Dice loss."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["SoftDiceLoss", "soft_dice_loss"]


def soft_dice_loss(probs: torch.Tensor, target: torch.Tensor, smooth: float = 1.0,
                   per_image: bool = False) -> torch.Tensor:
    """``1 - (2 sum(p t) + smooth) / (sum(p) + sum(t) + smooth)`` over the whole batch, flattened; with
    ``per_image``, one such loss per image (its channels together), averaged over the batch."""
    rows = probs.shape[0] if per_image else 1
    probs, target = probs.float().reshape(rows, -1), target.float().reshape(rows, -1)
    intersection = (probs * target).sum(dim=1)
    return (1.0 - (2.0 * intersection + smooth) / (probs.sum(dim=1) + target.sum(dim=1) + smooth)).mean()


class SoftDiceLoss(nn.Module):
    """The tutorial's soft Dice loss on ``sigmoid(logits)``, pooled over the batch.

    All pixels of the batch are summed together (one Dice for the batch, as in the
    tutorial), so empty slices do not each count as a separate 0/0.

    Args:
        smooth: added to numerator and denominator; keeps an all-empty batch at 0 loss.
        per_image: one Dice per image, averaged (MONAI's default; nnU-Net's ``batch_dice = False``), so a
            small object weighs as much as a large one, as in a mean Dice per image. An image with nothing
            to find then loses all of its Dice to a few false pixels: for sets whose images all hold the label.

    Shape:
        - logits: ``(N, C, H, W)`` any float dtype (computed in float32).
        - target: ``(N, C, H, W)`` float in {0, 1}.
        - Output: scalar in [0, 1].
    """

    def __init__(self, smooth: float = 1.0, per_image: bool = False) -> None:
        super().__init__()
        self.smooth = smooth
        self.per_image = per_image

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return soft_dice_loss(torch.sigmoid(logits.float()), target, self.smooth, self.per_image)
