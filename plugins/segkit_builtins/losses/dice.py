"""The LGG tutorial's soft Dice loss."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["SoftDiceLoss", "soft_dice_loss"]


def soft_dice_loss(probs: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """``1 - (2 sum(p t) + smooth) / (sum(p) + sum(t) + smooth)`` over the whole batch, flattened."""
    probs, target = probs.float().reshape(-1), target.float().reshape(-1)
    intersection = (probs * target).sum()
    return 1.0 - (2.0 * intersection + smooth) / (probs.sum() + target.sum() + smooth)


class SoftDiceLoss(nn.Module):
    """The tutorial's soft Dice loss on ``sigmoid(logits)``, pooled over the batch.

    All pixels of the batch are summed together (one Dice for the batch, as in the
    tutorial), so empty slices do not each count as a separate 0/0.

    Args:
        smooth: added to numerator and denominator; keeps an all-empty batch at 0 loss.

    Shape:
        - logits: ``(N, C, H, W)`` any float dtype (computed in float32).
        - target: ``(N, C, H, W)`` float in {0, 1}.
        - Output: scalar in [0, 1].
    """

    def __init__(self, smooth: float = 1.0) -> None:
        super().__init__()
        self.smooth = smooth

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return soft_dice_loss(torch.sigmoid(logits.float()), target, self.smooth)
