"""What a run prints: epoch lines in logs, bars only on a terminal, and a final line even with --quiet."""

from __future__ import annotations

from pathlib import Path

from clihelp import run_in_process, segkit

SMALL = ["--dataset", "synthetic", "--set", "dataset.count=32", "--set", "dataset.size=32", "--set", "model.width=4",
         "--batch-size", "8"]


def test_a_log_gets_epoch_lines_without_bars_and_quiet_keeps_the_final_line(tmp_path: Path) -> None:
    logged = segkit("run", *SMALL, "--epochs", "2", "--out", str(tmp_path / "a"))  # stderr is a pipe here
    assert logged.returncode == 0, logged.stderr[-3000:]
    assert "\r" not in logged.stderr and "it/s" not in logged.stderr and "batch/s" not in logged.stderr
    assert "epoch 1/2" in logged.stderr and "epoch 2/2" in logged.stderr
    quiet = segkit("run", *SMALL, "--epochs", "1", "--out", str(tmp_path / "b"), "--quiet")
    assert quiet.returncode == 0
    lines = quiet.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("best val_") and str(tmp_path / "b") in lines[0]


def test_resume_with_epochs_extends_a_finished_run(tmp_path: Path) -> None:
    import csv

    from segkit.tomlio import read_toml

    out = tmp_path / "run"
    run_in_process("run", *SMALL, "--epochs", "2", "--out", str(out), "--quiet")
    from click.testing import CliRunner

    from segkit.cli import cli

    again = CliRunner().invoke(cli, ["run", "--resume", str(out)])  # in-process: refused before training
    assert again.exit_code != 0 and f"segkit run --resume {out} --epochs N" in again.output
    too_few = CliRunner().invoke(cli, ["run", "--resume", str(out), "--epochs", "2"])
    assert too_few.exit_code != 0 and "not more than the 2 epoch(s)" in too_few.output
    extended = segkit("run", "--resume", str(out), "--epochs", "4")
    assert extended.returncode == 0, extended.stderr[-3000:]
    assert "resuming" in extended.stderr and "extended" in extended.stderr
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4]
    # the cosine schedule was stretched to end after epoch 4: epoch 3 starts at its middle (half the base rate,
    # where the old 2-epoch schedule had reached 0), and epoch 4 is lower again
    rates = [float(r["lr"]) for r in rows]
    assert abs(rates[2] - 0.5e-3) < 1e-9 and 0 < rates[3] < rates[2]
    assert read_toml(out / "config.toml")["train"]["epochs"] == 4


def test_plots_a_reader_understands(tmp_path: Path) -> None:
    import cv2
    import numpy as np

    from segkit.figures.plots import error_overlay, plot_curves, slice_dice

    truth = np.zeros((8, 8), bool)
    truth[2:6, 2:6] = True
    prediction = np.zeros((8, 8), bool)
    prediction[4:8, 4:8] = True
    assert slice_dice(truth, prediction) == 2 * 4 / (16 + 16)
    assert slice_dice(np.zeros((4, 4), bool), np.zeros((4, 4), bool)) == 1.0
    picture = error_overlay(np.zeros((8, 8, 3), np.float32), truth, prediction)
    tp, fp, fn, tn = picture[4, 4], picture[7, 7], picture[2, 2], picture[0, 0]
    assert len({tuple(np.round(c, 3)) for c in (tp, fp, fn, tn)}) == 4  # four distinct colours
    assert fp[0] > fp[2] and fn[2] > fn[0] and tp[1] > tp[2]  # red, blue, yellow
    rows = [{"epoch": e, "train_loss": 1 / e, "val_loss": 1.2 / e, "val_dice": 0.1 * e, "val_dice_case": 0.09 * e}
            for e in range(1, 4)]
    plot_curves(rows, ["dice"], tmp_path / "curves.png", monitor="val_dice_case", best_epoch=3)
    assert cv2.imread(str(tmp_path / "curves.png")) is not None


def test_predictions_show_several_patients_and_empty_slices() -> None:
    import pandas as pd

    from segkit.figures.plots import sample_positions

    # patient a: 10 lesion slices, b: 2, c: 1, then 5 empty slices
    cases = ["a"] * 10 + ["b"] * 2 + ["c"] + ["d"] * 5
    index = pd.DataFrame({"item": [f"s{i}" for i in range(18)], "case": cases,
                          "has_lesion": [True] * 13 + [False] * 5})
    chosen = sample_positions(index, count=6)
    assert len(chosen) == 6
    assert {cases[i] for i in chosen[:3]} == {"a", "b", "c"}  # every patient before a second slice of any
    assert chosen[0] == 5  # patient a's middle lesion slice
    assert sum(not index["has_lesion"][i] for i in chosen) == 2  # two empty slices close the row
