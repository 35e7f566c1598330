"""Overlap metrics on confusion counts: Dice, IoU, precision and recall.

Each metric's ``score(tp, fp, fn, tn)`` works element-wise on count tensors, so
the same object scores one image, one patient (counts summed over the case) or
the whole dataset (pooled counts). Empty-mask conventions are documented in
``docs/metrics.md``.
"""

from __future__ import annotations

import torch

__all__ = ["Dice", "IoU", "Precision", "Recall", "ratio"]


def _as_float(x: torch.Tensor | float) -> torch.Tensor:
    x = torch.as_tensor(x)
    if x.is_floating_point():
        return x
    # float64 keeps pooled counts (1e8 pixels and more) exact; MPS has no float64
    return x.to(torch.float32 if x.device.type == "mps" else torch.float64)


def ratio(numerator: torch.Tensor, denominator: torch.Tensor, if_zero: torch.Tensor | float) -> torch.Tensor:
    """``numerator / denominator`` where ``denominator > 0``, else ``if_zero``."""
    numerator, denominator = _as_float(numerator), _as_float(denominator)
    defined = denominator > 0
    value = numerator / torch.where(defined, denominator, torch.ones_like(denominator))
    return torch.where(defined, value, torch.as_tensor(if_zero, dtype=value.dtype, device=value.device))


class Dice:
    """Dice coefficient ``2 TP / (2 TP + FP + FN)``; ``empty_score`` when both masks are empty.

    Args:
        empty_score: the score when ``TP + FP + FN == 0`` (no lesion, none predicted).
    """

    name = "dice"
    higher_is_better = True

    def __init__(self, empty_score: float = 1.0) -> None:
        self.empty_score = empty_score

    def score(self, tp: torch.Tensor, fp: torch.Tensor, fn: torch.Tensor, tn: torch.Tensor) -> torch.Tensor:
        return ratio(2 * tp, 2 * tp + fp + fn, self.empty_score)


class IoU:
    """Intersection over union ``TP / (TP + FP + FN)``; ``empty_score`` when both masks are empty.

    Args:
        empty_score: the score when ``TP + FP + FN == 0`` (no lesion, none predicted).
    """

    name = "iou"
    higher_is_better = True

    def __init__(self, empty_score: float = 1.0) -> None:
        self.empty_score = empty_score

    def score(self, tp: torch.Tensor, fp: torch.Tensor, fn: torch.Tensor, tn: torch.Tensor) -> torch.Tensor:
        return ratio(tp, tp + fp + fn, self.empty_score)


class Precision:
    """Precision ``TP / (TP + FP)``.

    With nothing predicted (``TP + FP == 0``) it is 1 when there is no lesion either
    (``FN == 0``) and 0 when a lesion was missed.
    """

    name = "precision"
    higher_is_better = True

    def score(self, tp: torch.Tensor, fp: torch.Tensor, fn: torch.Tensor, tn: torch.Tensor) -> torch.Tensor:
        return ratio(tp, tp + fp, (torch.as_tensor(fn) == 0).float())


class Recall:
    """Recall (sensitivity) ``TP / (TP + FN)``.

    With no lesion (``TP + FN == 0``) it is 1 when nothing is predicted either
    (``FP == 0``) and 0 when something was.
    """

    name = "recall"
    higher_is_better = True

    def score(self, tp: torch.Tensor, fp: torch.Tensor, fn: torch.Tensor, tn: torch.Tensor) -> torch.Tensor:
        return ratio(tp, tp + fn, (torch.as_tensor(fp) == 0).float())
