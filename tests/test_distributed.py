"""Data-parallel training: two CPU processes (gloo) through the real CLI against one process."""

from __future__ import annotations

import contextlib
import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from clihelp import run_in_process, segkit
from segkit.runs.checkpoint import load_checkpoint
from segkit.train.launch import launch_arguments, strip_option

#: BCE is a mean over pixels, so two shards of 4 average to exactly the loss and gradient of one batch of 8
#: (the tutorial's batch-level soft Dice is not; see docs/distributed.md). lr 0.01 so the losses move. No batch
#: norm (the default run has it): its statistics are each process's own, so two shards would not equal one batch.
RUN = ["--set", "dataset.count=96", "--set", "dataset.size=32", "--set", "model.width=8",
       "--set", "model.batch_norm=false", "--loss", "bce",
       "--lr", "0.01", "--epochs", "3", "--quiet"]
TWO_PROCESSES = [*RUN, "--batch-size", "4"]


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (Linux)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def metric_rows(run: Path) -> list[dict[str, str]]:
    with (run / "metrics.csv").open() as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def single_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("single") / "run"
    run_in_process("run", *RUN, "--batch-size", "8", "--out", str(out))  # the reference: no process of its own
    return out


@pytest.fixture(scope="module")
def launched_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("launched") / "run"
    result = segkit("run", *TWO_PROCESSES, "--nproc-per-node", "2", "--out", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def test_two_processes_match_one_process_with_the_same_global_batch(single_run: Path, launched_run: Path) -> None:
    one, two = metric_rows(single_run), metric_rows(launched_run)
    assert [row["epoch"] for row in two] == ["1", "2", "3"]
    # the warm-up takes at most a tenth of the run, so epoch 1 already learns; the loss still falls by a third
    assert float(one[-1]["train_loss"]) < 0.67 * float(one[0]["train_loss"]), "the runs should actually learn"
    for a, b in zip(one, two, strict=True):
        for column in a:
            if column.endswith("loss"):  # written with 6 significant digits
                assert float(b[column]) == pytest.approx(float(a[column]), rel=2e-5), (a["epoch"], column)
            else:
                assert float(b[column]) == pytest.approx(float(a[column]), abs=1e-6), (a["epoch"], column)
    summary = json.loads((launched_run / "summary.json").read_text())
    assert summary["processes"] == 2 and summary["global_batch_size"] == 8
    assert summary["best_epoch"] == json.loads((single_run / "summary.json").read_text())["best_epoch"]


def test_rank_zero_alone_writes_the_run_directory(launched_run: Path) -> None:
    assert sorted(p.name for p in launched_run.iterdir()) == [
        ".segkit.lock", "checkpoints", "config.toml", "curves.png", "metrics.csv", "predictions.png", "report.html",
        "splits.csv", "summary.json", "timing.csv"]  # the per-patient table and cases.png are single-process only
    assert sorted(p.name for p in (launched_run / "checkpoints").iterdir()) == ["best.pt", "last.pt"]
    assert len(metric_rows(launched_run)) == 3
    assert (launched_run / "config.toml").read_text().count("[train]") == 1
    last = load_checkpoint(launched_run / "checkpoints" / "last.pt")
    assert last["finished"] and last["epoch"] == 3 and last["world_size"] == 2


def test_torchrun_launch_killed_then_resumed_matches_an_uninterrupted_run(launched_run: Path, tmp_path: Path) -> None:
    killed = tmp_path / "killed"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               "-m", "segkit", "run", *TWO_PROCESSES, "--out", str(killed)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                               env={**os.environ, "OMP_NUM_THREADS": "1"})
    metrics = killed / "metrics.csv"
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and process.poll() is None:
            if metrics.is_file() and len(metrics.read_text().splitlines()) >= 2:  # header + epoch 1
                break
            time.sleep(0.02)
        assert process.poll() is None, "the run ended before it could be killed; make RUN longer"
    finally:  # torchrun starts each worker in a session of its own: kill them as well as the launcher
        workers = children(process.pid)
        for pid in [process.pid, *workers]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        process.wait()
    assert len(workers) == 2
    gone = time.monotonic() + 30
    while time.monotonic() < gone and any(Path(f"/proc/{pid}").exists() for pid in workers):
        time.sleep(0.02)
    assert 2 <= len(metrics.read_text().splitlines()) < 4, "killed after epoch 1 and before the end"
    assert not load_checkpoint(killed / "checkpoints" / "last.pt")["finished"]

    resumed = segkit("run", "--resume", str(killed), "--nproc-per-node", "2", "--quiet")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert metrics.read_text() == (launched_run / "metrics.csv").read_text()


