"""The default planner's CPU batch rule: time the candidate batches, plan the smallest efficient one.

On a CPU a smaller batch gives more optimizer steps for the same images in a time budget and costs
little until the per-step overhead shows; the measured images per second tell where it does. The
candidates (the pixel rule's batch and its halvings) are timed in rounds of alternating order,
smallest to largest then back, so that a drift of the machine's speed while they are timed (a
shared or throttled CPU) falls on every candidate alike instead of on the ones timed last
(benchmarks/layout_cpu.py times two memory layouts the same way).
"""

from __future__ import annotations

import dataclasses
import statistics
from typing import Callable, TypeVar

from segkit.planning.contract import StepTiming

__all__ = ["SMALLEST_CPU_BATCH", "THROUGHPUT_SHARE", "candidate_batches", "efficient_batch", "interleaved_timings"]

T = TypeVar("T")

SMALLEST_CPU_BATCH = 8
"""The smallest 2D batch the CPU rule times: batch norm's statistics get noisy below it."""
THROUGHPUT_SHARE = 0.8
"""On a CPU the smallest timed batch whose images per second reach this share of the best is planned.

A halved batch doubles the optimizer steps of a budget; measured, that was worth more than a tenth of
the images/s: Kvasir-SEG held out, batch 8 (0.88 to 0.94 of batch 16's images/s) scored +0.041 mean
Dice (95% CI +0.017 to +0.063); the hippocampus held out, batch 16 (0.80 of 64's) +0.004 (+0.001 to
+0.006), and over its 5 folds batch 32 (0.89 of 64's) +0.002. The 0.9 this replaces sat where
candidates of about equal speed fall: on a shared 2-core machine one batch's images/s move 10-25%
between timings of two seconds, so which was planned there turned on noise
(docs/benchmarks/any-dataset.md)."""


def candidate_batches(largest: int, smallest: int = SMALLEST_CPU_BATCH) -> list[int]:
    """``largest`` and its halvings down to ``smallest`` (just ``largest`` when it is smaller already)."""
    batches = [largest]
    while batches[-1] // 2 >= smallest:
        batches.append(batches[-1] // 2)
    return sorted(batches)


def interleaved_timings(time_one: Callable[[T], StepTiming], candidates: list[T], rounds: int) -> list[StepTiming]:
    """Each of ``candidates`` (batch sizes, memory layouts) timed ``rounds`` times by ``time_one``, in
    alternating order; per candidate the mean.

    Round 1 goes from the first candidate to the last, round 2 back, and so on: with an even number of
    rounds a speed drift that is linear in time adds the same to every candidate's mean. The means are
    of the rounds' medians (``seconds_per_step``, ``seconds_per_forward``); ``steps`` adds up.
    """
    if rounds < 1 or not candidates:
        raise ValueError("interleaved_timings needs at least one round and one candidate")
    measured: list[list[StepTiming]] = [[] for _ in candidates]
    order = list(range(len(candidates)))
    for round_index in range(rounds):
        for index in order if round_index % 2 == 0 else reversed(order):
            measured[index].append(time_one(candidates[index]))
    return [_mean_timing(timings) for timings in measured]


def _mean_timing(timings: list[StepTiming]) -> StepTiming:
    forwards = [t.seconds_per_forward for t in timings if t.seconds_per_forward is not None]
    peaks = [t.peak_bytes for t in timings if t.peak_bytes is not None]
    return dataclasses.replace(
        timings[0], seconds_per_step=statistics.fmean(t.seconds_per_step for t in timings),
        steps=sum(t.steps for t in timings), peak_bytes=max(peaks) if peaks else None,
        seconds_per_forward=statistics.fmean(forwards) if forwards else None)


def efficient_batch(timings: list[StepTiming], share: float = THROUGHPUT_SHARE) -> StepTiming:
    """The timing of the smallest batch within ``share`` of the best measured images per second."""
    if not timings:
        raise ValueError("efficient_batch needs at least one timing")
    best = max(t.batch_size / t.seconds_per_step for t in timings)
    return min((t for t in timings if t.batch_size / t.seconds_per_step >= share * best), key=lambda t: t.batch_size)
