"""One loss from a deep-supervised model's outputs: the main logits plus lower-resolution heads.

A model with deep supervision returns, in training mode, a tuple ``(main, aux_1, aux_2, ...)``,
highest resolution first. Each output is scored against the target brought to its size by
nearest-neighbour downsampling; the weights halve per level and sum to 1, and with three or
more outputs the lowest-resolution one gets weight 0 (nnU-Net's scheme: its coarsest head is
too coarse to help).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

__all__ = ["level_weights", "downsample_target", "supervised_loss"]


def level_weights(levels: int) -> list[float]:
    """Loss weights of ``levels`` outputs, highest resolution first: ``1, 1/2, 1/4, ...`` normalised to sum to 1.

    With three or more levels the last (lowest-resolution) one gets 0.
    """
    if levels < 1:
        raise ValueError(f"deep supervision needs at least one output, got {levels}")
    weights = [0.5**level for level in range(levels)]
    if levels >= 3:
        weights[-1] = 0.0
    total = sum(weights)
    return [w / total for w in weights]


def downsample_target(target: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """``target`` resized to the spatial ``size`` by nearest neighbour (labels stay labels).

    ``target`` is ``(N, K, *spatial)`` (binary, label values, one channel per label) or
    ``(N, *spatial)`` class indices; the dtype is kept.
    """
    size = tuple(int(s) for s in size)
    spatial = len(size)
    if tuple(target.shape[-spatial:]) == size:
        return target
    indices = target.ndim == spatial + 1
    x = target.unsqueeze(1) if indices else target
    resized = F.interpolate(x if x.is_floating_point() else x.float(), size=size, mode="nearest").to(target.dtype)
    return resized.squeeze(1) if indices else resized


def supervised_loss(
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    output: torch.Tensor | Sequence[torch.Tensor],
    target: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(loss, main_logits)`` for a model's ``output``: one logits tensor, or deep supervision's tuple.

    A tensor gives ``(loss_fn(output, target), output)``. A tuple ``(main, aux_1, ...)`` gives the
    weighted sum of ``loss_fn`` over its outputs (weights from :func:`level_weights`), each against
    ``target`` downsampled to that output's size, and ``main``. An output of weight 0 is not scored.

    Shape:
        - output: logits ``(N, C, *spatial)``, or a tuple of them at decreasing sizes.
        - target: what :meth:`segkit.labels.Labels.loss_target` returns, ``(N, K, *spatial)``, or
          class indices ``(N, *spatial)``, at the size of the main logits.
    """
    if isinstance(output, torch.Tensor):
        return loss_fn(output, target), output
    outputs = list(output)
    if not outputs or not all(isinstance(o, torch.Tensor) for o in outputs):
        raise TypeError(f"a model returns a logits tensor or a tuple of them (deep supervision), got {type(output)}")
    main = outputs[0]
    total = main.new_zeros((), dtype=torch.float32)
    for weight, logits in zip(level_weights(len(outputs)), outputs, strict=True):
        if weight == 0:
            # Not scored, but kept in the graph: every parameter then gets a (zero) gradient, which
            # DistributedDataParallel requires of a model wrapped without find_unused_parameters.
            total = total + 0.0 * logits.float().sum()
            continue
        total = total + weight * loss_fn(logits, downsample_target(target, logits.shape[2:]))
    return total, main
