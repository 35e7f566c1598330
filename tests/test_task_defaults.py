"""Defaults that follow the data: the task's loss, no threshold for argmax, and which limit sets the epochs."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner

from segkit.cli import cli
from segkit.train.schedule import budget_message

TINY = ["--set", "dataset.count=48", "--set", "dataset.size=32", "--set", "dataset.slices_per_case=4",
        "--set", "model.width=8", "--batch-size", "8", "--augment", "none", "--epochs", "1", "--quiet"]


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args))


@pytest.fixture(scope="module")
def multiclass_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three label values and no --loss: the run picks ce_dice itself."""
    out = tmp_path_factory.mktemp("auto_loss") / "run"
    result = invoke("run", *TINY, "--set", "dataset.classes=3", "--set", "loss.dice_weight=2.0", "--out", str(out))
    assert result.exit_code == 0, result.output[-3000:]
    return out


def test_several_labels_without_a_loss_train_with_the_task_loss(multiclass_run: Path) -> None:
    loss = tomllib.loads((multiclass_run / "config.toml").read_text())["loss"]
    assert loss["name"] == "ce_dice" and loss["mode"] == "multiclass" and loss["dice_weight"] == 2.0


def test_binary_data_without_a_loss_train_with_bce_dice(trained_run: Path) -> None:
    assert tomllib.loads((trained_run / "config.toml").read_text())["loss"]["name"] == "bce_dice"


def test_a_binary_loss_chosen_by_hand_is_still_refused_on_several_labels(tmp_path: Path) -> None:
    result = invoke("run", *TINY, "--set", "dataset.classes=3", "--loss", "bce_dice", "--out", str(tmp_path / "r"))
    assert result.exit_code == 2 and "loss 'bce_dice' is binary only" in result.output


def test_a_misspelt_key_of_the_automatic_loss_is_refused(tmp_path: Path) -> None:
    result = invoke("run", *TINY, "--set", "loss.dice_wieght=2", "--out", str(tmp_path / "r"))
    assert result.exit_code == 2 and "Did you mean 'dice_weight'" in result.output
    assert not (tmp_path / "r").exists()


def test_a_key_the_chosen_loss_does_not_take_is_refused_before_training(tmp_path: Path) -> None:
    # bce_weight belongs to bce_dice; three labels make the loss ce_dice, which has no such parameter
    result = invoke("run", *TINY, "--set", "dataset.classes=3", "--set", "loss.bce_weight=2",
                    "--out", str(tmp_path / "r"))
    assert result.exit_code == 2 and "loss 'ce_dice'" in result.output and "bce_weight" in result.output
    assert not (tmp_path / "r" / "metrics.csv").exists()


def test_evaluate_of_a_multiclass_run_prints_no_threshold(multiclass_run: Path) -> None:
    result = invoke("evaluate", str(multiclass_run))
    assert result.exit_code == 0, result.output[-3000:]
    assert "argmax" in result.output and "threshold" not in result.output
    report = json.loads(invoke("evaluate", str(multiclass_run), "--json").stdout)  # progress lines go to stderr
    assert report["decision"] == "argmax"


def test_evaluate_refuses_a_threshold_a_multiclass_run_does_not_use(multiclass_run: Path) -> None:
    result = invoke("evaluate", str(multiclass_run), "--threshold", "0.3")
    assert result.exit_code == 2 and "argmax" in result.output


def test_evaluate_of_a_binary_run_prints_its_threshold(trained_run: Path) -> None:
    result = invoke("evaluate", str(trained_run))
    assert result.exit_code == 0, result.output[-3000:]
    assert "threshold 0.5" in result.output and "argmax" not in result.output


def test_the_budget_message_says_the_budget_decided() -> None:
    message = budget_message(15, 1, 60.0, planned=14, max_epochs=40, fits=14)
    assert "the budget decides" in message and "14 of train.epochs = 40" in message


def test_the_budget_message_says_the_epochs_decided() -> None:
    message = budget_message(15, 1, 6.0, planned=40, max_epochs=40, fits=145)
    assert "train.epochs = 40 decides" in message and "holds about 145 epochs" in message
    assert "ends with the budget" not in message
