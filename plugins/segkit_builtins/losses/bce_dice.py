"""The LGG tutorial's BCE + soft Dice loss."""

from __future__ import annotations

import torch
from torch import nn

from segkit_builtins.losses.bce import bce_with_logits
from segkit_builtins.losses.dice import soft_dice_loss

__all__ = ["BCEDiceLoss"]


class BCEDiceLoss(nn.Module):
    """``bce_weight * BCE + dice_weight * soft Dice``; the tutorial adds them with weights 1.

    Args:
        bce_weight: weight of the binary cross-entropy term.
        dice_weight: weight of the soft Dice term.
        smooth: the soft Dice smoothing term.
        per_image: the Dice term per image, averaged, instead of pooled over the batch
            (:class:`~segkit_builtins.losses.dice.SoftDiceLoss`).

    Shape:
        - logits: ``(N, C, H, W)`` any float dtype (computed in float32).
        - target: ``(N, C, H, W)`` float in {0, 1}.
        - Output: scalar.
    """

    def __init__(self, bce_weight: float = 1.0, dice_weight: float = 1.0, smooth: float = 1.0,
                 per_image: bool = False) -> None:
        super().__init__()
        self.bce_weight = bce_weight
        self.dice_weight = dice_weight
        self.smooth = smooth
        self.per_image = per_image

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits, target = logits.float(), target.float()
        bce = bce_with_logits(logits, target)
        dice = soft_dice_loss(torch.sigmoid(logits), target, self.smooth, self.per_image)
        return self.bce_weight * bce + self.dice_weight * dice
