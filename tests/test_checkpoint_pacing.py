"""Checkpoint pacing: slow checkpoint writes are spaced out, best.pt and last.pt stay in step, the last epoch is kept."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from segkit.config import resolve_config, validate_config
from segkit.components.registry import get_registry
from segkit.train import runner, session
from segkit.runs.checkpoint import CheckpointPacer, load_checkpoint


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_fast_write_never_holds_the_next_one_back() -> None:
    clock = FakeClock()
    pacer = CheckpointPacer(slow_seconds=0.5, factor=20, clock=clock)
    assert pacer.due()  # nothing written yet
    with pacer.writing():
        clock.now += 0.4
    assert pacer.due()  # 0.4 s is not slow: every epoch is written


def test_a_slow_write_spaces_the_next_by_factor_times_its_duration() -> None:
    clock = FakeClock()
    pacer = CheckpointPacer(slow_seconds=0.5, factor=20, clock=clock)
    with pacer.writing():
        clock.now += 1.0
    clock.now += 19.9
    assert not pacer.due()
    assert pacer.due(final=True)  # the last epoch is always written
    clock.now += 0.1
    assert pacer.due()  # 20 x the 1 s write has passed since it ended


def test_a_run_with_slow_writes_keeps_best_and_last_in_step(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Every write counts as slow and spaced out beyond the run: only epoch 0 and the last epoch are written.
    monkeypatch.setattr(session, "CheckpointPacer", lambda: CheckpointPacer(slow_seconds=0.0, factor=1e9))
    written: list[tuple[str, int]] = []
    save = session.save_checkpoint

    def recording_save(path: Path, payload: dict) -> None:
        written.append((Path(path).name, payload["epoch"]))
        save(path, payload)

    monkeypatch.setattr(session, "save_checkpoint", recording_save)
    registry = get_registry()
    document = resolve_config(sets=["dataset.count=32", "dataset.size=32", "model.width=4", "train.epochs=4",
                                    "train.batch_size=8", "train.augment='none'", "train.device='cpu'"])
    summary = runner.train(validate_config(document, registry), tmp_path / "run", registry, quiet=True,
                           echo=lambda _message: None)
    assert written == [("last.pt", 0), ("best.pt", summary["best_epoch"]), ("last.pt", 4)]
    last = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    best = load_checkpoint(tmp_path / "run" / "checkpoints" / "best.pt")
    assert last["finished"] and last["early_stopping"]["best_epoch"] == best["epoch"] == summary["best_epoch"]
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["best_epoch"] == summary["best_epoch"]
