"""``plan.toml``: the plan as a run configuration, every setting preceded by a one-line reason.

The file is plain TOML that ``segkit run --config`` and ``segkit cv --config`` read as it is; the
reasons and notes are comments. Written atomically (:func:`segkit.fileio.atomic_write_text`).
"""

from __future__ import annotations

import os
import textwrap
from collections.abc import Sequence
from pathlib import Path

from segkit.fileio import atomic_write_text
from segkit.planning.contract import SECTION_ORDER, Plan
from segkit.tomlio import toml_key as _key, toml_value as _scalar

__all__ = ["plan_text", "write_plan"]

WIDTH = 100


def _comment(text: str, indent: str = "") -> list[str]:
    return [f"{indent}# {line}" for line in textwrap.wrap(text, WIDTH - len(indent) - 2)] or [f"{indent}#"]


def plan_text(plan: Plan, header: Sequence[str] = ()) -> str:
    """The commented TOML text of ``plan``: ``header`` lines and notes first, then each section's settings."""
    lines: list[str] = []
    for line in header:
        lines += _comment(line)
    if plan.notes:
        lines += ["#", "# Notes:"]
        for note in plan.notes:
            lines += _comment(f"- {note}")
    for section in SECTION_ORDER:
        settings = [s for s in plan.settings if s.section == section]
        if not settings:
            continue
        lines += ["", f"[{_key(section)}]"]
        for setting in settings:
            lines.append(f"# {' '.join(setting.reason.split())}")  # one line, however long
            lines.append(f"{_key(setting.key)} = {_scalar(setting.value)}")
    return "\n".join(lines) + "\n"


def write_plan(path: str | os.PathLike[str], plan: Plan, header: Sequence[str] = ()) -> Path:
    """Write :func:`plan_text` to ``path`` atomically; returns the path."""
    return atomic_write_text(path, plan_text(plan, header))
