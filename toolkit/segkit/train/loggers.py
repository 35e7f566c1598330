"""Built-in loggers: implementations of the training lifecycle hooks for common tools.

Each is an optional extra (``pip install 'segkit[tensorboard]'``, ``'segkit[mlflow]'``) and is
added to a run with ``--logger NAME`` (``train.loggers``); :mod:`segkit.train.events` registers
it for that run only.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

from segkit import __version__
from segkit.components.hookspecs import hookimpl
from segkit.errors import ConfigError
from segkit.fileio import atomic_write_text

__all__ = ["TensorBoardLogger", "MLflowLogger", "flatten_config", "check_tracking_server"]


class TensorBoardLogger:
    """Writes every epoch's numbers to ``RUN_DIR/tensorboard/`` (view with ``tensorboard --logdir RUN_DIR``).

    Scalars are tagged ``loss/train``, ``loss/val``, ``lr``, ``val/<metric>`` and ``train/<metric>``,
    with the epoch as the step; the run's configuration goes in as text, the summary's headline
    as ``best/<name>``.
    """

    def __init__(self) -> None:
        self.writer: Any = None

    def _open(self, run_dir: str) -> Any:
        if self.writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(Path(run_dir) / "tensorboard"))
        return self.writer

    @hookimpl
    def segkit_run_start(self, run_dir: str, config: dict[str, Any], resumed: bool) -> None:
        self._open(run_dir).add_text("config", "```\n" + json.dumps(config, indent=2, default=str) + "\n```")

    @hookimpl
    def segkit_epoch_end(self, run_dir: str, epoch: int, row: dict[str, Any]) -> None:
        writer = self._open(run_dir)
        for key, value in _numbers(row).items():
            writer.add_scalar(_tag(key), value, global_step=epoch)
        writer.flush()

    @hookimpl
    def segkit_run_end(self, run_dir: str, summary: dict[str, Any]) -> None:
        headline = summary.get("headline") or {}
        if isinstance(headline.get("value"), (int, float)):
            self._open(run_dir).add_scalar(f"best/{headline.get('name', 'score')}", float(headline["value"]),
                                           global_step=int(headline.get("epoch") or 0))
        self.close()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.flush()
            self.writer.close()
            self.writer = None


def _tag(column: str) -> str:
    """A metrics.csv column as a TensorBoard tag: ``train_loss`` -> ``loss/train``, ``val_dice_case`` -> ``val/dice_case``."""
    if column.endswith("_loss"):
        return f"loss/{column[: -len('_loss')]}"
    for prefix in ("val_", "train_"):
        if column.startswith(prefix):
            return f"{prefix[:-1]}/{column[len(prefix):]}"
    return column


def _numbers(row: dict[str, Any]) -> dict[str, float]:
    """The finite numbers of a metrics row, without its epoch."""
    return {key: float(value) for key, value in row.items()
            if key != "epoch" and isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(float(value))}


def flatten_config(config: dict[str, Any]) -> dict[str, str]:
    """A run configuration as ``section.key -> text``: ``{"model": {"name": "unet"}}`` -> ``{"model.name": "unet"}``."""
    flat = {}
    for section, values in config.items():
        for key, value in (values.items() if isinstance(values, dict) else [("", values)]):
            flat[f"{section}.{key}" if key else section] = value if isinstance(value, str) else json.dumps(value)
    return flat


#: Seconds to wait for an MLflow server before the run is refused, and per request during the run.
MLFLOW_CONNECT_TIMEOUT = 5.0
MLFLOW_REQUEST_TIMEOUT = "10"
MLFLOW_REQUEST_RETRIES = "1"


def check_tracking_server() -> None:
    """A :class:`ConfigError` when MLflow's tracking URI is an HTTP server that does not answer.

    MLflow itself retries an unreachable server for minutes without a word; this checks once,
    within :data:`MLFLOW_CONNECT_TIMEOUT` seconds, before the run starts. Later requests time
    out after :data:`MLFLOW_REQUEST_TIMEOUT` seconds with one retry (unless the ``MLFLOW_HTTP_REQUEST_*``
    variables say otherwise), so a server that goes away mid-run costs one warning, not the run.
    """
    import os
    import socket
    from urllib.parse import urlsplit

    from mlflow.tracking import get_tracking_uri

    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", MLFLOW_REQUEST_TIMEOUT)
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", MLFLOW_REQUEST_RETRIES)
    uri = get_tracking_uri()
    parts = urlsplit(uri)
    if parts.scheme not in ("http", "https"):
        return  # a file or database store: MLflow reports its own errors at once
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        with socket.create_connection((parts.hostname or "localhost", port), timeout=MLFLOW_CONNECT_TIMEOUT):
            pass
    except (OSError, ValueError) as error:
        raise ConfigError(f"--logger mlflow: the tracking server {uri} does not answer ({error}). Start it, set "
                          "MLFLOW_TRACKING_URI to one that runs (or to sqlite:///mlflow.db), or drop --logger mlflow; "
                          "nothing was trained.") from None


class MLflowLogger:
    """Logs a run to MLflow: its configuration as parameters, every epoch's numbers, the summary.

    Where: MLflow's own choice, so ``MLFLOW_TRACKING_URI`` (a server, ``sqlite:///path.db``, ...)
    decides, and without it MLflow's default (``sqlite:///mlflow.db`` in the working directory).
    The experiment is ``MLFLOW_EXPERIMENT_NAME`` or ``segkit``; the MLflow run is named after the
    run directory and tagged ``segkit.run_dir``. Metrics keep their metrics.csv names
    (``train_loss``, ``val_dice_case``, ...) with the epoch as the step. At the end, ``best_<name>``
    holds the headline and summary.json, config.toml and curves.png become artifacts.

    ``segkit run --resume`` continues the same MLflow run: its id is kept in ``RUN_DIR/mlflow.json``.
    A run that stops early (an error, Ctrl-C) is marked ``FAILED``, and ``RUNNING`` again on resume.
    """

    RECORD = "mlflow.json"

    def __init__(self) -> None:
        self.client: Any = None
        self.run_id: str | None = None
        self.finished = False
        check_tracking_server()

    def _start(self, run_dir: str, config: dict[str, Any], resumed: bool) -> None:
        import os

        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient()
        uri = self.client.tracking_uri
        record = Path(run_dir) / self.RECORD
        if resumed and record.is_file():
            known = json.loads(record.read_text())
            if known.get("tracking_uri") == uri and self._exists(known.get("run_id")):
                self.run_id = known["run_id"]
                self.client.update_run(self.run_id, status="RUNNING")
                return
        name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or "segkit"
        experiment = self.client.get_experiment_by_name(name)
        experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(name)

        run = self.client.create_run(experiment_id, run_name=Path(run_dir).name,
                                     tags={"segkit.run_dir": str(Path(run_dir).resolve()), "segkit.version": __version__})
        self.run_id = run.info.run_id
        params = [Param(key, value[:6000]) for key, value in flatten_config(config).items()]
        for start in range(0, len(params), 100):  # MLflow takes at most 100 parameters per batch
            self.client.log_batch(self.run_id, params=params[start:start + 100])

        atomic_write_text(record, json.dumps({"tracking_uri": uri, "run_id": self.run_id}, indent=2) + "\n")

    def _exists(self, run_id: str | None) -> bool:
        if not run_id:
            return False
        try:
            self.client.get_run(run_id)
        except Exception:  # deleted, or another store
            return False
        return True

    def _log(self, values: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        metrics = [Metric(key, value, stamp, step) for key, value in values.items()]
        for start in range(0, len(metrics), 1000):
            self.client.log_batch(self.run_id, metrics=metrics[start:start + 1000])

    @hookimpl
    def segkit_run_start(self, run_dir: str, config: dict[str, Any], resumed: bool) -> None:
        self._start(run_dir, config, resumed)

    @hookimpl
    def segkit_epoch_end(self, run_dir: str, epoch: int, row: dict[str, Any]) -> None:
        if self.run_id is not None:
            self._log(_numbers(row), epoch)

    @hookimpl
    def segkit_run_end(self, run_dir: str, summary: dict[str, Any]) -> None:
        if self.run_id is None:
            return
        headline = summary.get("headline") or {}
        if isinstance(headline.get("value"), (int, float)) and math.isfinite(float(headline["value"])):
            self._log({f"best_{headline.get('name', 'score')}": float(headline["value"])}, int(headline.get("epoch") or 0))
        for name in ("summary.json", "config.toml", "curves.png"):
            path = Path(run_dir) / name
            if path.is_file():
                self.client.log_artifact(self.run_id, str(path))
        self.client.set_terminated(self.run_id, status="FINISHED")
        self.finished = True

    def close(self) -> None:
        """Mark a run that ended without its summary (an error, an interrupt) as FAILED."""
        if self.run_id is not None and not self.finished:
            try:
                self.client.set_terminated(self.run_id, status="FAILED")
            except Exception:  # the store went away: nothing left to tell it
                pass
        self.run_id = None
