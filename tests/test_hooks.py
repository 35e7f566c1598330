"""Training lifecycle hooks: a plugin hears a run's start, epochs, checkpoints and end; built-in loggers."""

from __future__ import annotations

import importlib.util
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


BROKEN = '''
import segkit

@segkit.hookimpl
def segkit_epoch_end(epoch, row):
    raise ConnectionError("the tracking server is down")
'''


@pytest.fixture(scope="module")
def heard_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One run heard by everything at once: a recording plugin, a plugin whose hook fails, TensorBoard and MLflow.

    One 2-epoch run instead of four (each costs a process start and a run's setup); each test below checks its
    listener, and the recorder hears the whole run although another plugin's hook fails on every epoch.
    """
    base = tmp_path_factory.mktemp("heard")
    recorder, broken = write_plugin(base, "recorder", RECORDER), write_plugin(base, "broken_logger", BROKEN)
    loggers, env = [], {"HOOK_LOG": str(base / "events.jsonl")}
    if importlib.util.find_spec("tensorboard"):
        loggers += ["--logger", "tensorboard"]
    if importlib.util.find_spec("mlflow") and importlib.util.find_spec("sqlalchemy"):
        loggers += ["--logger", "mlflow"]
        env |= {"MLFLOW_TRACKING_URI": f"sqlite:///{base / 'mlflow.db'}", "MLFLOW_EXPERIMENT_NAME": "segkit-tests"}
    out = base / "run"
    result = segkit("-p", str(recorder), "-p", str(broken), "run", *SMALL, "--epochs", "2", *loggers,
                    "--out", str(out), "--quiet", env=env, cwd=base)  # MLflow keeps a local store's artifacts in ./mlruns
    assert result.returncode == 0, result.stderr[-3000:]
    return {"out": out, "base": base, "stderr": result.stderr, "env": env}


def test_a_plugin_hears_the_whole_run(heard_run: dict) -> None:
    out = heard_run["out"]
    events = [json.loads(line) for line in (heard_run["base"] / "events.jsonl").read_text().splitlines()]
    assert events[0] == {"event": "start", "run_dir": str(out), "epochs": 2, "resumed": False}
    assert [e["epoch"] for e in events if e["event"] == "epoch"] == [1, 2]
    lasts = [e for e in events if e["event"] == "checkpoint" and e["kind"] == "last"]
    assert [e["epoch"] for e in lasts] == [1, 2] and all(e["exists"] for e in lasts)
    assert any(e["event"] == "checkpoint" and e["kind"] == "best" for e in events)
    assert events[-1]["event"] == "end" and events[-1]["best_epoch"] in (1, 2)


def test_a_failing_hook_is_a_warning_and_the_run_goes_on(heard_run: dict) -> None:
    stderr = heard_run["stderr"]
    assert stderr.count("the tracking server is down") == 1  # reported once, then skipped
    assert "skipped for the rest of this run" in stderr
    assert (heard_run["out"] / "summary.json").is_file()


def test_tensorboard_logger_writes_events_that_tensorboard_reads(heard_run: dict) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = heard_run["out"]
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


def test_mlflow_logger_logs_a_run_to_the_real_store(heard_run: dict) -> None:
    pytest.importorskip("mlflow")
    pytest.importorskip("sqlalchemy")
    from mlflow.tracking import MlflowClient

    out, uri = heard_run["out"], heard_run["env"]["MLFLOW_TRACKING_URI"]
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("segkit-tests")
    [run] = client.search_runs([experiment.experiment_id])
    assert run.info.run_name == "run" and run.info.status == "FINISHED"
    assert run.data.tags["segkit.run_dir"] == str(out.resolve())
    assert run.data.params["model.name"] == "unet" and run.data.params["train.epochs"] == "2"
    history = client.get_metric_history(run.info.run_id, "train_loss")
    rows = (out / "metrics.csv").read_text().splitlines()
    assert [m.step for m in history] == [1, 2]
    assert history[0].value == pytest.approx(float(rows[1].split(",")[1]), rel=1e-5)  # the CSV keeps 6 digits
    assert "best_val_dice_case" in run.data.metrics
    assert {a.path for a in client.list_artifacts(run.info.run_id)} >= {"summary.json", "config.toml", "curves.png"}
    assert list((heard_run["base"] / "mlruns").rglob("summary.json"))


def test_mlflow_logger_marks_an_early_stop_failed_and_a_resume_continues_the_same_run(tmp_path: Path,
                                                                                        monkeypatch) -> None:
    pytest.importorskip("mlflow")
    pytest.importorskip("sqlalchemy")
    from mlflow.tracking import MlflowClient

    from segkit.train.loggers import MLflowLogger

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)  # MLflow keeps a local store's artifacts in ./mlruns
    client, run_dir = MlflowClient(tracking_uri=uri), str(tmp_path / "run")
    first = MLflowLogger()
    first.segkit_run_start(run_dir, {"model": {"name": "unet", "width": 4}}, resumed=False)
    first.segkit_epoch_end(run_dir, 1, {"epoch": 1, "train_loss": 0.5, "val_dice": float("nan")})
    first.close()  # the run raised before its end
    run_id = json.loads((tmp_path / "run" / "mlflow.json").read_text())["run_id"]
    run = client.get_run(run_id)
    assert run.info.status == "FAILED" and run.data.params == {"model.name": "unet", "model.width": "4"}
    assert run.data.metrics == {"train_loss": 0.5}  # the NaN is left out

    resumed = MLflowLogger()
    resumed.segkit_run_start(run_dir, {"model": {"name": "unet", "width": 4}}, resumed=True)
    assert resumed.run_id == run_id and client.get_run(run_id).info.status == "RUNNING"
    resumed.segkit_epoch_end(run_dir, 2, {"epoch": 2, "train_loss": 0.25})
    resumed.segkit_run_end(run_dir, {"headline": {"name": "val_dice_case", "value": 0.5, "epoch": 2}})
    assert client.get_run(run_id).info.status == "FINISHED"
    assert [(m.step, m.value) for m in client.get_metric_history(run_id, "train_loss")] == [(1, 0.5), (2, 0.25)]
