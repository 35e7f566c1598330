"""A busy CPU named before work: training's threads (segkit run) and the timed steps of segkit plan."""

from __future__ import annotations

from pathlib import Path

import pytest

from clihelp import run_in_process
from segkit.train.device import busy_cpu_note


def test_no_note_while_the_threads_find_idle_cores() -> None:
    assert busy_cpu_note(2, load=0.5, cores=2) is None  # 2.5 <= 1.5 x 2 cores: mostly idle
    assert busy_cpu_note(8, load=4.0, cores=8) is None
    assert busy_cpu_note(1, load=6.0, cores=2) is None  # one thread waits for no other
    assert busy_cpu_note(2, load=None, cores=2) is None  # no load average on this system


def test_a_busy_machine_gets_one_line_with_the_thread_count_that_fits() -> None:
    note = busy_cpu_note(2, load=2.0, cores=2)  # others keep both cores busy: one thread
    assert note is not None and "\n" not in note
    assert "load average 2.0 on 2 cores" in note and "uses 2 threads" in note and "OMP_NUM_THREADS=1 " in note
    assert "OMP_NUM_THREADS=3 " in busy_cpu_note(8, load=5.0, cores=8)  # 3 cores left idle
    assert "OMP_NUM_THREADS=1 " in busy_cpu_note(4, load=9.0, cores=4)  # never fewer than one


def test_a_run_on_a_busy_cpu_says_what_to_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    import segkit.train.device as device

    monkeypatch.setattr(device, "load_average", lambda: 9.0)
    monkeypatch.setattr(device, "usable_cores", lambda: 2)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    output = run_in_process("run", "--set", "dataset.count=24", "--set", "dataset.size=32", "--set", "model.width=4",
                            "--batch-size", "4", "--epochs", "1", "--device", "cpu", "--out", str(tmp_path / "run"))
    assert "note: this machine is busy (load average 9.0 on 2 cores) and training uses 2 threads" in output
    assert "OMP_NUM_THREADS=1" in output
