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
