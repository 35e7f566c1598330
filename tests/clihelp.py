"""Running the real ``segkit`` command in a subprocess, for tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def segkit(*args: str, cwd: str | Path | None = None, env: dict[str, str] | None = None,
           timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run ``python -m segkit ARGS`` and capture its output."""
    environment = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "segkit", *args],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def write_plugin(directory: Path, name: str, body: str) -> Path:
    """Write a plugin module ``name.py`` into ``directory`` and return its path."""
    path = directory / f"{name}.py"
    path.write_text(body)
    return path
