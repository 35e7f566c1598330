"""How long one epoch of a planned run takes, from the timings measured on the planning machine.

An epoch is its training batches (each a timed step plus the timed data path) and then its
validation: 2D, forwards over the validation items in training-size batches, each read like a
training batch (an upper bound: validation is not augmented); 3D, every validation case's sliding
windows at the runs' default overlap of one half, forwarded in batches of the training batch size.
The shares say which split: ``segkit run``'s default (75% training, 10% validation) or a fold of
``segkit cv --folds 5`` (80% and 20%).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from segkit.planning.contract import StepTiming

__all__ = ["VAL_FRACTION", "TEST_FRACTION", "CV_FOLDS", "RUN_SHARES", "CV_SHARES", "FORWARD_SHARE",
           "forward_seconds", "sliding_windows", "epoch_2d", "epoch_3d", "epoch_patches", "FEW_CASES", "training_items",
           "measured_note"]

VAL_FRACTION, TEST_FRACTION = 0.1, 0.15
"""segkit's default split, which a planned ``segkit run`` uses."""
CV_FOLDS = 5
RUN_SHARES = (1 - VAL_FRACTION - TEST_FRACTION, VAL_FRACTION)
"""(training, validation) shares of a ``segkit run`` with the default split."""
CV_SHARES = (1 - 1 / CV_FOLDS, 1 / CV_FOLDS)
"""(training, validation) shares of a fold of ``segkit cv --folds 5``."""
FEW_CASES = 10
"""Below this many cases a plan holds out no test set (it keeps at least one validation and one training case)."""
FORWARD_SHARE = 1 / 3
"""Where a timing has no measured forward (a plugin's ``time_steps``): a forward pass taken as a
third of a training step (forward, backward, update)."""


def forward_seconds(timing: StepTiming) -> float:
    """One validation batch's forward: measured, or :data:`FORWARD_SHARE` of a step where it was not."""
    if timing.seconds_per_forward is None:
        return FORWARD_SHARE * timing.seconds_per_step
    return timing.seconds_per_forward


def sliding_windows(shape: Sequence[int], patch: Sequence[int]) -> int:
    """Sliding windows of ``patch`` over a volume of ``shape`` at an overlap of one half."""
    return math.prod(math.ceil(max(0, m - p) / (p * 0.5)) + 1 for m, p in zip(shape, patch, strict=True))


def epoch_2d(items: int, timing: StepTiming, shares: tuple[float, float] = RUN_SHARES) -> float:
    """Seconds per epoch of a 2D run over ``items`` slices, ``shares`` of them training and validating."""
    train_items = max(1, round(items * shares[0]))
    val_batches = math.ceil(max(1, round(items * shares[1])) / timing.batch_size)
    return (timing.seconds_per_batch * math.ceil(train_items / timing.batch_size)
            + (forward_seconds(timing) + (timing.seconds_per_load or 0.0)) * val_batches)


def epoch_patches(items: int, timing: StepTiming, median_shape: Sequence[int],
                  shares: tuple[float, float] = RUN_SHARES) -> float:
    """Seconds per epoch of a run on 2D patches of ``items`` images of about ``median_shape``: a patch of
    ``timing.shape`` per training image, then each validation image's sliding windows (as :func:`epoch_3d`)."""
    return epoch_3d(items, timing, median_shape, shares)


def epoch_3d(cases: int, timing: StepTiming, median_shape: Sequence[int],
             shares: tuple[float, float] = RUN_SHARES) -> float:
    """Seconds per epoch of a 3D run over ``cases`` volumes of about ``median_shape``: a patch of
    ``timing.shape`` per training case, then each validation case's sliding windows."""
    train_cases = max(1, round(cases * shares[0]))
    val_cases = max(1, round(cases * shares[1]))
    windows = sliding_windows(median_shape, timing.shape)
    return (timing.seconds_per_batch * math.ceil(train_cases / timing.batch_size)
            + forward_seconds(timing) * val_cases * math.ceil(windows / timing.batch_size))


def training_items(fingerprint: dict, few_cases: int = FEW_CASES) -> int:
    """About how many items a planned run trains on, at least 1: all of one case (nothing held out), else
    the items of the cases left after segkit's validation share and, from ``few_cases`` cases on, its test share."""
    cases, items = int(fingerprint["cases"]), int(fingerprint["items"])
    if cases < 2:
        return max(1, items)
    val = max(1, math.ceil(VAL_FRACTION * cases))
    test = math.ceil(TEST_FRACTION * (cases - val)) if cases >= few_cases else 0
    return max(1, items * (cases - val - test) // cases)


def measured_note(timing: StepTiming) -> str:
    """What an epoch estimate rests on, for a plan's reason: the steps, data path and forward timed."""
    parts = [f"{timing.steps} steps timed, {timing.seconds_per_step:.3f} s each"]
    if timing.seconds_per_load is not None:
        parts.append(f"data {timing.seconds_per_load:.3f} s per batch")
    if timing.seconds_per_forward is not None:
        parts.append(f"a validation forward of {timing.forward_batch} {timing.seconds_per_forward:.3f} s")
    return "; ".join(parts)
