"""Choosing the device and the precision a run trains with."""

from __future__ import annotations

import os

import torch

from segkit.errors import ConfigError, unknown_name

__all__ = ["select_device", "describe_device", "autocast_dtype", "use_channels_last", "usable_cores",
           "load_average", "busy_cpu_note", "cpu_load_note"]


def select_device(name: str) -> torch.device:
    """``auto`` picks CUDA, then MPS, then the CPU; an explicit device must exist."""
    name = name.strip().lower()
    mps_ok = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps") if mps_ok else torch.device("cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ConfigError(
                f"device {name!r} was asked for, but no CUDA GPU is available to this torch {torch.__version__}. "
                "Use --device cpu, or --device auto to take a GPU when there is one."
            )
        device = torch.device(name)
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"device {name!r} does not exist: this machine has {torch.cuda.device_count()} CUDA GPU(s).")
        return device
    if name == "mps":
        if not mps_ok:
            raise ConfigError("device 'mps' was asked for, but Apple MPS is not available here. Use --device cpu or auto.")
        return torch.device("mps")
    raise unknown_name("device", name, ["auto", "cpu", "cuda", "cuda:0", "mps"], "Use --device auto, cpu, cuda[:N] or mps.")


def describe_device(device: torch.device) -> str:
    """``cpu (2 threads)`` or ``cuda:0 (NVIDIA H100 80GB HBM3)``."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    if device.type == "cpu":
        return f"cpu ({torch.get_num_threads()} threads)"
    return str(device)


def autocast_dtype(device: torch.device, amp: bool, amp_dtype: str) -> torch.dtype | None:
    """The autocast dtype for this device, or None for full precision.

    Mixed precision is used on CUDA only: bf16 where the GPU supports it,
    fp16 (with a gradient scaler) where asked or where bf16 is missing.
    """
    if not amp or device.type != "cuda":
        return None
    if amp_dtype == "bf16" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16


def has_3d_weights(model: torch.nn.Module) -> bool:
    """True when ``model`` holds a 5-D parameter (the weight of a 3D convolution); works for TorchScript too."""
    return any(parameter.dim() == 5 for parameter in model.parameters())


def use_channels_last(setting: bool | str, device: torch.device, model: torch.nn.Module | None = None) -> bool:
    """Whether to train in channels-last memory format, from ``train.channels_last``.

    ``"cuda"`` (the default, and ``true``, its spelling before ``"always"`` existed): on CUDA only,
    where tensor cores want it. ``"always"``: on every device; on CPU it helps some models and
    hurts others (measured on 2 EPYC cores: 1.2x faster for smp's ResNet-18 and RegNetX U-Nets,
    0.8x for the tutorial U-Net). ``false``: never. Whatever the setting, never for a ``model``
    with 3D convolution weights (5D tensors): channels-last is a 4D format, so 3D models and their
    5D inputs train in the default format.
    """
    if model is not None and has_3d_weights(model):
        return False
    if setting == "always":
        return True
    return bool(setting) and device.type == "cuda"


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity mask; all the machine's where that is unknown)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def load_average() -> float | None:
    """The machine's load average over the last minute (runnable processes), or None where unknown."""
    try:
        return float(os.getloadavg()[0])
    except (AttributeError, OSError):  # Windows
        return None


def busy_cpu_note(threads: int, *, load: float | None, cores: int, what: str = "training") -> str | None:
    """One line when other work already keeps at least half of the ``cores`` busy (``load``, the load
    average) and ``threads`` torch threads would share them; None otherwise.

    Threads of one operation wait for each other, so one thread preempted by another process stalls
    them all: on 2 busy cores a run trained at 2-3 images/s with 2 threads and about 30 with one.
    """
    if load is None or threads <= 1 or load + threads <= 1.5 * cores:
        return None
    fit = max(1, min(threads - 1, int(cores - load)))
    return (f"note: this machine is busy (load average {load:.1f} on {cores} cores) and {what} uses {threads} "
            f"threads, which then wait for each other and can run several times slower: start it with "
            f"OMP_NUM_THREADS={fit} (e.g. 'OMP_NUM_THREADS={fit} segkit ...'), or when the machine is free.")


def cpu_load_note(device: torch.device, processes: int = 1, what: str = "training") -> str | None:
    """:func:`busy_cpu_note` for work about to run on ``device`` with this process's torch threads; None on a
    GPU, and under data-parallel training (``processes`` > 1), whose own processes make the load."""
    if device.type != "cpu" or processes > 1:
        return None
    return busy_cpu_note(torch.get_num_threads(), load=load_average(), cores=usable_cores(), what=what)
