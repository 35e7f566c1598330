"""Runs killed with SIGKILL at the moments that once lost them, then resumed: nothing lost, the same results.

A plugin kills its own process (``os.kill(getpid(), SIGKILL)``, what ``kill -9`` sends) at an exact
point: while a 3D run builds its volume cache, or after a run's last checkpoint and before its
summary.json. The run is then resumed with ``segkit run --resume`` in a new process.
"""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import pytest

from clihelp import run_in_process, segkit, write_plugin
from volumes import write_msd

KILLER = '''
import os
import signal
import traceback

from segkit import hookimpl
from segkit_builtins.datasets.msd import MSDDataset


@hookimpl
def segkit_components():
    return [{"kind": "dataset", "name": "killable_msd", "target": "segkit_local_plugin_killer:KillableMSD",
             "summary": "msd, killed (SIGKILL) when the volume cache reads an image if KILL_IN_CACHE is set"}]


@hookimpl
def segkit_checkpoint_saved(kind, epoch):
    if kind == "last" and os.environ.get("KILL_AFTER_LAST") == str(epoch):
        os.kill(os.getpid(), signal.SIGKILL)


class KillableMSD(MSDDataset):
    def read_image(self, paths):
        building = any(frame.filename.endswith("volume_cache.py") for frame in traceback.extract_stack())
        if building and os.environ.get("KILL_IN_CACHE"):
            os.kill(os.getpid(), signal.SIGKILL)
        return super().read_image(paths)
'''

TINY_3D = ("--model", "unet3d", "--set", "model.width=4", "--set", "model.stages=3", "--loss", "ce_dice",
           "--set", "train.patch_size=[16,16,8]", "--batch-size", "2", "--device", "cpu", "--quiet")


@pytest.fixture()
def killer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The killing plugin, and a private volume cache for this test (in this process and its subprocesses)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return write_plugin(tmp_path, "killer", KILLER)


def _run_3d(killer: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return segkit("-p", str(killer), "run", *args, env=env)


def _in_process(*args: str) -> tuple[int, str]:
    """``segkit ARGS`` in this process: exit status and output (for refusals, which import nothing heavy)."""
    from click.testing import CliRunner

    from segkit.cli import cli

    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.output


def test_a_3d_run_killed_in_its_cache_build_and_after_its_last_checkpoint_ends_as_if_never_killed(
        killer: Path, tmp_path: Path) -> None:
    root = write_msd(tmp_path / "data", cases=4, shape=(20, 24, 12))
    settings = ("--dataset", "killable_msd", "--data-root", str(root), *TINY_3D, "--epochs", "2")
    reference = tmp_path / "reference"
    run_in_process("-p", str(killer), "run", *settings, "--out", str(reference))
    (tmp_path / "cache").rename(tmp_path / "reference-cache")  # the killed run builds its own volume cache

    killed = tmp_path / "killed"  # 1. killed while it builds its volume cache
    assert _run_3d(killer, *settings, "--out", str(killed), env={"KILL_IN_CACHE": "1"}).returncode == -signal.SIGKILL
    assert (killed / "config.toml").is_file() and (killed / "splits.csv").is_file()  # what --resume needs
    assert not (killed / "checkpoints" / "last.pt").exists()

    # 2. resumed, and killed again after its last checkpoint, before its summary
    resumed = _run_3d(killer, "--resume", str(killed), env={"KILL_AFTER_LAST": "2"})
    assert resumed.returncode == -signal.SIGKILL, resumed.stderr[-3000:]
    assert "stopped before its first checkpoint" in resumed.stderr
    assert (killed / "metrics.csv").read_text() == (reference / "metrics.csv").read_text()
    assert (killed / "splits.csv").read_text() == (reference / "splits.csv").read_text()
    assert not (killed / "summary.json").exists()

    ended = _run_3d(killer, "--resume", str(killed))  # 3. resumed: writes the ending, trains nothing
    assert ended.returncode == 0, ended.stderr[-3000:]
    assert "finished training (2 epochs) but was stopped before its summary" in ended.stderr
    assert (killed / "metrics.csv").read_text() == (reference / "metrics.csv").read_text()
    summary, expected = (json.loads((run / "summary.json").read_text()) for run in (killed, reference))
    for key in ("headline", "best_per_case", "best_global", "epochs_run", "stopped", "lesion_slices"):
        assert summary[key] == expected[key], key
    for name in ("report.html", "curves.png", "predictions.png", "evaluation/training-val-per-case.csv"):
        assert (killed / name).is_file(), name


def test_a_run_killed_before_it_wrote_anything_is_named_as_such_on_resume(tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / ".segkit.lock").write_text('{"pid": 1}\n')  # all a run leaves when killed while reading its data
    status, output = _in_process("run", "--resume", str(out))
    assert status == 2 and "holds no run to resume" in output and f"--out {out}" in output


def test_a_run_refused_while_it_prepares_its_data_leaves_nothing(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """config.toml and splits.csv are written before the volume cache; a refusal after them removes them."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    root = write_msd(tmp_path / "data", cases=4, shape=(20, 24, 12))
    out = tmp_path / "run"
    status, output = _in_process("run", "--dataset", "msd", "--data-root", str(root), *TINY_3D, "--epochs", "1",
                                 "--set", "train.patch_size=[32,32,32]", "--out", str(out))
    assert status == 2 and "patch" in output, output[-2000:]
    assert not out.exists()


def test_an_ending_without_best_pt_is_refused_with_what_to_do(tmp_path: Path) -> None:
    from segkit.errors import CheckpointError
    from segkit.runs.rundir import RunDirectory, ended_without_summary

    run = RunDirectory(tmp_path)
    assert not ended_without_summary(run, {"epoch": 1, "finished": False}, 3)  # still training: resumed as usual
    with pytest.raises(CheckpointError, match="best.pt is missing or damaged.*--resume .* --epochs N"):
        ended_without_summary(run, {"epoch": 3, "finished": True}, 3)
    (tmp_path / "summary.json").write_text("{}")
    assert not ended_without_summary(run, {"epoch": 3, "finished": True}, 3)  # ended: 'already finished'
