"""The run directory: resolved config, metrics table, summary, splits and checkpoints."""

from __future__ import annotations

import csv
import io
import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from segkit.errors import CheckpointError
from segkit.tomlio import atomic_write_text, dumps_toml

__all__ = ["RunDirectory", "holds_a_run", "readable_checkpoint", "existing_run_message"]

_TEMPORARY = re.compile(r"\..+\.tmp-(\d+)")


def _process_alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this machine (one we may not signal runs too)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):
        return True
    return True


class RunDirectory:
    """Paths and atomic writers for one run's outputs."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    @property
    def config(self) -> Path:
        return self.root / "config.toml"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.csv"

    @property
    def timing(self) -> Path:
        return self.root / "timing.csv"

    @property
    def summary(self) -> Path:
        return self.root / "summary.json"

    @property
    def splits(self) -> Path:
        return self.root / "splits.csv"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def last(self) -> Path:
        return self.checkpoints / "last.pt"

    @property
    def best(self) -> Path:
        return self.checkpoints / "best.pt"

    def remove_stale_temporaries(self) -> list[Path]:
        """Delete the temporary files (``.NAME.tmp-PID``) that killed writers left behind; return them.

        An atomic write (:mod:`segkit.fileio`) leaves its temporary file only when its process was
        killed mid-write (SIGKILL, power loss); a file whose process still runs is left alone.
        """
        removed = []
        for folder in (self.root, self.checkpoints, self.root / "evaluation"):
            if not folder.is_dir():
                continue
            for path in folder.iterdir():
                match = _TEMPORARY.fullmatch(path.name)
                if match and path.is_file() and not _process_alive(int(match.group(1))):
                    path.unlink(missing_ok=True)
                    removed.append(path)
        return removed

    def create(self) -> None:
        self.checkpoints.mkdir(parents=True, exist_ok=True)

    def write_config(self, document: Mapping[str, Any]) -> None:
        atomic_write_text(self.config, dumps_toml(document))

    def write_summary(self, summary: Mapping[str, Any]) -> None:
        atomic_write_text(self.summary, json.dumps(summary, indent=2) + "\n")

    @staticmethod
    def _csv_text(rows: Sequence[Mapping[str, Any]]) -> str:
        columns: list[str] = []
        for row in rows:
            columns.extend(key for key in row if key not in columns)
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
        return buffer.getvalue()

    def write_metrics(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """metrics.csv: one row per epoch; only values that a rerun reproduces exactly."""
        atomic_write_text(self.metrics, self._csv_text(rows))

    def write_timing(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """timing.csv: seconds and images/s per epoch (they vary between runs, so they live apart)."""
        atomic_write_text(self.timing, self._csv_text(rows))


def holds_a_run(root: str | Path) -> bool:
    """Whether ``root`` holds a run that trained at least one epoch, so a new run must not replace it.

    A directory left by a run that failed before its first epoch ended (a config and an
    epoch-0 last.pt, no metrics) does not: a retry with the same ``--out`` starts afresh.
    """
    from segkit.train.checkpoint import load_checkpoint

    run = RunDirectory(root)
    if not run.config.exists():
        return False
    if run.metrics.exists():
        return True
    if not run.last.is_file():
        return False
    try:
        return int(load_checkpoint(run.last).get("epoch", 0)) > 0
    except CheckpointError:
        return True  # unreadable: keep it, the user decides


def readable_checkpoint(path: Path) -> bool:
    """Whether ``path`` loads as a segkit checkpoint."""
    from segkit.train.checkpoint import load_checkpoint

    try:
        load_checkpoint(path)
    except CheckpointError:
        return False
    return True


def existing_run_message(root: str | Path) -> str:
    return (f"run directory {str(root)!r} already holds a run. Resume it with 'segkit run --resume {root}', "
            "or pass another --out.")
