"""Bad files and careless paths through the real CLI: a clear error, no traceback, no input or work lost."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from click.testing import CliRunner

from segkit.cli import cli
from segkit.tomlio import read_toml

from clihelp import kill_run_after, run_in_process, segkit, segkit_here


def _write_folder(root: Path, count: int = 8) -> None:
    """A tiny folder dataset: count 32x32 RGB PNG images with bright square lesions, two cases."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    for i in range(count):
        image = rng.integers(20, 60, (32, 32, 3), dtype=np.uint8)
        mask = np.zeros((32, 32), np.uint8)
        if i % 2:
            mask[8:16, 10:20] = 255
            image[mask > 0] = 200
        cv2.imwrite(str(root / "images" / f"p{i % 2}_{i}.png"), image)
        cv2.imwrite(str(root / "masks" / f"p{i % 2}_{i}.png"), mask)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 1-epoch run of a width-4 tutorial U-Net on a folder dataset given by a *relative* --data-root."""
    base = tmp_path_factory.mktemp("hardening")
    _write_folder(base / "data")
    result = segkit("run", "--dataset", "folder", "--data-root", "data", "--set", "model.width=4", "--epochs", "1",
                    "--batch-size", "4", "--set", "split.test_fraction=0", "--out", "run", "--quiet", cwd=base)
    assert result.returncode == 0, result.stderr[-3000:]
    return base / "run"


def test_a_relative_data_root_is_stored_absolute(tiny_run: Path, tmp_path: Path) -> None:
    root = read_toml(tiny_run / "config.toml")["dataset"]["root"]
    assert Path(root).is_absolute() and Path(root) == tiny_run.parent / "data"
    # so evaluate works from any other folder
    result = segkit("evaluate", str(tiny_run), "--split", "val", "--quiet", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]


def test_an_emptied_run_config_is_named_not_a_key_error(tiny_run: Path, tmp_path: Path) -> None:
    """An empty config.toml once gave evaluate "KeyError: 'dataset'", and resume trained the default run instead."""
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    before = sorted(p.name for p in run.rglob("*"))
    for text, expected in (("", f"{run / 'config.toml'} is empty; a run's config.toml names its model, loss and "
                                "dataset"),
                           ("[train]\nepochs = 1\n", "lacks [model], [loss], [dataset], [task], [metrics], [split]")):
        (run / "config.toml").write_text(text)
        for args in (["evaluate", str(run), "--split", "val", "--quiet"], ["run", "--resume", str(run), "--quiet"]):
            result = CliRunner().invoke(cli, args)
            assert result.exit_code == 2, result.output[-2000:]
            lines = result.output.strip().splitlines()
            assert len(lines) == 1 and "Traceback" not in result.output, result.output
            assert expected in lines[0] and "each checkpoint of the run holds the same configuration" in lines[0]
    assert sorted(p.name for p in run.rglob("*")) == before  # nothing written


def test_a_damaged_checkpoint_is_one_clear_error_everywhere(tiny_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    best = run / "checkpoints" / "best.pt"
    best.write_bytes(b"")
    images = tiny_run.parent / "data" / "images"
    for args in (["evaluate", str(run)], ["predict", str(run), str(images), "--out", str(tmp_path / "p")],
                 ["export", str(run), "--format", "torchscript", "--out", str(tmp_path / "m.ts")]):
        result = segkit_here(*args)
        assert result.returncode != 0, args
        assert "Traceback" not in result.stderr, result.stderr[-3000:]
        assert "is empty (0 bytes)" in result.stderr and "best.pt" in result.stderr and "--checkpoint" in result.stderr
    best.write_bytes((tiny_run / "checkpoints" / "best.pt").read_bytes()[:3000])  # truncated
    result = segkit_here("evaluate", str(run))
    assert result.returncode != 0 and "Traceback" not in result.stderr and "truncated or corrupt" in result.stderr
    # the other checkpoint still works, as the message says
    run_in_process("evaluate", str(run), "--checkpoint", "last", "--split", "val", "--quiet")


def test_predict_never_writes_over_its_inputs(tiny_run: Path, tmp_path: Path) -> None:
    images = tmp_path / "scans"
    shutil.copytree(tiny_run.parent / "data" / "images", images)
    before = {p.name: p.read_bytes() for p in images.iterdir()}
    result = segkit("predict", str(tiny_run), str(images), "--out", str(images), "--overwrite")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "would replace an input image" in result.stderr and "choose another --out" in result.stderr
    assert {p.name: p.read_bytes() for p in images.iterdir()} == before  # nothing written, nothing replaced
    # another folder is fine
    run_in_process("predict", str(tiny_run), str(images), "--out", str(tmp_path / "masks"), "--quiet")


# --- one writer, and runs that stop early -------------------------------------------------------------------

SMALL = ["--dataset", "synthetic", "--set", "dataset.count=32", "--set", "dataset.size=32", "--set", "model.width=4",
         "--batch-size", "8"]


def test_a_second_writer_is_refused_and_a_dead_writers_lock_is_taken_over(tmp_path: Path) -> None:
    out = tmp_path / "run"
    first = subprocess.Popen([sys.executable, "-m", "segkit", "run", *SMALL, "--epochs", "200", "--set",
                              "train.max_minutes=3", "--out", str(out), "--quiet"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not (out / "metrics.csv").is_file() and time.monotonic() < deadline and first.poll() is None:
            time.sleep(0.05)
        assert first.poll() is None, "the first run ended before the test could start a second writer"
        second = segkit("run", "--resume", str(out))
        assert second.returncode != 0 and "Traceback" not in second.stderr
        assert f"is in use: process {first.pid} on " in second.stderr and "one writer" in second.stderr
        assert first.poll() is None, "the first run ended by itself; the test needs it killed while it holds the lock"
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    # the kernel dropped the dead process's lock: a resume takes it over and trains on
    done = len((out / "metrics.csv").read_text().splitlines())
    resumed = subprocess.Popen([sys.executable, "-m", "segkit", "run", "--resume", str(out), "--quiet"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while len((out / "metrics.csv").read_text().splitlines()) <= done and time.monotonic() < deadline \
                and resumed.poll() is None:
            time.sleep(0.05)
        assert len((out / "metrics.csv").read_text().splitlines()) > done, resumed.stderr.read() if resumed.poll() \
            is not None else "the resumed run trained no epoch in 2 minutes"
    finally:
        resumed.send_signal(signal.SIGKILL)
        resumed.wait()


def test_a_run_that_fails_before_its_first_epoch_does_not_block_a_retry(tmp_path: Path) -> None:
    _write_folder(tmp_path / "data")
    bad = tmp_path / "data" / "images" / "p0_0.png"
    good = bad.read_bytes()
    bad.write_bytes(b"not a png at all")
    args = ["run", "--dataset", "folder", "--data-root", str(tmp_path / "data"), "--set", "model.width=4",
            "--epochs", "1", "--batch-size", "4", "--out", str(tmp_path / "run"), "--quiet"]
    failed = segkit(*args)
    assert failed.returncode != 0 and "Traceback" not in failed.stderr and "p0_0.png" in failed.stderr
    bad.write_bytes(good)  # the user fixes the file and runs the same command again
    retry = segkit(*args)
    assert retry.returncode == 0, retry.stderr[-3000:]
    assert (tmp_path / "run" / "summary.json").is_file()


def test_a_run_that_fails_before_writing_anything_leaves_no_directory(tmp_path: Path) -> None:
    failed = segkit("run", *SMALL, "--set", "model.width=0", "--epochs", "1", "--out", str(tmp_path / "run"))
    assert failed.returncode != 0 and "Traceback" not in failed.stderr, failed.stderr[-2000:]
    assert "width must be an integer >= 1, got 0" in failed.stderr
    assert not (tmp_path / "run").exists()


def test_resume_survives_a_lost_best_checkpoint(tmp_path: Path) -> None:
    out = tmp_path / "run"
    kill_run_after([*SMALL, "--epochs", "6", "--quiet"], out, epochs=2)
    (out / "checkpoints" / "best.pt").unlink()
    resumed = segkit("run", "--resume", str(out))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "best.pt is missing or damaged" in resumed.stderr
    assert (out / "summary.json").is_file() and (out / "checkpoints" / "best.pt").is_file()


# --- read-only and full file systems (a private mount namespace: unshare -rm) -----------------------------------

def _namespace_or_skip() -> None:
    """Skip unless this machine lets an unprivileged user make private mounts (unshare -rm)."""
    if shutil.which("unshare") is None:
        pytest.skip("unshare (util-linux) is not installed, so no read-only or full file system can be made")
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs tmpfs /mnt 2>/dev/null || "
                            "mount -t tmpfs tmpfs /tmp"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"this machine does not allow private mounts (unshare -rm): {probe.stderr.strip()[:200]}")


def _segkit_in_namespace(mounts: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``segkit ARGS`` after the shell commands ``mounts``, in a private user and mount namespace."""
    command = " ".join(f"'{a}'" for a in [sys.executable, "-m", "segkit", *args])
    return subprocess.run(["unshare", "-rm", "sh", "-c", f"{mounts} && exec {command}"], capture_output=True,
                          text=True, timeout=300)


