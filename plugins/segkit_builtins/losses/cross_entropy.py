"""Cross-entropy and nnU-Net's Dice + cross-entropy, in binary, multiclass and multilabel mode.

See :mod:`segkit_builtins.losses.modes` for the tensor contract of each mode.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from segkit_builtins.losses.modes import check_mode, check_target, class_indices, float32_region

__all__ = ["CrossEntropyLoss", "CEDiceLoss", "cross_entropy", "soft_dice_per_class"]


def cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    mode: str,
    weight: torch.Tensor | None = None,
    pos_weight: float | None = None,
) -> torch.Tensor:
    """Mean cross-entropy over all pixels (and channels, for the sigmoid modes), in float32.

    ``multiclass``: ``F.cross_entropy`` of the softmax over channels against the label map, with the
    optional per-class ``weight`` (``(C,)``; the mean is then weighted, as torch does).
    ``binary``/``multilabel``: ``F.binary_cross_entropy_with_logits`` per element, with ``pos_weight``
    weighing the positive pixels. ``logits`` and ``target`` must already fit ``mode``.
    """
    logits = logits.float()
    if mode == "multiclass":
        if weight is not None and weight.numel() != logits.shape[1]:
            raise ValueError(
                f"weight has {weight.numel()} entries but the logits have C={logits.shape[1]} classes; "
                "give one weight per class, background (class 0) first"
            )
        weight = None if weight is None else weight.to(device=logits.device, dtype=torch.float32)
        return F.cross_entropy(logits, class_indices(target), weight=weight)
    pos = None if pos_weight is None else logits.new_tensor(pos_weight)
    return F.binary_cross_entropy_with_logits(logits, target.float(), pos_weight=pos)


def soft_dice_per_class(
    logits: torch.Tensor,
    target: torch.Tensor,
    mode: str,
    smooth: float,
    batch_dice: bool,
    include_background: bool,
) -> torch.Tensor:
    """Soft Dice scores ``(2 I + smooth) / (P + T + smooth)``: shape ``(C',)`` with ``batch_dice``, else ``(N, C')``.

    ``I``, ``P``, ``T`` are the sums of ``p * t``, ``p`` and ``t`` over the pixels (and over the batch
    with ``batch_dice``). ``p`` is the softmax (multiclass) or sigmoid (binary, multilabel) of the
    logits, ``t`` the one-hot (multiclass) or given target. Classes: multiclass ``1..C-1`` (``0..C-1``
    with ``include_background``); multilabel every channel; binary one class, all channels pooled.
    The denominator is clamped at 1e-8 (nnU-Net's guard for ``smooth = 0``).
    """
    logits = logits.float()
    n = logits.shape[0]
    if mode == "multiclass":
        channels = logits.shape[1]
        probs = torch.softmax(logits, dim=1).reshape(n, channels, -1)
        onehot = F.one_hot(class_indices(target).reshape(n, -1), channels).transpose(1, 2).float()
        if not include_background:
            probs, onehot = probs[:, 1:], onehot[:, 1:]
    elif mode == "multilabel":
        probs = torch.sigmoid(logits).reshape(n, logits.shape[1], -1)
        onehot = target.float().reshape(n, logits.shape[1], -1)
    else:
        probs = torch.sigmoid(logits).reshape(n, 1, -1)
        onehot = target.float().reshape(n, 1, -1)
    intersection = (probs * onehot).sum(-1)
    pred_sum, target_sum = probs.sum(-1), onehot.sum(-1)
    if batch_dice:
        intersection, pred_sum, target_sum = intersection.sum(0), pred_sum.sum(0), target_sum.sum(0)
    return (2.0 * intersection + smooth) / (pred_sum + target_sum + smooth).clamp_min(1e-8)


def _weight_tensor(weight: list[float] | None, mode: str) -> torch.Tensor | None:
    if weight is None:
        return None
    if mode != "multiclass":
        raise ValueError(
            f"weight (one per class) is for mode='multiclass'; in mode={mode!r} use pos_weight for the positive pixels"
        )
    values = torch.as_tensor(list(weight), dtype=torch.float32)
    if values.ndim != 1 or values.numel() < 2 or bool((values < 0).any()) or float(values.sum()) <= 0:
        raise ValueError(f"weight must list C >= 2 non-negative class weights, not all zero; got {list(weight)}")
    return values


class CrossEntropyLoss(nn.Module):
    """Cross-entropy on logits: softmax over ``C`` classes (multiclass) or sigmoid per channel.

    - ``binary``: ``mean BCE(sigmoid(logits), target)``, the same as ``loss.bce``.
    - ``multiclass``: ``mean_i -log softmax(logits_i)[y_i]`` over the pixels ``i`` with label ``y_i``;
      with ``weight``: ``sum_i w[y_i] (-log p_i[y_i]) / sum_i w[y_i]`` (torch's weighted mean).
    - ``multilabel``: the BCE of each channel's sigmoid, averaged over pixels and channels.

    Args:
        mode: ``"binary"`` (default), ``"multiclass"`` or ``"multilabel"``.
        weight: multiclass only: one weight per class (length ``C``, background first).
        pos_weight: binary/multilabel only: weight of the positive pixels' term (as ``loss.bce``).

    Shape:
        - logits: ``(N, 1, H, W)`` binary, ``(N, C, H, W)`` multiclass, ``(N, K, H, W)`` multilabel;
          any float dtype (computed in float32).
        - target: ``(N, 1, H, W)`` float in {0, 1} binary, ``(N, 1, H, W)`` float label values
          ``0..C-1`` multiclass, ``(N, K, H, W)`` float in {0, 1} multilabel.
        - Output: scalar.
    """

    def __init__(
        self, mode: str = "binary", weight: list[float] | None = None, pos_weight: float | None = None
    ) -> None:
        super().__init__()
        self.mode = check_mode(mode)
        if pos_weight is not None and mode == "multiclass":
            raise ValueError("pos_weight is for mode='binary' or 'multilabel'; in multiclass mode use weight")
        self.weight = _weight_tensor(weight, mode)
        self.pos_weight = pos_weight

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        check_target(logits, target, self.mode)
        with float32_region(logits):
            return cross_entropy(logits, target, self.mode, self.weight, self.pos_weight)


class CEDiceLoss(nn.Module):
    """nnU-Net's default "Dice + CE": ``ce_weight * CE + dice_weight * (1 - mean_c Dice_c)``.

    ``CE`` is :class:`CrossEntropyLoss` in the same mode (unweighted). ``Dice_c`` is the soft Dice
    of class ``c``::

        Dice_c = (2 * sum(p_c * t_c) + smooth) / (sum(p_c) + sum(t_c) + smooth)

    with ``p`` the softmax probabilities (multiclass) or sigmoids (binary, multilabel) and ``t`` the
    one-hot (multiclass) or given target. The sums run over the pixels of the whole batch with
    ``batch_dice`` (nnU-Net's batch Dice: one Dice per class), else over each image's pixels, giving
    one Dice per image and class; the mean is then over all of them. Classes: multiclass ``1..C-1``
    (the background channel 0 too with ``include_background``); multilabel every channel; binary a
    single class with all channels pooled, so with ``batch_dice`` and ``smooth=1`` binary mode is
    exactly ``loss.bce_dice``. nnU-Net returns ``CE - mean Dice``; ``1 - mean Dice`` differs by a
    constant and keeps the loss >= 0. Like nnU-Net (and unlike smp's Dice), a class absent from the
    target still counts: its Dice is ~1 when it is predicted absent and ~0 when it is predicted.

    Args:
        mode: ``"binary"`` (default), ``"multiclass"`` or ``"multilabel"``.
        ce_weight: weight of the cross-entropy term.
        dice_weight: weight of the ``1 - mean Dice`` term.
        smooth: added to the Dice numerator and denominator (nnU-Net: 1e-5).
        batch_dice: sum over the batch before dividing (one Dice per class) instead of per image.
        include_background: multiclass only: also count the background class 0 in the Dice mean.

    Shape:
        - logits: ``(N, 1, H, W)`` binary, ``(N, C, H, W)`` multiclass, ``(N, K, H, W)`` multilabel;
          any float dtype (computed in float32).
        - target: ``(N, 1, H, W)`` float in {0, 1} binary, ``(N, 1, H, W)`` float label values
          ``0..C-1`` multiclass, ``(N, K, H, W)`` float in {0, 1} multilabel.
        - Output: scalar.
    """

    def __init__(
        self,
        mode: str = "binary",
        ce_weight: float = 1.0,
        dice_weight: float = 1.0,
        smooth: float = 1e-5,
        batch_dice: bool = True,
        include_background: bool = False,
    ) -> None:
        super().__init__()
        self.mode = check_mode(mode)
        if ce_weight < 0 or dice_weight < 0:
            raise ValueError(f"ce_weight and dice_weight must be >= 0, got {ce_weight} and {dice_weight}")
        if smooth < 0:
            raise ValueError(f"smooth must be >= 0, got {smooth}")
        self.ce_weight = ce_weight
        self.dice_weight = dice_weight
        self.smooth = smooth
        self.batch_dice = batch_dice
        self.include_background = include_background

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        check_target(logits, target, self.mode)
        with float32_region(logits):
            logits = logits.float()
            ce = cross_entropy(logits, target, self.mode)
            dice = soft_dice_per_class(
                logits, target, self.mode, self.smooth, self.batch_dice, self.include_background
            )
            return self.ce_weight * ce + self.dice_weight * (1.0 - dice.mean())
