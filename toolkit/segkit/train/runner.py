"""One training run from configuration to run directory: the run lock and the process group around a
:class:`~segkit.train.session.RunSession`, whose named steps are the run itself."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from segkit.config import RunConfig
from segkit.errors import ConfigError, SegkitError
from segkit.device import select_device
from segkit.train.distributed import DistContext
from segkit.train.events import RunEvents
from segkit.train.final import headline
from segkit.train.run_info import seed_everything, versions
from segkit.runs.rundir import RunDirectory, existing_run_message, holds_a_run
from segkit.runs.runlock import RunLock
from segkit.train.session import RunSession

__all__ = ["train", "seed_everything", "versions", "existing_run_message", "holds_a_run", "headline"]


def train(
    config: RunConfig,
    run_dir: str | Path,
    registry: Any,
    *,
    resume: bool = False,
    extend_to: int | None = None,
    quiet: bool = False,
    echo: Callable[[str], None] = print,
    session: type[RunSession] = RunSession,
) -> dict[str, Any]:
    """Train as ``config`` says, writing everything to ``run_dir``; return the summary.

    ``session`` is the run's steps: :class:`~segkit.train.session.RunSession`, or a subclass that overrides
    some of them (a custom loop changes one step, not a copy of the whole run).

    ``extend_to`` (with ``resume``) trains a finished or interrupted run on to that many
    epochs: the learning-rate schedule is stretched to end there, continuing from the
    current step, and a time budget no longer applies.

    Under torchrun every process calls this; rank 0 alone writes the run directory
    (rank 0's ``run_dir`` is used everywhere), and the process group is left on return or error.
    """
    device = select_device(config.train.device)
    dist = DistContext.from_environment(device.type)
    try:
        if dist.active and device.type == "cuda":
            device = torch.device("cuda", dist.local_rank)
        run = RunDirectory(dist.broadcast(str(run_dir)))
        lock = RunLock(run.root)
        refusal = ""
        if dist.is_main:
            try:
                lock.acquire("resume" if resume else "start a run")
            except ConfigError as error:
                refusal = str(error)
        refusal = dist.broadcast(refusal)
        if refusal:
            raise ConfigError(refusal)
        if dist.is_main:  # this process now is the run's only writer
            run.remove_stale_temporaries()
        try:
            events = RunEvents(getattr(registry, "manager", None), str(run.root), config.train.loggers,
                               active=dist.is_main)
            try:
                return session(config, run, registry, device, dist, events, resume=resume, extend_to=extend_to,
                               quiet=quiet, echo=echo).run()
            except SegkitError:  # refused before its first checkpoint: a new run leaves nothing behind
                if dist.is_main and not resume:
                    run.discard_unstarted()
                raise
            finally:
                events.close()
        finally:
            lock.release()
    finally:
        dist.close()
