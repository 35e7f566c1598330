"""``example_log_cosh_dice``: the log-cosh of the soft Dice loss."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from segkit.errors import ConfigError
from torch import nn

__all__ = ["LogCoshDiceLoss", "log_cosh", "log_cosh_dice_loss"]


def log_cosh(x: torch.Tensor) -> torch.Tensor:
    """``log(cosh(x))`` without overflow: ``|x| + softplus(-2|x|) - log 2``."""
    x = x.abs()
    return x + F.softplus(-2.0 * x) - math.log(2.0)


def log_cosh_dice_loss(probs: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """``log(cosh(1 - (2 sum(p t) + smooth) / (sum(p) + sum(t) + smooth)))`` over the whole batch, in float32."""
    probs, target = probs.float().reshape(-1), target.float().reshape(-1)
    dice = (2.0 * (probs * target).sum() + smooth) / (probs.sum() + target.sum() + smooth)
    return log_cosh(1.0 - dice)


class LogCoshDiceLoss(nn.Module):
    """Soft Dice loss on ``sigmoid(logits)`` passed through ``log(cosh(.))``, pooled over the batch.

    ``log cosh`` is increasing on [0, 1], so the ranking of predictions is Dice's,
    but it is flat near a perfect prediction (gradient ``tanh(loss)``), which damps
    the late-training jitter of plain Dice. Values lie in ``[0, log cosh 1]``
    (about 0.434). All pixels of the batch are summed together, so a lesion-free
    image is not a separate 0/0.

    Args:
        smooth: added to the Dice numerator and denominator; keeps an empty batch at 0.

    Shape:
        - logits: ``(N, C, H, W)`` any float dtype (computed in float32).
        - target: ``(N, C, H, W)`` float in {0, 1}.
        - Output: scalar.
    """

    def __init__(self, smooth: float = 1.0) -> None:
        super().__init__()
        if smooth < 0:
            raise ConfigError(f"example_log_cosh_dice: smooth must be at least 0, got {smooth}.")
        self.smooth = smooth

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return log_cosh_dice_loss(torch.sigmoid(logits.float()), target, self.smooth)
