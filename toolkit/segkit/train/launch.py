"""``segkit run --nproc-per-node N``: start N training processes through PyTorch's own launcher.

The launcher is ``torch.distributed.run`` (the module behind ``torchrun``), called
in this process with the arguments ``torchrun`` would get::

    python -m torch.distributed.run --standalone --nproc-per-node N -m segkit run ARGS

so ``segkit run --nproc-per-node N ARGS`` and that command do the same. Running it
here rather than in a subprocess lets a failed run exit with its own status (2 for
a user error) instead of torchrun's generic 1 and traceback.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Sequence

__all__ = ["launch", "launch_arguments", "strip_option", "threads_per_process"]


def strip_option(args: Sequence[str], name: str) -> list[str]:
    """``args`` without ``name VALUE`` and ``name=VALUE``."""
    kept: list[str] = []
    skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg == name:
            skip = True
        elif not arg.startswith(f"{name}="):
            kept.append(arg)
    return kept


def launch_arguments(nproc: int, run_args: Sequence[str], plugins: Sequence[str] = ()) -> list[str]:
    """torchrun's arguments for ``segkit [-p PLUGIN ...] run RUN_ARGS`` in ``nproc`` processes on this machine."""
    plugin_args = [arg for plugin in plugins for arg in ("-p", plugin)]
    return ["--standalone", "--nproc-per-node", str(nproc), "-m", "segkit", *plugin_args, "run", *run_args]


def threads_per_process(nproc: int) -> int:
    """This machine's usable CPU cores shared out between ``nproc`` processes (at least 1 each)."""
    from segkit.device import usable_cores

    return max(1, usable_cores() // nproc)


def _exit_status(code: int) -> int:
    """A child's exit code as a shell would report it (a signal ``-N`` becomes ``128 + N``)."""
    return 128 - code if code < 0 else code


def launch(nproc: int, run_args: Sequence[str], plugins: Sequence[str] = ()) -> int:
    """Run ``segkit run RUN_ARGS`` in ``nproc`` processes; return the first failed process's exit status, or 0.

    ``OMP_NUM_THREADS``, when unset, becomes the cores per process (torchrun alone would set 1).
    """
    os.environ.setdefault("OMP_NUM_THREADS", str(threads_per_process(nproc)))
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    try:
        run(parse_args(launch_arguments(nproc, run_args, plugins)))
    except ChildFailedError as error:
        _rank, failure = error.get_first_failure()
        return _exit_status(failure.exitcode) or 1
    except SignalException as error:
        return 128 + int(error.sigval)
    except KeyboardInterrupt:
        return 128 + signal.SIGINT
    return 0
