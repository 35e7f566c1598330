"""segmentation-models-pytorch losses on logits, in binary (default), multiclass or multilabel mode.

The factories return smp's own loss modules (not rewrites), wrapped so that they check the
``(logits, target)`` pair against the mode, compute in float32 (safe under autocast) and get the
target in the layout smp wants: smp's multiclass mode takes a long label map ``(N, H, W)``, made
here from segkit's ``(N, 1, H, W)`` float label values. See :mod:`segkit_builtins.losses.modes`.

Things smp does that are worth knowing in multiclass/multilabel mode:

- Dice, Jaccard, Tversky: one score per class over the whole batch, then the mean over *all* classes
  (the background channel 0 included). A class absent from the batch's target gets loss 0 but still
  counts in the mean (diluting the others), and its own false positives cost nothing: predicting it
  is penalised only through the softmax taking probability from the other classes (multiclass), not
  at all in multilabel mode. Tversky's ``gamma`` is applied to that mean, not per class.
- Focal, multiclass: a one-vs-rest *sigmoid* focal loss on each channel's raw logit (``label == c``
  against ``sigmoid(logit_c)``), averaged over the classes, not a softmax focal loss.
- Lovasz, multiclass: Lovasz-softmax averaged over the classes present in the target; multilabel:
  one Lovasz hinge over all channels pooled together (not per label).
"""

from __future__ import annotations

import segmentation_models_pytorch as smp
import torch
from torch import nn

from segkit_builtins.losses.modes import check_mode, check_target, class_indices, float32_region

__all__ = ["Float32Loss", "jaccard", "focal", "tversky", "lovasz", "smp_dice"]


class Float32Loss(nn.Module):
    """Runs ``loss`` on float32 logits and a target converted for smp's ``mode``.

    Checks the pair against ``mode`` first (``ValueError`` when it does not fit), then calls ``loss``
    with autocast off: binary and multilabel get the target as float32, multiclass as the long label
    map ``target[:, 0]``.

    Args:
        loss: the smp loss module, built in the same ``mode``.
        mode: ``"binary"`` (default), ``"multiclass"`` or ``"multilabel"``.

    Shape:
        - logits: ``(N, 1, H, W)`` binary, ``(N, C, H, W)`` multiclass, ``(N, K, H, W)`` multilabel;
          any float dtype.
        - target: ``(N, 1, H, W)`` float in {0, 1} binary, ``(N, 1, H, W)`` float label values
          ``0..C-1`` multiclass, ``(N, K, H, W)`` float in {0, 1} multilabel.
        - Output: scalar.
    """

    def __init__(self, loss: nn.Module, mode: str = "binary") -> None:
        super().__init__()
        self.loss = loss
        self.mode = check_mode(mode)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        check_target(logits, target, self.mode)
        converted = class_indices(target) if self.mode == "multiclass" else target.float()
        with float32_region(logits):
            return self.loss(logits.float(), converted)


def jaccard(smooth: float = 0.0, log_loss: bool = False, eps: float = 1e-7, mode: str = "binary") -> Float32Loss:
    """smp ``JaccardLoss`` (soft IoU) on logits, pooled over the batch; binary mode by default.

    Note that smp returns 0 for a batch whose targets are all empty; in multiclass/multilabel mode
    it averages ``1 - IoU`` over all classes (background included), counting 0 for classes absent
    from the batch.

    Args:
        smooth: added to numerator and denominator.
        log_loss: use ``-log(IoU)`` instead of ``1 - IoU``.
        eps: keeps the denominator away from 0.
        mode: ``"binary"``, ``"multiclass"`` (softmax over C) or ``"multilabel"`` (sigmoid per channel).
    """
    check_mode(mode)
    return Float32Loss(
        smp.losses.JaccardLoss(mode, from_logits=True, smooth=smooth, log_loss=log_loss, eps=eps), mode
    )