def test_evaluate_on_a_read_only_run_prints_its_scores_then_one_error(tiny_run: Path, tmp_path: Path) -> None:
    _namespace_or_skip()
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    shutil.rmtree(run / "evaluation", ignore_errors=True)
    result = _segkit_in_namespace(f"mount --bind {run} {run} && mount -o remount,bind,ro {run}",
                                  "evaluate", str(run), "--split", "val", "--quiet")
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert "dice" in result.stdout and "per-case" in result.stdout  # the scores came first
    assert "the per-case scores were not saved" in result.stderr and "Read-only file system" in result.stderr
    assert str(run) in result.stderr


def test_a_full_disk_is_one_clear_error_and_leaves_no_temporary_files(tmp_path: Path) -> None:
    _namespace_or_skip()
    disk = tmp_path / "disk"
    disk.mkdir()
    check = f"; ls -A {disk}/run {disk}/run/checkpoints"
    result = subprocess.run(
        ["unshare", "-rm", "sh", "-c",
         f"mount -t tmpfs -o size=48k tmpfs {disk} && {sys.executable} -m segkit run --dataset synthetic "
         f"--set dataset.count=32 --set dataset.size=32 --epochs 1 --out {disk}/run --quiet; echo rc=$? {check}"],
        capture_output=True, text=True, timeout=300)
    assert "rc=1" in result.stdout and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert "No space left on device" in result.stderr and f"{disk}/run" in result.stderr
    assert ".tmp-" not in result.stdout  # the listing of the full disk: no temporary file stayed


