"""Progress bars only where someone watches them.

A terminal gets tqdm bars; a log file or a pipe does not (its carriage-return lines
pile up into one huge line): there the commands print one line per epoch instead.
"""

from __future__ import annotations

import sys

__all__ = ["show_bars"]


def show_bars(requested: bool = True) -> bool:
    """Whether to draw progress bars: when ``requested`` (not ``--quiet``) and stderr is a terminal."""
    stream = sys.stderr
    return bool(requested) and hasattr(stream, "isatty") and stream.isatty()
