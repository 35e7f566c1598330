"""Choosing the device and the precision a run trains with."""

from __future__ import annotations

import torch

from segkit.errors import ConfigError, unknown_name

__all__ = ["select_device", "describe_device", "autocast_dtype", "use_channels_last"]


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


def use_channels_last(setting: bool | str, device: torch.device, model: torch.nn.Module | None = None) -> bool:
    """Whether to train in channels-last memory format, from ``train.channels_last``.

    ``"cuda"`` (the default, and ``true``, its spelling before ``"always"`` existed): on CUDA only,
    where tensor cores want it. ``"always"``: on every device; on CPU it helps some models and
    hurts others (measured on 2 EPYC cores: 1.2x faster for smp's ResNet-18 and RegNetX U-Nets,
    0.8x for the tutorial U-Net). ``false``: never. Whatever the setting, never for a ``model``
    with 3D convolution weights (5D tensors): channels-last is a 4D format, so 3D models and their
    5D inputs train in the default format.
    """
    if model is not None and any(p.dim() == 5 for p in model.parameters()):
        return False
    if setting == "always":
        return True
    return bool(setting) and device.type == "cuda"
