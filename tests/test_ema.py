"""train.ema_decay: an exponential moving average of the weights validates, is saved and resumes exactly."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from segkit.cli import cli
from segkit.runs.checkpoint import load_checkpoint
from segkit.train.ema import WeightAverage

TINY = ["run", "--epochs", "2", "--set", "dataset.count=32", "--set", "dataset.size=32", "--set", "model.width=4",
        "--batch-size", "8", "--augment", "none", "--set", "train.ema_decay=0.9", "--quiet"]


def test_the_average_follows_the_weights_at_the_ramped_rate() -> None:
    model = torch.nn.BatchNorm1d(1)
    with torch.no_grad():
        model.weight.fill_(1.0)
    average = WeightAverage(model, decay=0.9)
    expected = 1.0
    for step, value in enumerate([3.0, 5.0, -1.0, 2.0]):
        with torch.no_grad():
            model.weight.fill_(value)
            model.num_batches_tracked.fill_(step + 7)
        keep = min(0.9, (1 + step) / (10 + step))  # 0.1, 0.18, 0.25, ... capped at the decay
        assert average.rate() == pytest.approx(keep)
        average.update(model)
        expected = keep * expected + (1 - keep) * value
        assert average.module.weight.item() == pytest.approx(expected, rel=1e-6)
        assert average.module.num_batches_tracked.item() == step + 7  # integers are copied, not averaged
    assert not average.module.weight.requires_grad and not average.module.training
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        WeightAverage(model, decay=1.0)


def test_validation_and_checkpoints_use_the_average(tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = CliRunner().invoke(cli, [*TINY, "--out", str(out)])
    assert result.exit_code == 0, result.output[-3000:]
    last = load_checkpoint(out / "checkpoints" / "last.pt")
    n_train = sum(row["split"] == "train" for row in csv.DictReader((out / "splits.csv").open()))
    assert last["ema_steps"] == 2 * -(-n_train // 8)  # one update per optimizer step, 2 epochs
    trained, averaged = last["train_model_state"], last["model_state"]
    assert any(not torch.equal(trained[name], averaged[name]) for name in trained if trained[name].is_floating_point())
    # Evaluating the saved weights repeats the trainer's validation: it validated the average, not the raw weights.
    best = json.loads((out / "summary.json").read_text())["best_epoch"]
    row = next(r for r in csv.DictReader((out / "metrics.csv").open()) if int(r["epoch"]) == best)
    report = CliRunner().invoke(cli, ["evaluate", str(out), "--split", "val", "--json", "--quiet"])
    assert report.exit_code == 0, report.output[-3000:]
    assert json.loads(report.stdout)["global"]["dice"] == pytest.approx(float(row["val_dice_global"]), abs=1e-5)


def test_an_impossible_decay_is_refused(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, [*TINY, "--set", "train.ema_decay=1.0", "--out", str(tmp_path / "run")])
    assert result.exit_code != 0 and "train.ema_decay must be 0 (off) or between 0 and 1" in result.output
