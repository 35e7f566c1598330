"""Optimizers and learning-rate schedules (linear warm-up, then cosine, poly or constant)."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

from segkit.config import TrainSettings

__all__ = ["build_optimizer", "build_scheduler", "lr_factor", "plan_schedule", "budget_message", "warmup_steps",
           "MAX_WARMUP_SHARE", "BudgetPlan", "replan_message"]

#: The largest share of a run's optimizer steps that the warm-up may take, so a short run
#: (``--epochs 1``) still trains at its full learning rate for most of it.
MAX_WARMUP_SHARE = 0.1


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


def warmup_steps(warmup_epochs: float, steps_per_epoch: int, total_steps: int) -> int:
    """Warm-up steps: ``warmup_epochs`` worth of steps, but at most :data:`MAX_WARMUP_SHARE` of the run."""
    return min(round(warmup_epochs * steps_per_epoch), int(MAX_WARMUP_SHARE * total_steps))


def build_scheduler(
    optimizer: torch.optim.Optimizer, settings: TrainSettings, steps_per_epoch: int, epochs: int | None = None
) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-step schedule over the whole run (``epochs``, default ``settings.epochs``)."""
    total = (epochs or settings.epochs) * steps_per_epoch
    warmup = warmup_steps(settings.warmup_epochs, steps_per_epoch, total)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, _Factor(total, warmup, settings.scheduler))


def plan_schedule(scheduler: torch.optim.lr_scheduler.LambdaLR, settings: TrainSettings, steps_per_epoch: int,
                  epochs: int) -> None:
    """Stretch or shrink the schedule to end after ``epochs`` epochs (a time budget's plan).

    The warm-up keeps its length unless the new run is too short for it; the change is
    part of the scheduler's state, so a resumed run continues the planned schedule. The
    optimizer's rate is set to the new schedule's value at once, so the next step uses it.
    """
    total = epochs * steps_per_epoch
    for factor in scheduler.lr_lambdas:
        factor.total_steps = total
        factor.warmup_steps = min(factor.warmup_steps, warmup_steps(settings.warmup_epochs, steps_per_epoch, total))
    step = scheduler.last_epoch
    for group, base, factor in zip(scheduler.optimizer.param_groups, scheduler.base_lrs, scheduler.lr_lambdas,
                                   strict=True):
        group["lr"] = base * factor(step)
    scheduler._last_lr = [group["lr"] for group in scheduler.optimizer.param_groups]


def budget_message(max_minutes: float, epoch: int, epoch_seconds: float, planned: int, max_epochs: int,
                   fits: int) -> str:
    """What a time budget's plan decided, and which limit decided it.

    ``planned``: the epochs the run now trains; ``fits``: the epochs the budget alone would hold.
    """
    start = f"time budget {max_minutes:g} min: epoch {epoch} took {epoch_seconds:.1f} s"
    if fits >= max_epochs:
        return (f"{start}; the budget holds about {fits} epochs, so train.epochs = {max_epochs} decides: the run "
                f"trains {planned} epochs and its learning-rate schedule ends with them")
    return (f"{start}, so the budget decides: the run trains {planned} of train.epochs = {max_epochs} epochs and its "
            "learning-rate schedule ends with the budget")


class BudgetPlan:
    """The epochs a time budget holds, planned again after every epoch from how long epochs take now.

    A machine that is busy during the first epochs (another job, a cold disk cache) and quiet later
    would otherwise fix the run's length from its slowest epochs and leave much of the budget unused;
    one that slows down later would run past the plan into the deadline. After epoch 1 the estimate is
    that epoch's time; after that the mean of the last two epochs, leaving out the first, which holds
    one-off costs. An epoch's time runs from the end of the one before, so it holds checkpoint writes.

    The plan rounds to the nearest epoch: when at least half an epoch of the budget is left, it plans one
    more, and the deadline (the trainer stops at the step where the budget ends) cuts it short, so the
    budget is used to within half an epoch instead of left unused by up to a whole one.
    """

    def __init__(self) -> None:
        self.cycles: list[float] = []

    def record(self, seconds: float) -> None:
        """One more epoch took ``seconds``."""
        self.cycles.append(float(seconds))

    @property
    def epoch_seconds(self) -> float:
        """The estimate of the next epoch's time."""
        recent = self.cycles[1:][-2:] or self.cycles[-1:]
        return sum(recent) / len(recent)

    def epochs(self, done: int, seconds_left: float, cap: int) -> int:
        """The epochs the run trains in all, ``done`` being trained and ``seconds_left`` of the budget left;
        never fewer than ``done``, at most ``cap``."""
        more = max(seconds_left, 0.0) / max(self.epoch_seconds, 1e-6)
        whole = math.floor(more)
        extra = whole + (1 if more - whole >= 0.5 else 0)
        return max(done, min(cap, done + extra))


def replan_message(epoch: int, epoch_seconds: float, before: int, after: int, max_epochs: int) -> str:
    """What a later re-plan of a time budget changed: epochs now take another time, so the run trains another count."""
    capped = " (train.epochs)" if after == max_epochs else ""
    return (f"time budget: epochs now take {epoch_seconds:.1f} s (epoch {epoch}), so the run trains {after} epochs "
            f"instead of {before}{capped}; its learning-rate schedule ends with them")
