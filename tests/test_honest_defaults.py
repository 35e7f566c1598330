"""Honest defaults: per-case monitor and headline, missed lesions reported, short warm-ups, budget-filling schedules."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest
import torch

from clihelp import segkit
from segkit.config import resolve_monitor
from segkit.train.schedule import BudgetPlan, build_scheduler, lr_factor, plan_schedule, warmup_steps
from segkit.config import TrainSettings

TINY = ["--set", "dataset.count=48", "--set", "dataset.size=32", "--set", "dataset.slices_per_case=4",
        "--set", "model.width=8", "--batch-size", "8", "--augment", "none"]


@pytest.fixture(scope="module")
def default_monitor_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("honest") / "run"
    result = segkit("run", *TINY, "--epochs", "1", "--out", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    return out, result.stderr


def test_the_default_monitor_is_per_case_dice_and_is_written_to_the_config(default_monitor_run) -> None:
    out, _ = default_monitor_run
    config = tomllib.loads((out / "config.toml").read_text())
    assert config["metrics"]["monitor"] == "dice_case"  # resolved, so the run reproduces without 'auto'
    summary = json.loads((out / "summary.json").read_text())
    assert summary["headline"]["name"] == "val_dice_case"
    assert summary["headline"]["value"] == pytest.approx(summary["best_per_case"]["dice"])


def test_the_last_line_gives_per_case_first_then_per_image_and_the_missed_lesion_slices(default_monitor_run) -> None:
    out, stderr = default_monitor_run
    last = stderr.strip().splitlines()[-1]
    summary = json.loads((out / "summary.json").read_text())
    assert last.startswith("best val_dice_case ")
    assert "per-image" in last and "pooled" in last
    assert (f"{summary['lesion_slices_empty_prediction']} of {summary['lesion_slices']} validation lesion slices "
            "got an empty prediction") in last
    assert 0 <= summary["lesion_slices_empty_prediction"] <= summary["lesion_slices"] > 0


@pytest.mark.parametrize(("monitor", "names", "has_cases", "expected"), [
    ("auto", ["dice", "iou"], True, "dice_case"),
    ("auto", ["dice", "iou"], False, "dice_global"),
    ("auto", ["iou", "recall"], True, "iou_case"),
    ("dice", ["dice"], True, "dice"),  # an explicit choice is kept, per-image included
])
def test_resolve_monitor(monitor: str, names: list[str], has_cases: bool, expected: str) -> None:
    assert resolve_monitor(monitor, names, has_cases) == expected


def test_a_dataset_of_single_image_cases_is_monitored_pooled() -> None:
    """With one image per case, a per-case mean is a per-image mean: the pooled value is the honest one."""
    from segkit.config import RunConfig, ComponentSpec
    from segkit.train.assemble import fill_monitor
    from segkit_builtins.datasets.synthetic import SyntheticDataset

    for slices_per_case, expected in ((1, "dice_global"), (4, "dice_case")):
        config = RunConfig(ComponentSpec("unet"), ComponentSpec("bce_dice"), ComponentSpec("synthetic"))
        fill_monitor(config, SyntheticDataset(count=8, size=16, slices_per_case=slices_per_case))
        assert config.metrics.monitor == expected


def test_the_warmup_takes_at_most_a_tenth_of_a_short_run() -> None:
    assert warmup_steps(1.0, steps_per_epoch=32, total_steps=32) == 3
    assert warmup_steps(1.0, steps_per_epoch=32, total_steps=320) == 32
    assert warmup_steps(0.0, steps_per_epoch=32, total_steps=32) == 0
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = build_scheduler(optimizer, TrainSettings(epochs=1, warmup_epochs=1.0, scheduler="cosine"), 32)
    factors = []
    for _ in range(32):
        factors.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert factors[3] > 0.95 and sum(f > 0.5 for f in factors) >= 16  # most of one epoch at a useful rate


@pytest.mark.parametrize(("left", "first", "cap", "expected"), [
    (840, 60, 100, 15),   # 15 minutes, one minute per epoch, 14 left after the first: 1 + 14
    (870, 60, 100, 16),   # 14.5 epochs left: one more, which the deadline cuts short
    (840, 60, 10, 10),    # train.epochs caps the plan
    (0, 1000, 100, 1),    # an epoch longer than the budget: only that one
    (59.5, 0.5, 1000, 120),
])
def test_the_budget_plan_fills_the_budget(left: float, first: float, cap: int, expected: int) -> None:
    plan = BudgetPlan()
    plan.record(first)
    assert plan.epochs(1, left, cap) == expected


def test_the_plan_follows_the_latest_epochs_leaving_out_the_first() -> None:
    # a GPU's first epoch: 20 s of warm-up and 5 s of work; later epochs 5 s
    plan = BudgetPlan()
    plan.record(25)
    assert plan.epochs(1, 275, 1000) == 12  # judged by the first epoch alone: 1 + 11
    plan.record(5)
    assert plan.epoch_seconds == 5 and plan.epochs(2, 270, 1000) == 56  # 2 + 270 / 5
    assert plan.epochs(2, 270, 40) == 40  # train.epochs still caps it
    assert plan.epochs(2, -3, 1000) == 2  # never fewer than trained


def test_a_machine_busy_early_gets_its_epochs_back() -> None:
    # epochs took 90 s while another job shared the cores, then 30 s: the plan follows the recent epochs
    plan = BudgetPlan()
    for seconds in (95, 90, 90):
        plan.record(seconds)
    assert plan.epochs(3, 600, 1000) == 3 + 7  # 600 / 90 = 6.7: seven more, the last cut by the deadline
    plan.record(30)
    assert plan.epoch_seconds == 60  # the mean of the last two
    plan.record(30)
    assert plan.epochs(5, 480, 1000) == 5 + 16


def test_a_planned_schedule_ends_with_the_plan_and_survives_a_state_dict_round_trip() -> None:
    settings = TrainSettings(epochs=1000, warmup_epochs=0.5, scheduler="cosine")
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = build_scheduler(optimizer, settings, steps_per_epoch=10)
    for _ in range(10):
        optimizer.step()
        scheduler.step()
    plan_schedule(scheduler, settings, steps_per_epoch=10, epochs=4)
    state = scheduler.state_dict()
    restored = build_scheduler(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0), settings, 10)
    restored.load_state_dict(state)
    factor = restored.lr_lambdas[0]
    assert factor.total_steps == 40
    assert lr_factor(39, factor.total_steps, factor.warmup_steps, "cosine") < 0.01


def test_a_time_budget_plans_the_epochs_and_resume_keeps_the_plan(tmp_path: Path) -> None:
    out = tmp_path / "budget"
    result = segkit("run", *TINY, "--epochs", "400", "--set", "train.max_minutes=0.1", "--out", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "time budget 0.1 min: epoch 1 took" in result.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert 1 <= summary["epochs_planned"] < 400
    assert summary["epochs_run"] <= summary["epochs_planned"]
    state = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    assert state["planned_epochs"] == summary["epochs_planned"]
    assert state["scheduler"]["lr_lambdas"][0]["total_steps"] == summary["epochs_planned"] * 4
