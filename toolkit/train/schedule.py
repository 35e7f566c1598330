"""Optimizers and learning-rate schedules (linear warm-up, then cosine, poly or constant)."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

from segkit.config import TrainSettings

__all__ = ["build_optimizer", "build_scheduler", "lr_factor"]


def build_optimizer(parameters: Iterable[torch.nn.Parameter], settings: TrainSettings) -> torch.optim.Optimizer:
    """Adam, AdamW or SGD (with momentum) at ``settings.lr``."""
    if settings.optimizer == "adam":
        return torch.optim.Adam(parameters, lr=settings.lr, weight_decay=settings.weight_decay)
    if settings.optimizer == "adamw":
        return torch.optim.AdamW(parameters, lr=settings.lr, weight_decay=settings.weight_decay)
    return torch.optim.SGD(parameters, lr=settings.lr, momentum=settings.momentum, weight_decay=settings.weight_decay)


def lr_factor(step: int, total_steps: int, warmup_steps: int, kind: str) -> float:
    """The multiplier of the base learning rate at optimizer step ``step`` (0-based).

    Warm-up rises linearly from 1/1000 to 1, as in the tutorial's warm-up scheduler;
    then ``cosine`` decays to 0, ``poly`` decays as (1 - progress)^0.9, ``constant`` stays.
    """
    if step < warmup_steps:
        alpha = (step + 1) / warmup_steps
        return 0.001 * (1 - alpha) + alpha
    if kind == "constant":
        return 1.0
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    if kind == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    return (1.0 - progress) ** 0.9


class _Factor:
    """A picklable schedule function (LambdaLR stores it in its state)."""

    def __init__(self, total_steps: int, warmup_steps: int, kind: str) -> None:
        self.total_steps, self.warmup_steps, self.kind = total_steps, warmup_steps, kind

    def __call__(self, step: int) -> float:
        return lr_factor(step, self.total_steps, self.warmup_steps, self.kind)


def build_scheduler(
    optimizer: torch.optim.Optimizer, settings: TrainSettings, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-step schedule over the whole run."""
    total = settings.epochs * steps_per_epoch
    warmup = min(total, round(settings.warmup_epochs * steps_per_epoch))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, _Factor(total, warmup, settings.scheduler))
