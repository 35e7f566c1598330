"""Running the real ``segkit`` command for tests: in a subprocess, or in this process where the process is not the point."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

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


def run_in_process(*args: str, env: dict[str, str] | None = None) -> str:
    """Run ``segkit ARGS`` in this process (no interpreter start, no imports to repeat); its output.

    For runs a test needs as a reference or a starting point; what the test is about (a kill, a
    resume, what a terminal or a pipe shows) stays in a real subprocess via :func:`segkit`. ``env``:
    variables set for the command's duration.
    """
    result = _invoke(args, env)
    assert result.exit_code == 0, result.output[-3000:]
    return result.output


def _invoke(args: tuple[str, ...], env: dict[str, str] | None, cwd: str | Path | None = None) -> Any:
    """click's test runner on segkit's command group, in this process (and ``cwd``, where given): its Result."""
    from click.testing import CliRunner

    from segkit.cli import cli

    with contextlib.chdir(cwd or os.getcwd()):
        return CliRunner().invoke(cli, list(args), env=env)


def segkit_here(*args: str, cwd: str | Path | None = None,
                env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``segkit ARGS`` through the same click command in this process, answered like :func:`segkit`.

    For refusals and clear errors: the message, exit status and what is (not) written are the command's own, without
    an interpreter start and segkit's imports (seconds under a loaded test machine). An exception the command did not
    turn into a message (a bug) comes back as its traceback on stderr, as a subprocess would print it, so
    ``"Traceback" not in stderr`` still catches it. What needs a process (a kill, a pipe, ``note:`` lines of
    warnings, entry points of installed packages) stays with :func:`segkit`.
    """
    import traceback

    result = _invoke(args, env, cwd)
    stderr = result.stderr
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        stderr += "Traceback (most recent call last):\n" + "".join(traceback.format_exception(result.exception))
    return subprocess.CompletedProcess(["segkit", *args], result.exit_code, result.stdout, stderr)


def write_plugin(directory: Path, name: str, body: str) -> Path:
    """Write a plugin module ``name.py`` into ``directory`` and return its path."""
    path = directory / f"{name}.py"
    path.write_text(body)
    return path


def kill_run_after(args: list[str] | tuple[str, ...], out: Path, epochs: int = 2, limit: float = 240) -> None:
    """Start ``segkit run ARGS --out OUT`` and SIGKILL it once metrics.csv holds ``epochs`` epochs.

    Fails when the run ends by itself first: the run must be long enough to be killed part-way.
    """
    import signal
    import time

    process = subprocess.Popen([sys.executable, "-m", "segkit", "run", *args, "--out", str(out)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    metrics = out / "metrics.csv"
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline and process.poll() is None:
        if metrics.is_file() and len(metrics.read_text().splitlines()) >= epochs + 1:  # header + epochs
            break
        time.sleep(0.02)
    assert process.poll() is None, "the run ended before it could be killed; make it longer"
    process.send_signal(signal.SIGKILL)
    process.wait()


def train_tiny_lgg(lgg_root: Path, out: Path, *settings: str) -> Path:
    """The tutorial U-Net (width 8) trained 1 epoch at 32x32 on the LGG patients in ``lgg_root``, in-process.

    ``settings`` are ``--set`` assignments, e.g. ``"dataset.context=1"``.
    """
    sets = [arg for setting in settings for arg in ("--set", setting)]
    run_in_process("run", "--dataset", "lgg", "--data-root", str(lgg_root), *sets, "--image-size", "32",
                   "--set", "model.width=8", "--epochs", "1", "--batch-size", "8", "--augment", "none", "--quiet",
                   "--out", str(out))
    return out
