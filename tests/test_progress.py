"""Long phases report progress in a log (not a terminal): a line with the phase and its counts, none with --quiet."""

from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from clihelp import segkit
from segkit.cli import cli

#: one progress line per item, so a short test sees the lines a long phase prints every 30 s
EVERY_ITEM = {"SEGKIT_PROGRESS_INTERVAL": "0"}


def _quiet(monkeypatch: pytest.MonkeyPatch, *args: str) -> str:
    """Everything ``segkit ARGS --quiet`` prints (in this process: the subprocess runs showed the lines)."""
    monkeypatch.setenv("SEGKIT_PROGRESS_INTERVAL", "0")
    result = CliRunner().invoke(cli, [*args, "--quiet"])
    assert result.exit_code == 0, result.output[-2000:]
    return result.output


def _counts(stderr: str, phase: str) -> list[tuple[int, int]]:
    """The ``(done, total)`` of every progress line of ``phase`` in ``stderr``."""
    pattern = re.compile(rf"^{re.escape(phase)}: (\d+)/(\d+) images \(\d+%\) \[", re.MULTILINE)
    return [(int(done), int(total)) for done, total in pattern.findall(stderr)]


def test_predict_prints_its_progress_in_a_log_and_quiet_silences_it(trained_run: Path, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    rng = np.random.default_rng(0)
    for k in range(5):
        cv2.imwrite(str(inputs / f"case_{k}.png"), rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
    result = segkit("predict", str(trained_run), str(inputs), "--out", str(tmp_path / "out"), "--batch-size", "2",
                    env=EVERY_ITEM)
    assert result.returncode == 0, result.stderr[-2000:]
    counts = _counts(result.stderr, "predict")
    assert counts[0] == (0, 5) and counts[-1] == (5, 5) and (3, 5) in counts, result.stderr
    assert "\r" not in result.stderr  # whole lines, no carriage-return bar
    assert "predict:" not in _quiet(monkeypatch, "predict", str(trained_run), str(inputs), "--out", str(tmp_path / "q"))


def test_evaluate_prints_its_progress_in_a_log_and_quiet_silences_it(trained_run: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    result = segkit("evaluate", str(trained_run), "--split", "val", env=EVERY_ITEM)
    assert result.returncode == 0, result.stderr[-2000:]
    counts = _counts(result.stderr, "evaluate")
    total = counts[-1][1]
    assert total > 2 and counts[0] == (0, total) and counts[-1] == (total, total) and (2, total) in counts
    assert "evaluate:" not in result.stdout  # the report on stdout stays clean
    assert "evaluate:" not in _quiet(monkeypatch, "evaluate", str(trained_run), "--split", "val")


def test_inspect_prints_its_progress_in_a_log_and_quiet_silences_it(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    args = ("inspect", "--set", "count=12", "--set", "size=32", "--out", str(tmp_path / "grid.png"))
    result = segkit(*args, env=EVERY_ITEM)
    assert result.returncode == 0, result.stderr[-2000:]
    counts = _counts(result.stderr, "inspect")
    assert counts[0] == (0, 12) and (7, 12) in counts and counts[-1] == (12, 12), result.stderr
    assert "inspect:" not in _quiet(monkeypatch, *args, "--overwrite")



def test_export_names_each_phase_as_it_starts_and_quiet_silences_it(trained_run: Path, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    result = segkit("export", str(trained_run), "--out", str(tmp_path / "model.pt"))
    assert result.returncode == 0, result.stderr[-2000:]
    phases = [line for line in result.stderr.splitlines() if line.startswith("export: ")]
    assert phases == ["export: tracing the model to TorchScript",
                      f"export: checking {tmp_path / 'model.pt'} against PyTorch at 2 other input sizes"]
    assert "export:" not in _quiet(monkeypatch, "export", str(trained_run), "--out", str(tmp_path / "quiet.pt"))