def focal(
    alpha: float | None = None,
    gamma: float = 2.0,
    normalized: bool = False,
    reduced_threshold: float | None = None,
    mode: str = "binary",
) -> Float32Loss:
    """smp ``FocalLoss`` on logits, averaged over pixels; binary mode by default.

    In multiclass mode smp computes a one-vs-rest sigmoid focal loss per channel (``label == c``
    against ``sigmoid(logit_c)``, not a softmax) and averages it over the classes; in multilabel
    mode the same per channel.

    Args:
        alpha: weight of the positive class in [0, 1]; ``None`` for no class weighting.
        gamma: focusing power; larger values down-weight easy pixels more.
        normalized: normalize by the sum of the focal terms (Focal Loss for detection).
        reduced_threshold: switch to the reduced focal loss below this probability.
        mode: ``"binary"``, ``"multiclass"`` or ``"multilabel"``.
    """
    check_mode(mode)
    return Float32Loss(
        smp.losses.FocalLoss(
            mode, alpha=alpha, gamma=gamma, normalized=normalized, reduced_threshold=reduced_threshold
        ),
        mode,
    )


def tversky(
    alpha: float = 0.5,
    beta: float = 0.5,
    gamma: float = 1.0,
    smooth: float = 0.0,
    log_loss: bool = False,
    mode: str = "binary",
) -> Float32Loss:
    """smp ``TverskyLoss`` on logits; ``alpha = beta = 0.5`` is the soft Dice loss. Binary mode by default.

    In multiclass/multilabel mode: the mean over all classes of ``1 - Tversky_c`` (0 for classes
    absent from the batch), raised to ``gamma``.

    Args:
        alpha: weight of false positives.
        beta: weight of false negatives (raise it to favour recall).
        gamma: focal exponent applied to the loss (Focal Tversky for ``gamma > 1``).
        smooth: added to numerator and denominator.
        log_loss: use ``-log(score)`` instead of ``1 - score``.
        mode: ``"binary"``, ``"multiclass"`` (softmax over C) or ``"multilabel"`` (sigmoid per channel).
    """
    check_mode(mode)
    return Float32Loss(
        smp.losses.TverskyLoss(
            mode, from_logits=True, alpha=alpha, beta=beta, gamma=gamma, smooth=smooth, log_loss=log_loss
        ),
        mode,
    )


def lovasz(per_image: bool = False, mode: str = "binary") -> Float32Loss:
    """smp ``LovaszLoss`` on logits: Lovasz hinge (binary, the default; multilabel) or Lovasz-softmax.

    Multiclass: Lovasz-softmax averaged over the classes present in the target. Multilabel: smp
    pools all channels into one Lovasz hinge (not one per label).

    Args:
        per_image: average the loss over images instead of computing it on the whole batch.
        mode: ``"binary"``, ``"multiclass"`` or ``"multilabel"``.
    """
    check_mode(mode)
    return Float32Loss(smp.losses.LovaszLoss(mode, per_image=per_image, from_logits=True), mode)


def smp_dice(smooth: float = 0.0, log_loss: bool = False, eps: float = 1e-7, mode: str = "binary") -> Float32Loss:
    """smp ``DiceLoss`` (soft Dice) on logits, pooled over the batch; binary mode by default.

    One Dice per class over the whole batch, ``1 - Dice`` averaged over all classes (background
    included in multiclass mode). smp sets the loss of a class absent from the batch's target to 0
    (it still counts in the mean), so an all-empty binary batch gives 0 whatever is predicted.

    Args:
        smooth: added to numerator and denominator.
        log_loss: use ``-log(Dice)`` instead of ``1 - Dice``.
        eps: keeps the denominator away from 0.
        mode: ``"binary"``, ``"multiclass"`` (softmax over C) or ``"multilabel"`` (sigmoid per channel).
    """
    check_mode(mode)
    return Float32Loss(smp.losses.DiceLoss(mode, from_logits=True, smooth=smooth, log_loss=log_loss, eps=eps), mode)
