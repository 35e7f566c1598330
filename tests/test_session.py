"""The run as named steps: a subclass of RunSession overrides one step and the rest of the run stays as it is."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from segkit.components.registry import get_registry
from segkit.config import resolve_config, validate_config
from segkit.train.runner import train
from segkit.train.session import RunSession

TINY = ["dataset.count=32", "dataset.size=32", "model.width=4", "train.epochs=3", "train.batch_size=8",
        "train.augment='none'", "train.device='cpu'"]


class StopAfterTwo(RunSession):
    """A custom loop: stops after its second epoch and keeps a list of what each step saw."""

    seen: list[str] = []

    def train_epoch(self, epoch: int):
        type(self).seen.append(f"train {epoch}")
        return super().train_epoch(epoch)

    def on_epoch_end(self, epoch: int, result) -> bool:
        stop = super().on_epoch_end(epoch, result)
        type(self).seen.append(f"end {epoch}")
        if epoch == 2:
            self.stopped = "custom"
            return True
        return stop


def test_one_overridden_step_changes_the_run_and_nothing_else(tmp_path: Path) -> None:
    registry = get_registry()
    config = validate_config(resolve_config(sets=TINY), registry)
    summary = train(config, tmp_path / "custom", registry, quiet=True, echo=lambda _m: None, session=StopAfterTwo)
    assert StopAfterTwo.seen == ["train 1", "end 1", "train 2", "end 2"]
    assert summary["epochs_run"] == 2 and summary["stopped"] == "custom"
    written = json.loads((tmp_path / "custom" / "summary.json").read_text())
    assert written["stopped"] == "custom" and (tmp_path / "custom" / "report.html").is_file()
    # the steps it did not override are the plain run's: its first two epochs are the plain run's first two
    plain = train(validate_config(resolve_config(sets=TINY), registry), tmp_path / "plain", registry, quiet=True,
                  echo=lambda _m: None)
    assert plain["epochs_run"] == 3
    ours = pd.read_csv(tmp_path / "custom" / "metrics.csv")
    theirs = pd.read_csv(tmp_path / "plain" / "metrics.csv").iloc[:2]
    pd.testing.assert_frame_equal(ours.drop(columns=["lr"]), theirs.drop(columns=["lr"]))