def test_inspect_writes_where_out_says_and_never_over_an_existing_file(tmp_path: Path) -> None:
    precious = tmp_path / "synthetic-samples.png"
    precious.write_bytes(b"the user's own file")
    args = ("inspect", "--set", "count=16", "--set", "size=32")
    unasked = segkit_here(*args, cwd=tmp_path)  # no --out: the summary only, nothing written
    assert unasked.returncode == 0 and "16 images" in unasked.stdout and "not drawn" in unasked.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["synthetic-samples.png"]
    refused = segkit_here(*args, "--out", str(precious), cwd=tmp_path)
    assert refused.returncode != 0 and "Traceback" not in refused.stderr
    assert "already exists" in refused.stderr and "--overwrite" in refused.stderr
    assert precious.read_bytes() == b"the user's own file"
    written = segkit_here(*args, "--out", str(tmp_path / "grids" / "g.png"), cwd=tmp_path)
    assert written.returncode == 0, written.stderr[-2000:]
    assert (tmp_path / "grids" / "g.png").stat().st_size > 1000 and "16 images" in written.stdout
    replaced = segkit_here(*args, "--out", str(precious), "--overwrite", cwd=tmp_path)
    assert replaced.returncode == 0 and precious.read_bytes()[:4] == b"\x89PNG"


def test_an_empty_or_broken_onnx_file_is_named_as_such(tiny_run: Path, tmp_path: Path) -> None:
    pytest.importorskip("onnx")
    images = tiny_run.parent / "data" / "images"
    (tmp_path / "empty.onnx").write_bytes(b"")
    (tmp_path / "broken.onnx").write_bytes(b"\x08\x07garbage")
    for name, expected in (("empty.onnx", "is empty (0 bytes)"), ("broken.onnx", "truncated or corrupt")):
        result = CliRunner().invoke(cli, ["predict", str(tmp_path / name), str(images), "--out",
                                          str(tmp_path / name[:-5])])
        assert result.exit_code == 2 and isinstance(result.exception, SystemExit), result.output[-2000:]
        assert expected in result.output and "segkit export" in result.output


def test_fold_without_folds_is_an_error_not_a_silent_single_split(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["run", *SMALL, "--fold", "1", "--epochs", "1", "--out", str(tmp_path / "run")])
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit), result.output[-2000:]
    assert "--fold 1" in result.output and "--folds K" in result.output
    assert not (tmp_path / "run").exists()


# --- the data check before training ---------------------------------------------------------------------------

