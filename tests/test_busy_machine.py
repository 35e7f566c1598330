"""A busy CPU named before work: training's threads (segkit run) and the timed steps of segkit plan."""

from __future__ import annotations

from pathlib import Path

import pytest

from clihelp import run_in_process, write_plugin
from segkit.planning.timing import TimingWatch
from segkit.device import busy_cpu_note


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

    import segkit.device as device

    monkeypatch.setattr(device, "load_average", lambda: 9.0)
    monkeypatch.setattr(device, "usable_cores", lambda: 2)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    output = run_in_process("run", "--set", "dataset.count=24", "--set", "dataset.size=32", "--set", "model.width=4",
                            "--batch-size", "4", "--epochs", "1", "--device", "cpu", "--out", str(tmp_path / "run"))
    assert "note: this machine is busy (load average 9.0 on 2 cores) and training uses 2 threads" in output
    assert "OMP_NUM_THREADS=1" in output


# --- segkit plan: timings that do not measure the machine at rest ------------------------------------------------

def test_timings_of_a_quiet_machine_get_no_note() -> None:
    watch = TimingWatch("cpu", cores=2, load=lambda: 2.2)  # about this plan's own 2 threads
    watch.record("a", "steps", [0.10, 0.12, 0.11], threads=2)
    watch.record("a", "steps", [0.12, 0.11], threads=2)  # the same steps again, close
    assert watch.notes() == []


def test_a_load_average_of_other_work_is_noted() -> None:
    watch = TimingWatch("cpu", cores=2, load=lambda: 4.5)  # 2.5 beside the plan's own 2 threads
    watch.record("a", "steps", [0.10, 0.11], threads=2)
    (note,) = watch.notes()
    assert "load average 2.5 beside this plan's own threads, on 2 cores" in note and "plan again" in note
    assert TimingWatch("cuda", cores=2, load=lambda: 4.5).notes() == []  # a GPU's steps: the load is not timed


def test_timings_of_the_same_steps_that_disagree_are_noted() -> None:
    within = TimingWatch("cpu", cores=2, load=lambda: None)
    within.record("a", "training steps of unet", [0.10, 0.35], threads=2)
    (note,) = within.notes()
    assert "the steps of one timing of training steps of unet lay 3.5x apart" in note
    repeated = TimingWatch("cpu", cores=2, load=lambda: None)
    repeated.record("a", "training steps of unet", [0.10, 0.11], threads=2)
    repeated.record("b", "training steps of fpn", [0.30, 0.31], threads=2)  # other steps: no comparison
    assert repeated.notes() == []
    repeated.record("a", "training steps of unet", [0.24, 0.25], threads=2)  # medians 0.105 and 0.245
    (note,) = repeated.notes()
    assert "repeated timings of training steps of unet lay 2.3x apart" in note


TIMING_PLANNER = '''
from segkit import hookimpl
from segkit.planning import Plan


class TimingPlanner:
    """The tutorial U-Net at width 4 for one epoch, after timing its steps once."""

    def plan(self, request):
        plan = Plan()
        plan.set("dataset", "name", request.dataset_name, "the data")
        for key, value in request.dataset_params.items():
            plan.set("dataset", key, value, "as given")
        plan.set("model", "name", "unet", "the tutorial's")
        plan.set("model", "width", 4, "small")
        plan.set("train", "epochs", 1, "a test")
        timing = request.time_steps(plan.document(), 2, (32, 32), 0.05)
        plan.epoch_seconds = timing.seconds_per_step * request.fingerprint["items"] / 2
        return plan


@hookimpl
def segkit_components():
    return [{"kind": "planner", "name": "timing_planner", "target": "segkit_local_plugin_timing_planner:TimingPlanner",
             "summary": "times one step"}]
'''


def test_a_plan_timed_on_a_busy_machine_says_so_on_screen_and_in_plan_toml(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    import segkit.planning.timing as timing

    monkeypatch.setattr(timing, "load_average", lambda: 40.0)
    monkeypatch.setattr(timing, "usable_cores", lambda: 2)
    plugin = write_plugin(tmp_path, "timing_planner", TIMING_PLANNER)
    out = tmp_path / "plan"
    output = run_in_process("plan", "-p", str(plugin), "--planner", "timing_planner", "--set", "count=24",
                            "--set", "size=32", "--set", "slices_per_case=4", "--quiet", "--out", str(out))
    assert "warning: other work kept this machine busy while the steps were timed" in output
    text = " ".join(line.lstrip("# ") for line in (out / "plan.toml").read_text().splitlines())
    assert "other work kept this machine busy while the steps were timed" in text
