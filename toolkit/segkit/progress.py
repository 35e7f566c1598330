"""Progress where someone can see it: bars on a terminal, a line now and then in a log.

A terminal gets tqdm bars. A log file or a pipe does not (its carriage-return lines pile up
into one huge line): there training prints one line per epoch, and the other long phases
(:func:`track`: cross-validation scoring, evaluate, predict, inspect) print one tqdm line
every ``SEGKIT_PROGRESS_INTERVAL`` seconds (default 30), e.g.
``predict: 12/58 images (21%) [00:31<01:20]``, plus one when the phase starts and ends.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from typing import Any, TextIO, TypeVar

__all__ = ["show_bars", "track", "log_interval", "INTERVAL_VARIABLE"]

T = TypeVar("T")

INTERVAL_VARIABLE = "SEGKIT_PROGRESS_INTERVAL"
"""Environment variable: seconds between progress lines in a log (not a terminal); default 30."""

_DEFAULT_INTERVAL = 30.0
_LOG_FORMAT = "{desc}: {n_fmt}/{total_fmt} {unit} ({percentage:.0f}%) [{elapsed}<{remaining}]"
_LOG_FORMAT_OPEN = "{desc}: {n_fmt} {unit} [{elapsed}]"  # no total known


def show_bars(requested: bool = True) -> bool:
    """Whether to draw progress bars: when ``requested`` (not ``--quiet``) and stderr is a terminal."""
    stream = sys.stderr
    return bool(requested) and hasattr(stream, "isatty") and stream.isatty()


def log_interval() -> float:
    """Seconds between progress lines in a log: ``$SEGKIT_PROGRESS_INTERVAL``, else 30 (0: every item)."""
    value = os.environ.get(INTERVAL_VARIABLE, "").strip()
    try:
        seconds = float(value) if value else _DEFAULT_INTERVAL
    except ValueError:
        return _DEFAULT_INTERVAL
    return seconds if seconds >= 0 else _DEFAULT_INTERVAL


class _Lines:
    """A stream for tqdm that turns its carriage-return refreshes into whole lines (no blank or repeated ones)."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.last = ""

    def write(self, text: str) -> None:
        for part in text.replace("\r", "\n").split("\n"):
            line = part.rstrip()
            if line.strip() and line != self.last:
                self.stream.write(line + "\n")
                self.last = line

    def flush(self) -> None:
        self.stream.flush()


def track(iterable: Iterable[T], *, total: int | None = None, desc: str, unit: str = "images",
          enabled: bool = True) -> Iterator[T]:
    """``iterable``, reporting its progress on stderr as it is consumed.

    ``enabled`` False (``--quiet``, or a library call) reports nothing. On a terminal a
    tqdm bar that clears itself when done; elsewhere a line when the phase starts, every
    :func:`log_interval` seconds, and when it ends.
    """
    if not enabled:
        yield from iterable
        return
    from tqdm.auto import tqdm

    stream = sys.stderr
    options: dict[str, Any]
    if show_bars():
        options = {"leave": False, "dynamic_ncols": True, "unit": " " + unit.rstrip("s") if unit else "it"}
    else:
        options = {"file": _Lines(stream), "mininterval": log_interval(), "miniters": 1, "leave": True,
                   "unit": unit, "ascii": True,
                   "bar_format": _LOG_FORMAT if total is not None else _LOG_FORMAT_OPEN}
    bar = tqdm(iterable, total=total, desc=desc, **options)
    try:
        yield from bar
    finally:
        bar.close()
