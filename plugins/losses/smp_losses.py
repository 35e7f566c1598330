"""segmentation-models-pytorch losses in binary mode on logits.

The factories return smp's own loss modules (not rewrites), wrapped so that they
compute in float32 and are safe under autocast.
"""

from __future__ import annotations

import segmentation_models_pytorch as smp
import torch
from torch import nn

__all__ = ["Float32Loss", "jaccard", "focal", "tversky", "lovasz"]


class Float32Loss(nn.Module):
    """Runs ``loss`` on float32 logits and target.

    Shape:
        - logits: ``(N, C, H, W)`` any float dtype.
        - target: ``(N, C, H, W)`` float in {0, 1}.
        - Output: scalar.
    """

    def __init__(self, loss: nn.Module) -> None:
        super().__init__()
        self.loss = loss

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.loss(logits.float(), target.float())


def jaccard(smooth: float = 0.0, log_loss: bool = False, eps: float = 1e-7) -> Float32Loss:
    """smp ``JaccardLoss`` (soft IoU), binary mode on logits, pooled over the batch.

    Note that smp returns 0 for a batch whose targets are all empty.

    Args:
        smooth: added to numerator and denominator.
        log_loss: use ``-log(IoU)`` instead of ``1 - IoU``.
        eps: keeps the denominator away from 0.
    """
    return Float32Loss(smp.losses.JaccardLoss("binary", from_logits=True, smooth=smooth, log_loss=log_loss, eps=eps))


def focal(
    alpha: float | None = None, gamma: float = 2.0, normalized: bool = False, reduced_threshold: float | None = None
) -> Float32Loss:
    """smp ``FocalLoss``, binary mode on logits, averaged over pixels.

    Args:
        alpha: weight of the positive class in [0, 1]; ``None`` for no class weighting.
        gamma: focusing power; larger values down-weight easy pixels more.
        normalized: normalize by the sum of the focal terms (Focal Loss for detection).
        reduced_threshold: switch to the reduced focal loss below this probability.
    """
    return Float32Loss(
        smp.losses.FocalLoss(
            "binary", alpha=alpha, gamma=gamma, normalized=normalized, reduced_threshold=reduced_threshold
        )
    )


def tversky(
    alpha: float = 0.5, beta: float = 0.5, gamma: float = 1.0, smooth: float = 0.0, log_loss: bool = False
) -> Float32Loss:
    """smp ``TverskyLoss``, binary mode on logits; ``alpha = beta = 0.5`` is the soft Dice loss.

    Args:
        alpha: weight of false positives.
        beta: weight of false negatives (raise it to favour recall).
        gamma: focal exponent applied to the loss (Focal Tversky for ``gamma > 1``).
        smooth: added to numerator and denominator.
        log_loss: use ``-log(score)`` instead of ``1 - score``.
    """
    return Float32Loss(
        smp.losses.TverskyLoss(
            "binary", from_logits=True, alpha=alpha, beta=beta, gamma=gamma, smooth=smooth, log_loss=log_loss
        )
    )


def lovasz(per_image: bool = False) -> Float32Loss:
    """smp ``LovaszLoss`` (Lovasz hinge), binary mode on logits.

    Args:
        per_image: average the loss over images instead of computing it on the whole batch.
    """
    return Float32Loss(smp.losses.LovaszLoss("binary", per_image=per_image, from_logits=True))
