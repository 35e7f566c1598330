"""Preprocessing volumes in worker processes: one case in flight per worker, the same cache as in-process."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
from segkit import memory
from segkit.components import get_registry
from segkit.data import case_workers
from segkit.data.case_workers import map_bounded, plan_workers
from segkit.data.volume_cache import VolumeCache
from segkit.errors import ConfigError, DataError
from volumes import write_msd

fork_only = pytest.mark.skipif(not case_workers.can_fork(), reason="worker processes are forked; this platform "
                               "preprocesses in-process")


def _entries(folder: Path) -> dict:
    recorded = json.loads((folder / "cache.json").read_text())
    return {case: {part: record["fingerprint"] for part, record in entry["files"].items()}
            for case, entry in recorded["cases"].items()}


@fork_only
def test_workers_write_the_same_cache_as_one_process_ct_stats_included(tmp_path: Path) -> None:
    root = write_msd(tmp_path / "msd", cases=5, shapes=[(20, 24, 12), (26, 20, 14), (18, 22, 10)])
    dataset = get_registry().build("dataset", "msd", root=str(root))
    alone = VolumeCache(dataset, directory=tmp_path / "one", schemes=["ct"], target_spacing=(1.5, 1.5, 1.5),
                        progress=False, workers=1).build()
    shared = VolumeCache(dataset, directory=tmp_path / "two", schemes=["ct"], target_spacing=(1.5, 1.5, 1.5),
                         progress=False, workers=2).build()
    assert alone.stats == shared.stats and sorted(shared.built) == sorted(alone.built) == list(alone.cases)
    assert _entries(tmp_path / "one") == _entries(tmp_path / "two")  # byte for byte, whichever process wrote it
    for case in alone.cases:
        np.testing.assert_array_equal(alone.image(case), shared.image(case))


@fork_only
def test_at_most_one_item_per_worker_is_in_flight(tmp_path: Path) -> None:
    def task(item: int) -> tuple[int, float, float]:
        started = time.monotonic()
        time.sleep(0.15)
        return os.getpid(), started, time.monotonic()

    results = list(map_bounded(task, range(7), 2))
    assert sorted(item for item, _ in results) == list(range(7))
    spans = [(start, end) for _, (_, start, end) in results]
    most = max(sum(1 for s, e in spans if s <= moment < e) for moment, _ in spans)
    assert most == 2 and len({pid for _, (pid, _, _) in results}) == 2 and os.getpid() not in {
        pid for _, (pid, _, _) in results}


@fork_only
def test_an_error_in_a_worker_is_raised_here_whole() -> None:
    def task(item: int) -> int:
        if item == 2:
            raise DataError(f"case {item} is unreadable")
        return item

    with pytest.raises(DataError, match="case 2 is unreadable"):
        list(map_bounded(task, range(6), 2))


def test_automatic_workers_stay_in_process_for_small_cases_and_fit_the_memory(monkeypatch) -> None:
    assert plan_workers(0, [1e6] * 50) == (1, None)  # small: forking would cost more than it saves
    monkeypatch.setattr(case_workers, "usable_cores", lambda: 8)
    monkeypatch.setattr(case_workers, "can_fork", lambda: True)
    monkeypatch.setattr(memory, "available_bytes", lambda device=None: 100 * 2**30)
    assert plan_workers(0, [2 * 2**30] * 20) == (8, None)
    assert plan_workers(4, [2 * 2**30] * 3) == (3, None)  # never more workers than cases
    monkeypatch.setattr(memory, "available_bytes", lambda device=None: 5 * 2**30)
    workers, note = plan_workers(4, [1 * 2**30, 2 * 2**30])
    assert workers == 2 and note is None
    workers, note = plan_workers(4, [2 * 2**30] * 6)
    assert workers == 2 and "2 worker process(es), not 4" in note and "2.00 GiB" in note
    with pytest.raises(ConfigError, match="whole number >= 0"):
        plan_workers(-1, [1.0])
