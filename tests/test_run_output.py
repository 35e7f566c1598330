"""What a run prints: epoch lines in logs, bars only on a terminal, and a final line even with --quiet."""

from __future__ import annotations

from pathlib import Path

from clihelp import segkit

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
    assert segkit("run", *SMALL, "--epochs", "2", "--out", str(out), "--quiet").returncode == 0
    again = segkit("run", "--resume", str(out))
    assert again.returncode != 0 and f"segkit run --resume {out} --epochs N" in again.stderr
    too_few = segkit("run", "--resume", str(out), "--epochs", "2")
    assert too_few.returncode != 0 and "not more than the 2 epoch(s)" in too_few.stderr
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