def test_every_bad_item_is_listed_before_training_and_a_passed_check_is_remembered(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from segkit.data.verify import verify_dataset
    from segkit.components.registry import get_registry

    cache = tmp_path / "cache"
    monkeypatch.setenv("SEGKIT_CACHE_DIR", str(cache))
    data = tmp_path / "data"
    _write_folder(data, count=12)
    (data / "images" / "p0_2.png").write_bytes(b"not an image")                       # undecodable
    cv2.imwrite(str(data / "masks" / "p1_5.png"), np.full((32, 32), 7, np.uint8))     # mask values 0/7
    cv2.imwrite(str(data / "masks" / "p0_8.png"), np.zeros((16, 16), np.uint8))       # another size
    args = ["run", "--dataset", "folder", "--data-root", str(data), "--set", "model.width=4", "--epochs", "1",
            "--batch-size", "4", "--out", str(tmp_path / "run")]
    failed = segkit(*args, env={"SEGKIT_CACHE_DIR": str(cache)})
    assert failed.returncode != 0 and "Traceback" not in failed.stderr
    assert "3 of 12 items cannot be used" in failed.stderr
    for name in ("p0_2", "p1_5", "p0_8"):
        assert f"- {name}:" in failed.stderr
    assert not (tmp_path / "run").exists()  # nothing was written
    # fixed, the check passes once, is remembered, and is redone when a file changes
    _write_folder(tmp_path / "fresh", count=12)
    for sub in ("images", "masks"):
        shutil.rmtree(data / sub)
        shutil.copytree(tmp_path / "fresh" / sub, data / sub)
    dataset = get_registry().build("dataset", "folder", root=str(data))
    assert verify_dataset(dataset).cached is False
    assert verify_dataset(dataset).cached is True
    cv2.imwrite(str(data / "masks" / "p1_3.png"), np.full((32, 32), 9, np.uint8))
    changed = get_registry().build("dataset", "folder", root=str(data))
    with pytest.raises(Exception, match="1 of 12 items cannot be used"):
        verify_dataset(changed)


def test_an_error_in_a_loader_worker_is_one_line(tmp_path: Path) -> None:
    data = tmp_path / "data"
    _write_folder(data, count=12)
    (data / "images" / "p0_4.png").write_bytes(b"junk")
    result = segkit("run", "--dataset", "folder", "--data-root", str(data), "--set", "model.width=4", "--epochs", "1",
                    "--batch-size", "4", "--workers", "1", "--set", "train.verify_data=false", "--set",
                    "split.test_fraction=0", "--out", str(tmp_path / "run"), "--quiet")
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert lines[0].startswith("error: cannot decode") and "p0_4.png" in lines[0] and "worker" in lines[0]


def test_a_checkpoint_whose_weights_do_not_fit_its_model_is_named(tiny_run: Path, tmp_path: Path) -> None:
    import torch

    from segkit.runs.checkpoint import save_checkpoint

    payload = torch.load(tiny_run / "checkpoints" / "best.pt", weights_only=True)
    payload["config"]["model"]["width"] = 8  # edited by hand: the weights are a width-4 model's
    save_checkpoint(tmp_path / "edited.pt", {k: v for k, v in payload.items() if k != "format"})
    result = segkit("export", str(tmp_path / "edited.pt"), "--format", "torchscript", "--out", str(tmp_path / "m.ts"))
    assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert "do not fit the model its config describes" in result.stderr


def test_onnx_metadata_out_of_range_is_named(tiny_run: Path, tmp_path: Path) -> None:
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    assert segkit("export", str(tiny_run), "--out", str(tmp_path / "m.onnx")).returncode == 0
    model = onnx.load(str(tmp_path / "m.onnx"))
    for prop in model.metadata_props:
        if prop.key == "threshold":
            prop.value = "7"
    onnx.save(model, str(tmp_path / "edited.onnx"))
    result = segkit("predict", str(tmp_path / "edited.onnx"), str(tiny_run.parent / "data" / "images"),
                    "--out", str(tmp_path / "masks"))
    assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert "metadata threshold '7'" in result.stderr and "between 0 and 1" in result.stderr



def test_export_options_are_checked_before_the_exporter_runs(tiny_run: Path, tmp_path: Path) -> None:
    for args, expected in ((["--opset", "9", "--out", str(tmp_path / "m.onnx")], "--opset 9 is not supported"),
                           (["--opset", "17", "--out", str(tmp_path / "m.ts")], "--opset is an ONNX setting"),
                           (["--out", str(tmp_path)], "is a directory")):
        result = CliRunner().invoke(cli, ["export", str(tiny_run), *args])  # in-process: option checks only
        assert result.exit_code == 2 and isinstance(result.exception, SystemExit), result.output
        assert expected in result.output
    assert not (tmp_path / "m.onnx").exists() and not (tmp_path / "m.ts").exists()
