"""Results are named by what produced them and marked when the model saw the cases; killed writers leave nothing.

Through the real CLI (click's CliRunner in this process), on conftest's trained_run.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from conftest import clone_run
from segkit.cli import cli


def evaluate(*args: str) -> dict:
    result = CliRunner().invoke(cli, ["evaluate", *args, "--json", "--quiet"])
    assert result.exit_code == 0, result.output[-2000:]
    return json.loads(result.stdout)


def test_another_runs_checkpoint_does_not_replace_this_runs_scores(trained_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(trained_run, run, ignore=shutil.ignore_patterns("evaluation"))
    other = clone_run(trained_run, tmp_path / "other" / "run", seed=5)
    own = evaluate(str(run), "--checkpoint", "last")
    foreign = evaluate(str(run), "--checkpoint", str(other / "checkpoints" / "last.pt"))
    assert Path(own["per_case_csv"]).name == "test-last-per-case.csv"
    assert foreign["per_case_csv"] != own["per_case_csv"]
    assert Path(foreign["per_case_csv"]).name.startswith("test-last-")
    assert Path(own["per_case_csv"]).is_file() and Path(foreign["per_case_csv"]).is_file()
    # the run's own checkpoint named by its path is the same result as --checkpoint last
    again = evaluate(str(run), "--checkpoint", str(run / "checkpoints" / "last.pt"))
    assert again["per_case_csv"] == own["per_case_csv"]


def test_resume_removes_temporary_files_of_killed_writers(trained_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    stale = run / "checkpoints" / f".last.pt.tmp-{dead_pid}"
    stale.write_bytes(b"")  # what a SIGKILL during a checkpoint write leaves
    stale_top = run / f".metrics.csv.tmp-{dead_pid}"
    stale_top.write_text("epoch\n")
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        live = run / "evaluation" / f".test-per-case.csv.tmp-{alive.pid}"
        live.parent.mkdir(exist_ok=True)
        live.write_text("being written")
        result = CliRunner().invoke(cli, ["run", "--resume", str(run), "--epochs", "2", "--quiet"])
        assert result.exit_code == 0, result.output[-2000:]
        assert not stale.exists() and not stale_top.exists()
        assert live.exists()  # its writer still runs
    finally:
        alive.kill()
        alive.wait()


def test_scores_on_cases_the_run_trained_on_are_marked(trained_run: Path) -> None:
    report = evaluate(str(trained_run), "--split", "all")
    assert report["trained_on"] and report["trained_on"][0]["run"] == str(trained_run)
    assert report["trained_on"][0]["cases"] < report["trained_on"][0]["of"]
    result = CliRunner().invoke(cli, ["evaluate", str(trained_run), "--split", "train", "--quiet"])
    assert result.exit_code == 0
    assert "NOT UNSEEN DATA" in result.stdout and "so these scores are optimistic" in result.stderr
    held_out = evaluate(str(trained_run))  # the test split: cases it never trained on
    assert held_out["trained_on"] == []
