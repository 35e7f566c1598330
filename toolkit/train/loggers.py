"""Built-in loggers: implementations of the training lifecycle hooks for common tools.

Each is an optional extra (``pip install 'segkit[tensorboard]'``) and is added to a run
with ``--logger NAME`` (``train.loggers``); :mod:`segkit.train.events` registers it for
that run only.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from segkit.hookspecs import hookimpl

__all__ = ["TensorBoardLogger"]


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
        import json

        self._open(run_dir).add_text("config", "```\n" + json.dumps(config, indent=2, default=str) + "\n```")

    @hookimpl
    def segkit_epoch_end(self, run_dir: str, epoch: int, row: dict[str, Any]) -> None:
        writer = self._open(run_dir)
        for key, value in row.items():
            if key == "epoch" or not isinstance(value, (int, float)) or isinstance(value, bool):
                continue
            if not math.isfinite(float(value)):
                continue
            writer.add_scalar(_tag(key), float(value), global_step=epoch)
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
