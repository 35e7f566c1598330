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
from segkit.data import write_splits
from segkit.runs.checkpoint import load_checkpoint

__all__ = ["RunDirectory", "holds_a_run", "readable_checkpoint", "existing_run_message", "resume_state",
           "ended_without_summary", "stopped_reason", "recovery_note", "run_directory"]

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

    def write_start(self, document: Mapping[str, Any], index: Any, split: Any) -> None:
        """config.toml and splits.csv, written before the data is prepared: a run killed from here on
        (while it builds a volume cache, say) is one that ``--resume`` continues."""

        self.write_config(document)
        write_splits(self.splits, index, split)

    def discard_unstarted(self) -> None:
        """Remove what :meth:`write_start` wrote when the run failed before its first checkpoint, so a run
        refused while it prepared its data leaves nothing behind; a run with a checkpoint is kept."""
        if self.last.exists() or self.metrics.exists():
            return
        for path in (self.config, self.splits):
            path.unlink(missing_ok=True)
        try:
            self.checkpoints.rmdir()
        except OSError:
            pass  # absent, or holds something: leave it

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


def resume_state(run: RunDirectory) -> dict[str, Any] | None:
    """What ``--resume`` continues from: the state last.pt holds, or None for a run that was stopped
    after writing its config and splits but before its first checkpoint (killed while it prepared its
    data): that one starts at epoch 1 with its own config and splits."""

    if not run.last.exists() and not run.metrics.exists():
        return None
    return load_checkpoint(run.last)


def ended_without_summary(run: RunDirectory, state: Mapping[str, Any], planned_epochs: int) -> bool:
    """Whether the run trained to its end but was stopped before summary.json was written (during the
    final validation, the figures or the report): ``--resume`` then writes that ending without training.

    The ending scores best.pt (written before the last last.pt); CheckpointError when it is gone.
    """
    done = int(state["epoch"]) >= planned_epochs or bool(state.get("finished"))
    if not done or run.summary.is_file():
        return False
    if not readable_checkpoint(run.best):
        raise CheckpointError(f"the run in {str(run.root)!r} finished training, but its summary was never written "
                              f"and {run.best} is missing or damaged, so its best epoch cannot be scored. Train it "
                              f"on with 'segkit run --resume {run.root} --epochs N' (a new best.pt follows), or use "
                              "its last checkpoint (--checkpoint last) as it is.")
    return True


def stopped_reason(epoch: int, planned_epochs: int, early_stop: bool) -> str:
    """Why a run that trained ``epoch`` of ``planned_epochs`` epochs stopped, as summary.json's ``stopped``."""
    if early_stop:
        return "early_stopping"
    return "completed" if epoch >= planned_epochs else "time_limit"


def recovery_note(root: str | Path, epochs_trained: int | None) -> str:
    """What ``--resume`` says of a killed run it recovers: one that trained ``epochs_trained`` epochs to its
    end but wrote no summary, or (None) one stopped before its first checkpoint."""
    if epochs_trained is None:
        return (f"{root} was stopped before its first checkpoint (while it prepared its data): training it from "
                "epoch 1 with its own config and splits")
    epochs = f"{epochs_trained} epoch" + ("s" if epochs_trained != 1 else "")
    return (f"{root} finished training ({epochs}) but was stopped before its summary was written: writing its "
            "final validation, figures, summary and report now")


def readable_checkpoint(path: Path) -> bool:
    """Whether ``path`` loads as a segkit checkpoint."""

    try:
        load_checkpoint(path)
    except CheckpointError:
        return False
    return True


def existing_run_message(root: str | Path) -> str:
    return (f"run directory {str(root)!r} already holds a run. Resume it with 'segkit run --resume {root}', "
            "or pass another --out.")


def run_directory(source: str | Path) -> Path | None:
    """The run directory a source belongs to (itself, or the run of a ``checkpoints/*.pt``), if any."""
    path = Path(source)
    if path.is_dir():
        return path if (path / "config.toml").is_file() else None
    if path.parent.name == "checkpoints" and (path.parent.parent / "config.toml").is_file():
        return path.parent.parent
    return None
