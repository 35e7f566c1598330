"""segkit run end to end on tiny synthetic data: outputs, reproducibility, resume, faults."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import tomllib
from pathlib import Path

import pytest
import torch

from clihelp import kill_run_after, run_in_process, segkit, segkit_here, write_plugin
from segkit.runs.checkpoint import build_model_from_checkpoint, load_checkpoint
from segkit.train.loop import EarlyStopping
from segkit.train.sampling import EpochSampler
from segkit.train.schedule import lr_factor

TINY = ["--set", "dataset.count=48", "--set", "dataset.size=32", "--set", "model.width=8",
        "--batch-size", "8", "--quiet"]
#: Long enough (18 steps an epoch, 6 epochs) to be killed part-way. With an EMA of the weights, so
#: resuming restores it too (tests/test_device_loader.py resumes a run without one).
KILLABLE = ["--set", "dataset.count=96", "--set", "dataset.size=32", "--set", "model.width=8",
            "--batch-size", "4", "--epochs", "6", "--set", "train.ema_decay=0.9", "--quiet"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "tiny"
    result = segkit("run", "--model", "unet", "--loss", "bce_dice", "--epochs", "2", "--metric", "dice",
                    "--metric", "iou", "--metric", "recall", *TINY, "--out", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def read_csv_rows(path: Path) -> list[str]:
    return path.read_text().splitlines()


def test_run_directory_has_everything(tiny_run: Path) -> None:
    for name in ("config.toml", "metrics.csv", "timing.csv", "summary.json", "splits.csv", "curves.png",
                 "predictions.png", "checkpoints/last.pt", "checkpoints/best.pt"):
        assert (tiny_run / name).is_file(), name
    header = read_csv_rows(tiny_run / "metrics.csv")[0].split(",")
    for column in ("epoch", "train_loss", "val_loss", "lr", "val_dice", "val_iou", "val_recall", "val_dice_case"):
        assert column in header
    assert len(read_csv_rows(tiny_run / "metrics.csv")) == 3
    summary = json.loads((tiny_run / "summary.json").read_text())
    for key in ("best_epoch", "best", "epochs_run", "train_seconds", "images_per_second", "device", "versions"):
        assert key in summary
    assert set(summary["best"]) == {"dice", "iou", "recall"}
    assert 0.0 <= summary["best"]["dice"] <= 1.0
    assert {"segkit", "torch", "smp"} <= set(summary["versions"])
    assert summary["epochs_run"] == 2


def test_checkpoint_rebuilds_the_model_from_the_file_alone(tiny_run: Path) -> None:
    payload = load_checkpoint(tiny_run / "checkpoints" / "best.pt")
    assert payload["config"]["model"] == {"name": "unet", "width": 8, "batch_norm": True, "in_channels": 3, "classes": 1}
    model = build_model_from_checkpoint(payload)
    logits = model(torch.rand(1, 3, 32, 32))
    assert logits.shape == (1, 1, 32, 32)


def test_checkpoints_cannot_run_code(tmp_path: Path) -> None:
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    path = tmp_path / "evil.pt"
    torch.save({"format": "segkit-checkpoint-1", "payload": Evil()}, path)
    from segkit.errors import CheckpointError

    with pytest.raises(CheckpointError, match="weights_only"):
        load_checkpoint(path)


def test_resolved_config_reproduces_the_run(tiny_run: Path, tmp_path: Path) -> None:
    config = tomllib.loads((tiny_run / "config.toml").read_text())
    assert config["train"]["epochs"] == 2 and config["metrics"]["names"] == ["dice", "iou", "recall"]
    again = segkit("run", "--config", str(tiny_run / "config.toml"), "--quiet", "--out", str(tmp_path / "again"))
    assert again.returncode == 0, again.stderr[-3000:]
    assert (tmp_path / "again" / "metrics.csv").read_text() == (tiny_run / "metrics.csv").read_text()
    assert (tmp_path / "again" / "splits.csv").read_text() == (tiny_run / "splits.csv").read_text()


def test_killed_run_resumes_to_the_same_metrics(tmp_path: Path) -> None:
    run_in_process("run", *KILLABLE, "--out", str(tmp_path / "reference"))  # the uninterrupted run

    killed = tmp_path / "killed"
    kill_run_after(KILLABLE, killed, epochs=2)
    metrics = killed / "metrics.csv"
    assert len(read_csv_rows(metrics)) < 7, "killed before the end"
    assert load_checkpoint(killed / "checkpoints" / "last.pt")["epoch"] >= 1

    resumed = segkit("run", "--resume", str(killed), "--quiet")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert metrics.read_text() == (tmp_path / "reference" / "metrics.csv").read_text()


def test_resume_of_a_finished_run_is_refused(tiny_run: Path) -> None:
    result = segkit("run", "--resume", str(tiny_run))
    assert result.returncode == 2 and "already finished" in result.stderr


def test_ctrl_c_keeps_last_checkpoint_and_prints_the_resume_command(tmp_path: Path) -> None:
    out = tmp_path / "interrupted"
    # 60 epochs, not 6: on a loaded CI machine this test's polling can stall long enough for 6 short epochs to
    # finish before the signal is sent (seen once: the run ended normally, exit status 0)
    process = subprocess.Popen([sys.executable, "-m", "segkit", "run", *KILLABLE, "--epochs", "60", "--out", str(out)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and process.poll() is None:
        if (out / "metrics.csv").is_file():
            break
        time.sleep(0.02)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 2, stderr[-2000:]
    assert f"segkit run --resume {out}" in stderr
    assert "Traceback" not in stderr
    saved = load_checkpoint(out / "checkpoints" / "last.pt")["epoch"]
    assert f"holds the state after epoch {saved}" in stderr


def test_nan_loss_stops_with_epoch_and_step(tmp_path: Path) -> None:
    plugin = write_plugin(tmp_path, "nanloss", textwrap.dedent(
        """
        import torch
        from segkit import hookimpl

        @hookimpl
        def segkit_components():
            return [{"kind": "loss", "name": "nan_after", "target": "segkit_local_plugin_nanloss:NanAfter",
                     "summary": "finite for a few steps, then NaN"}]

        class NanAfter(torch.nn.Module):
            def __init__(self, steps: int = 2):
                super().__init__()
                self.steps, self.calls = steps, 0

            def forward(self, logits, target):
                self.calls += 1
                loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, target)
                return loss * float("nan") if self.training_step_is_bad() else loss

            def training_step_is_bad(self):
                return self.calls > self.steps
        """
    ))
    out = tmp_path / "nan"
    result = segkit("-p", str(plugin), "run", "--loss", "nan_after", "--epochs", "2", *TINY, "--out", str(out))
    assert result.returncode == 2
    assert "NaN or infinite at epoch 1, step 3" in result.stderr
    assert "Traceback" not in result.stderr
    assert load_checkpoint(out / "checkpoints" / "last.pt")["epoch"] == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--batch-size", "500"], "larger than the training set"),
        (["--device", "cuda"] if not torch.cuda.is_available() else ["--device", "cuda:99"], "cuda"),
        (["--device", "tpu"], "unknown device 'tpu'"),
        (["--lr", "0"], "train.lr must be greater than 0"),
        (["--epochs", "0"], "train.epochs must be at least 1"),
    ],
)
def test_impossible_settings_fail_before_any_work(tmp_path: Path, args: list[str], message: str) -> None:
    out = tmp_path / "never"
    result = segkit_here("run", "--set", "dataset.count=48", "--set", "dataset.size=32", *args, "--out", str(out))
    assert result.returncode == 2, result.stderr[-2000:]
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists()


def test_existing_run_directory_is_not_overwritten(tiny_run: Path) -> None:
    result = segkit("run", *TINY, "--epochs", "1", "--out", str(tiny_run))
    assert result.returncode == 2 and "already holds a run" in result.stderr


def test_early_stopping_counts_epochs_without_improvement() -> None:
    stopper = EarlyStopping(patience=2)
    assert stopper.update(0.5, 1) and not stopper.should_stop
    assert not stopper.update(0.5, 2) and not stopper.should_stop
    assert not stopper.update(0.4, 3) and stopper.should_stop
    assert stopper.best_epoch == 1
    assert not EarlyStopping(patience=0).should_stop


def test_patience_stops_a_run_that_does_not_improve(tmp_path: Path) -> None:
    out = tmp_path / "patient"
    run_in_process("run", *TINY, "--epochs", "5", "--lr", "1e-12", "--patience", "1", "--out", str(out))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stopped"] == "early_stopping" and summary["epochs_run"] == 2


def test_warmup_then_cosine_schedule() -> None:
    assert lr_factor(0, 100, 10, "cosine") == pytest.approx(0.1 + 0.001 * 0.9)
    assert lr_factor(9, 100, 10, "cosine") == pytest.approx(1.0)
    assert lr_factor(10, 100, 10, "cosine") == pytest.approx(1.0)
    assert lr_factor(55, 100, 10, "cosine") == pytest.approx(0.5)
    assert lr_factor(100, 100, 10, "cosine") == pytest.approx(0.0)
    assert lr_factor(55, 100, 10, "constant") == 1.0
    assert lr_factor(55, 100, 10, "poly") == pytest.approx(0.5**0.9)


def test_sampler_order_depends_only_on_seed_and_epoch_and_shards_cover_everything() -> None:
    a, b = EpochSampler(10, seed=3, shuffle=True), EpochSampler(10, seed=3, shuffle=True)
    a.set_epoch(2), b.set_epoch(2)
    assert list(a) == list(b)
    b.set_epoch(3)
    assert list(a) != list(b)
    shards = [EpochSampler(10, seed=3, shuffle=False, rank=r, world_size=3) for r in range(3)]
    seen = sorted(index for shard in shards for index, _ in shard)
    assert seen == list(range(10))


def test_loader_workers_do_not_change_the_result(tiny_run: Path, tmp_path: Path) -> None:
    """Order and augmentation depend only on (seed, epoch, item), not on which process loads an item."""
    out = tmp_path / "workers"
    result = segkit("run", "--config", str(tiny_run / "config.toml"), "--workers", "2", "--quiet", "--out", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    assert (out / "metrics.csv").read_text() == (tiny_run / "metrics.csv").read_text()


@pytest.mark.parametrize(("setting", "cpu", "cuda"), [("cuda", False, True), (True, False, True),
                                                      ("always", True, True), (False, False, False)])
def test_channels_last_setting_per_device(setting, cpu: bool, cuda: bool) -> None:
    from segkit.device import use_channels_last

    assert use_channels_last(setting, torch.device("cpu")) is cpu
    assert use_channels_last(setting, torch.device("cuda")) is cuda


def test_channels_last_always_trains_the_model_channels_last_on_cpu() -> None:
    from segkit.config import resolve_config, validate_config
    from segkit.components.registry import get_registry
    from segkit.train import assemble

    registry = get_registry()
    document = resolve_config(sets=["model.width=4", 'train.channels_last="always"', 'loss.name="bce_dice"'])
    document["model"].update({"in_channels": 3, "classes": 1})
    config = validate_config(document, registry)
    trainer = assemble.build_trainer(config, registry, {}, {}, {}, torch.device("cpu"), steps_per_epoch=1,
                                     progress=False)
    conv = next(m for m in trainer.module.modules() if isinstance(m, torch.nn.Conv2d))
    assert trainer.channels_last and conv.weight.is_contiguous(memory_format=torch.channels_last)
    with pytest.raises(Exception, match="channels_last"):
        validate_config(resolve_config(sets=['train.channels_last="sometimes"']), registry)