#: A 3D run whose global batch of 4 patches two processes split 2 + 2: instance norm is per patch, cross-entropy
#: a mean over voxels and patches are drawn from (seed, index), so the shards sum to the one-process batch; no
#: augmentation (each process would draw its own) and no deep supervision (one loss to compare). One validation
#: volume: the second process scores none (its empty share once dropped every case id: KeyError 'val_dice_case').
VOLUME_RUN = ["--dataset", "msd", "--model", "unet3d", "--set", "model.width=4", "--set", "model.stages=3",
              "--set", "model.deep_supervision=false", "--loss", "ce", "--set", "train.patch_size=[16,16,8]",
              "--set", 'train.augment="none"', "--set", "train.patches_per_epoch=8", "--set", "train.window_overlap=0.25",
              "--set", "split.val_fraction=0.2", "--set", "split.test_fraction=0", "--lr", "0.01", "--epochs", "2",
              "--device", "cpu", "--quiet"]


def test_a_3d_run_on_two_processes_matches_one_process_with_the_same_global_batch(tmp_path: Path) -> None:
    from volumes import write_msd

    root = write_msd(tmp_path / "data", cases=5, shape=(20, 24, 12))
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache")}
    one, two = tmp_path / "one", tmp_path / "two"
    run_in_process("run", "--data-root", str(root), *VOLUME_RUN, "--batch-size", "4", "--out", str(one), env=env)
    result = segkit("run", "--data-root", str(root), *VOLUME_RUN, "--batch-size", "2", "--nproc-per-node", "2",
                    "--out", str(two), env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    rows_one, rows_two = metric_rows(one), metric_rows(two)
    assert [row["epoch"] for row in rows_two] == ["1", "2"]
    assert float(rows_one[-1]["train_loss"]) < float(rows_one[0]["train_loss"]), "the runs should actually learn"
    for a, b in zip(rows_one, rows_two, strict=True):
        assert a.keys() == b.keys()
        for column in a:  # the processes' validation shares (one volume, none) are gathered
            tolerance = {"rel": 2e-5} if column.endswith("loss") else {"abs": 1e-5}
            assert float(b[column]) == pytest.approx(float(a[column]), **tolerance), (a["epoch"], column)
    summary = json.loads((two / "summary.json").read_text())
    assert summary["processes"] == 2 and summary["global_batch_size"] == 4
    assert "val_dice_case" in rows_two[0] and summary["monitor"] == "val_dice_case"


def test_launcher_refuses_a_taken_run_directory_before_starting_processes(launched_run: Path) -> None:
    result = segkit("run", *TWO_PROCESSES, "--nproc-per-node", "2", "--out", str(launched_run))
    assert result.returncode == 2 and "already holds a run" in result.stderr
    assert "Traceback" not in result.stderr


def test_launcher_passes_the_same_arguments_to_torchrun() -> None:
    args = strip_option(["--epochs", "2", "--nproc-per-node", "4", "--nproc-per-node=4", "--quiet"], "--nproc-per-node")
    assert args == ["--epochs", "2", "--quiet"]
    assert launch_arguments(4, args, plugins=["my.py"]) == [
        "--standalone", "--nproc-per-node", "4", "-m", "segkit", "-p", "my.py", "run", "--epochs", "2", "--quiet"]
