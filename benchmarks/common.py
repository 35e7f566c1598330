"""Shared pieces of the benchmark scripts: the machine they ran on, markdown tables, timing helpers.

Imported by the scripts in this folder (``python benchmarks/X.py`` puts the folder on
``sys.path``). Nothing here imports torch at module level, so ``list_cold_start.py``
stays a fair measurement of a command that should not import torch either.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "REPO",
    "default_lgg_root",
    "cpu_model",
    "machine",
    "describe_machine",
    "markdown_table",
    "median",
    "proc_status_kib",
    "segkit_in_process",
    "HandLoop",
    "hand_training_images_per_second",
]

REPO = Path(__file__).resolve().parent.parent


def proc_status_kib(field: str = "VmHWM") -> int:
    """A memory field of this process's /proc/self/status in KiB (VmHWM: peak resident so far; VmRSS: now)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status (Linux only)")


def segkit_in_process(arguments: Sequence[str]) -> None:
    """Run ``segkit ARGUMENTS`` in this process (so its memory is this process's), its stdout swallowed.

    Raises ``SystemExit`` with segkit's exit code when the command fails; returns on success.
    """
    import contextlib
    import io

    from segkit.cli import cli

    with contextlib.redirect_stdout(io.StringIO()):
        try:
            cli.main(args=list(arguments), prog_name="segkit", standalone_mode=False)
        except SystemExit as exit_:
            if exit_.code:
                raise


def default_lgg_root() -> Path:
    """Where the benchmarks look for the LGG patients unless told: ``<repo>/../shared/data/lgg/kaggle_3m``."""
    return REPO.parent / "shared" / "data" / "lgg" / "kaggle_3m"


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else what :mod:`platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    name = platform.processor()
    return name if name and name != platform.machine() else platform.machine()


def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def machine(with_torch: bool = True) -> dict[str, Any]:
    """The machine and software a measurement ran on, as a flat dict (JSON-ready).

    ``with_torch=False`` leaves out everything that needs ``import torch``.
    """
    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "usable_cores": _usable_cores(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
    }
    if not with_torch:
        return info
    import torch

    info["torch"] = torch.__version__
    info["torch_threads"] = torch.get_num_threads()
    try:
        import segmentation_models_pytorch as smp

        info["smp"] = smp.__version__
    except ImportError:
        info["smp"] = None
    try:
        from segkit import __version__ as segkit_version

        info["segkit"] = segkit_version
    except ImportError:
        info["segkit"] = None
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["gpu_count"] = torch.cuda.device_count()
        info["cuda"] = torch.version.cuda
    else:
        info["gpu"] = None
    return info


def describe_machine(info: dict[str, Any] | None = None) -> str:
    """One line for the end of a benchmark's output."""
    info = info or machine()
    text = f"machine: {info['cpu']}, {info['usable_cores']} usable of {info['cpu_count']} CPUs, {info['os']}"
    if "torch" in info:
        text += f"; torch {info['torch']} ({info['torch_threads']} threads)"
        if info.get("smp"):
            text += f", smp {info['smp']}"
        if info.get("segkit"):
            text += f", segkit {info['segkit']}"
    text += f", Python {info['python']}"
    if info.get("gpu"):
        text += f"; GPU {info['gpu']} (CUDA {info['cuda']}, {info['gpu_count']} visible)"
    return text


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A GitHub markdown table; floats get 2 decimals (3 significant digits below 1)."""

    def cell(value: Any) -> str:
        if isinstance(value, float):
            if value != value:  # NaN
                return "n/a"
            return f"{value:.3g}" if abs(value) < 1 else f"{value:.2f}"
        return "" if value is None else str(value)

    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


class HandLoop:
    """A minimal PyTorch training loop: forward, loss, backward, Adam step over in-memory tensors. Nothing else.

    ``images`` and ``masks`` are tensors already on the model's device; batches are
    consecutive slices, wrapping around. ``run(steps)`` returns the wall seconds of
    ``steps`` steps (after ``sync()``, e.g. ``torch.cuda.synchronize``).
    """

    def __init__(self, model: Any, loss_fn: Any, images: Any, masks: Any, batch_size: int, *, lr: float = 1e-3,
                 autocast_dtype: Any = None, sync: Callable[[], None] = lambda: None) -> None:
        import torch

        self.model, self.loss_fn = model, loss_fn
        self.images, self.masks, self.batch_size = images, masks, batch_size
        self.optimizer = torch.optim.Adam(model.parameters(), lr=lr)
        self.autocast_dtype, self.sync = autocast_dtype, sync
        self.position = 0

    def step(self) -> None:
        import contextlib

        import torch

        if self.position + self.batch_size > self.images.shape[0]:
            self.position = 0
        x = self.images[self.position:self.position + self.batch_size]
        y = self.masks[self.position:self.position + self.batch_size]
        self.position += self.batch_size
        context = (torch.autocast(x.device.type, dtype=self.autocast_dtype) if self.autocast_dtype is not None
                   else contextlib.nullcontext())
        with context:
            loss = self.loss_fn(self.model(x), y)
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def run(self, steps: int) -> float:
        self.model.train()
        self.sync()
        started = time.perf_counter()
        for _ in range(steps):
            self.step()
        self.sync()
        return time.perf_counter() - started


def hand_training_images_per_second(model: Any, loss_fn: Any, images: Any, masks: Any, batch_size: int, *,
                                    steps: int, warmup: int = 2, repeats: int = 1, **options: Any) -> list[float]:
    """images/s of :class:`HandLoop`: ``warmup`` untimed steps, then ``repeats`` timed passes of ``steps`` steps."""
    loop = HandLoop(model, loss_fn, images, masks, batch_size, **options)
    if warmup:
        loop.run(warmup)
    return [steps * batch_size / loop.run(steps) for _ in range(repeats)]
