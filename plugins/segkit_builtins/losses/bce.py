"""Binary cross-entropy on logits."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["BCELoss", "bce_with_logits"]


def bce_with_logits(
    logits: torch.Tensor, target: torch.Tensor, pos_weight: float | None = None
) -> torch.Tensor:
    """Mean binary cross-entropy of ``sigmoid(logits)`` against ``target``, in float32."""
    logits, target = logits.float(), target.float()
    weight = None if pos_weight is None else logits.new_tensor(pos_weight)
    return F.binary_cross_entropy_with_logits(logits, target, pos_weight=weight)


class BCELoss(nn.Module):
    """Binary cross-entropy on logits (the stable log-sigmoid form), averaged over all pixels.

    Args:
        pos_weight: weight of the lesion (positive) pixels' term; above 1 raises
            recall on small lesions. ``None`` weighs both classes equally.

    Shape:
        - logits: ``(N, C, H, W)`` any float dtype (computed in float32).
        - target: ``(N, C, H, W)`` float in {0, 1}.
        - Output: scalar.
    """

    def __init__(self, pos_weight: float | None = None) -> None:
        super().__init__()
        self.pos_weight = pos_weight

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return bce_with_logits(logits, target, self.pos_weight)
