"""Preprocessing volumes in worker processes, one case in flight per worker, with memory counted first.

A CT dataset is hundreds of megabytes per case, so the volume cache is built by several processes
at once, as nnU-Net's ``-np`` does, but never with more cases in memory than workers:
:func:`map_bounded` hands each worker one case and the next only when it has finished, and the
parent keeps nothing of a case but its small result (a ``cache.json`` entry, a sample of voxels).
How many workers run is decided before the first case is read (:func:`plan_workers`): the cores
this process may use, at most the number of cases, and at most as many as the largest case's
preprocessing fits in the memory that is available; a dataset of small cases is preprocessed in
this process, where starting workers would cost more than it saves.

Workers are forked (they inherit the dataset and its readers, plugins included, without pickling);
where the platform cannot fork safely, the cases are preprocessed in this process. Each worker
runs torch with one thread, so N workers use N cores.
"""

from __future__ import annotations

import multiprocessing
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Any, TypeVar

from segkit import memory
from segkit.device import usable_cores
from segkit.errors import ConfigError

__all__ = ["SMALL_DATASET_BYTES", "plan_workers", "map_bounded", "can_fork"]

T = TypeVar("T")
R = TypeVar("R")

SMALL_DATASET_BYTES = 1 << 30
"""Below this many bytes of preprocessing work in all (the sum over the cases of their peak bytes), ``auto``
preprocesses in this process: the hippocampus's 195 cases need about 0.1 GiB, one CT case several."""


def can_fork() -> bool:
    """Whether worker processes can be forked here (Linux; macOS's fork is unsafe with the libraries torch loads)."""
    return sys.platform.startswith("linux") and "fork" in multiprocessing.get_all_start_methods()


def plan_workers(requested: int, case_bytes: Sequence[float], *, what: str = "preprocessing") -> tuple[int, str | None]:
    """How many processes preprocess cases whose peaks are ``case_bytes``, and a note when fewer than asked.

    ``requested`` 0 is automatic: 1 (this process) when the cases need less than :data:`SMALL_DATASET_BYTES`
    in all, else the usable cores; any request is capped by the number of cases and by the memory available
    (each worker holds at most the largest case). Where even one case does not fit, 1 is returned: that case's
    own check says what would fit.
    """
    if isinstance(requested, bool) or not isinstance(requested, int) or requested < 0:
        raise ConfigError(f"the number of preprocessing workers must be a whole number >= 0 (0: automatic), "
                          f"got {requested!r}")
    if not case_bytes:
        return 1, None
    wanted = requested or (1 if sum(case_bytes) < SMALL_DATASET_BYTES else usable_cores())
    workers = max(1, min(wanted, len(case_bytes)))
    largest = max(case_bytes)
    free = memory.available_bytes()
    fits = max(1, int(free // max(largest, 1)))
    note = None
    if workers > fits:
        note = (f"{what} with {fits} worker process(es), not {workers}: each holds one case at a time, the largest "
                f"needs {memory.format_bytes(largest)} and {memory.format_bytes(free)} of memory is available")
        workers = fits
    if workers > 1 and not can_fork():
        note = f"{what} in this process: worker processes need fork, which {sys.platform} does not offer safely"
        workers = 1
    return workers, note


_TASK: Callable[[Any], Any] | None = None  # in a worker: the function it applies, inherited by fork


def _start_worker(function: Callable[[Any], Any]) -> None:
    global _TASK
    import torch

    torch.set_num_threads(1)  # N workers on N cores, not N x cores threads
    _TASK = function


def _run(item: Any) -> Any:
    assert _TASK is not None
    return _TASK(item)


def map_bounded(function: Callable[[T], R], items: Iterable[T], workers: int) -> Iterator[tuple[T, R]]:
    """``(item, function(item))`` for every item, as each finishes (in this process, in order, when ``workers`` is 1).

    With more workers, ``function`` runs in that many forked processes, each given one item at a time:
    at most ``workers`` items are in flight, so memory holds at most that many cases however many there
    are. ``function`` (a bound method, say, with its dataset) is inherited by fork, never pickled; the
    items and the results are. An exception in a worker stops the rest (items not started are cancelled)
    and is raised here.
    """
    if workers <= 1:
        for item in items:
            yield item, function(item)
        return
    context = multiprocessing.get_context("fork")
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_start_worker,
                               initargs=(function,))
    pending: dict[Future[Any], T] = {}
    queue = iter(items)
    try:
        for item in queue:
            pending[pool.submit(_run, item)] = item
            if len(pending) == workers:
                break
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                item = pending.pop(future)
                result = future.result()
                following = next(queue, None)
                if following is not None:
                    pending[pool.submit(_run, following)] = following
                yield item, result
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
