"""Training lifecycle hooks: a plugin hears a run's start, epochs, checkpoints and end; built-in loggers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from clihelp import segkit, write_plugin

SMALL = ["--dataset", "synthetic", "--set", "dataset.count=32", "--set", "dataset.size=32", "--set", "model.width=4",
         "--batch-size", "8"]

RECORDER = '''
import json, os
import segkit

LOG = os.environ["HOOK_LOG"]

def _write(event, **fields):
    with open(LOG, "a") as handle:
        handle.write(json.dumps({"event": event, **fields}) + "\\n")

@segkit.hookimpl
def segkit_run_start(run_dir, config, resumed):
    _write("start", run_dir=run_dir, epochs=config["train"]["epochs"], resumed=resumed)

@segkit.hookimpl
def segkit_epoch_end(epoch, row):          # a hook may take only the arguments it needs
    _write("epoch", epoch=epoch, loss=row["train_loss"], monitored=row["val_dice_case"])

@segkit.hookimpl
def segkit_checkpoint_saved(path, kind, epoch):
    _write("checkpoint", kind=kind, epoch=epoch, exists=os.path.isfile(path))

@segkit.hookimpl
def segkit_run_end(summary):
    _write("end", best_epoch=summary["best_epoch"])
'''


def test_a_plugin_hears_the_whole_run(tmp_path: Path) -> None:
    plugin = write_plugin(tmp_path, "recorder", RECORDER)
    log = tmp_path / "events.jsonl"
    out = tmp_path / "run"
    result = segkit("-p", str(plugin), "run", *SMALL, "--epochs", "2", "--out", str(out), "--quiet",
                    env={"HOOK_LOG": str(log)})
    assert result.returncode == 0, result.stderr[-3000:]
    events = [json.loads(line) for line in log.read_text().splitlines()]
    assert events[0] == {"event": "start", "run_dir": str(out), "epochs": 2, "resumed": False}
    assert [e["epoch"] for e in events if e["event"] == "epoch"] == [1, 2]
    lasts = [e for e in events if e["event"] == "checkpoint" and e["kind"] == "last"]
    assert [e["epoch"] for e in lasts] == [1, 2] and all(e["exists"] for e in lasts)
    assert any(e["event"] == "checkpoint" and e["kind"] == "best" for e in events)
    assert events[-1]["event"] == "end" and events[-1]["best_epoch"] in (1, 2)


def test_a_failing_hook_is_a_warning_and_the_run_goes_on(tmp_path: Path) -> None:
    plugin = write_plugin(tmp_path, "broken_logger", '''
import segkit

@segkit.hookimpl
def segkit_epoch_end(epoch, row):
    raise ConnectionError("the tracking server is down")
''')
    out = tmp_path / "run"
    result = segkit("-p", str(plugin), "run", *SMALL, "--epochs", "2", "--out", str(out), "--quiet")
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stderr.count("the tracking server is down") == 1  # reported once, then skipped
    assert "skipped for the rest of this run" in result.stderr
    assert (out / "summary.json").is_file()


def test_tensorboard_logger_writes_events_that_tensorboard_reads(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    result = segkit("run", *SMALL, "--epochs", "2", "--logger", "tensorboard", "--out", str(out), "--quiet")
    assert result.returncode == 0, result.stderr[-3000:]
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    assert {"loss/train", "loss/val", "lr", "val/dice", "val/dice_case"} <= scalars
    assert [e.step for e in events.Scalars("loss/train")] == [1, 2]
    rows = (out / "metrics.csv").read_text().splitlines()
    first_loss = float(rows[1].split(",")[1])
    assert events.Scalars("loss/train")[0].value == pytest.approx(first_loss, rel=1e-4)
    assert any(tag.startswith("best/") for tag in scalars)


def test_an_unknown_logger_is_refused_before_any_work(tmp_path: Path) -> None:
    result = segkit("run", *SMALL, "--epochs", "1", "--logger", "tensorbord", "--out", str(tmp_path / "run"))
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "tensorboard" in result.stderr and not (tmp_path / "run").exists()
