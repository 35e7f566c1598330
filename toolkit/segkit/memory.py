"""How much memory a machine has free, and a one-line refusal when planned work clearly needs more.

Checks made before work (a model, a batch, a cached dataset) compare an estimate with
:func:`available_bytes`, so a size that cannot fit is an error that says what would fit,
not an allocation traceback minutes later.
"""

from __future__ import annotations

import os
from typing import Any

__all__ = ["available_bytes", "format_bytes"]

_UNKNOWN = 1 << 62  # no limit we can read: never refuse


def _meminfo_available() -> int | None:
    """Linux's MemAvailable (free memory plus caches the kernel can drop), in bytes."""
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def available_bytes(device: Any = None) -> int:
    """Bytes free for new tensors on ``device`` (a ``torch.device`` or None for host memory).

    CUDA: the driver's free memory; otherwise the host's available memory (``/proc/meminfo``,
    else ``os.sysconf``); a very large number where neither can be read.
    """
    if device is not None and getattr(device, "type", None) == "cuda":
        import torch

        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    found = _meminfo_available()
    if found is not None:
        return found
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return _UNKNOWN


def format_bytes(n: float) -> str:
    """A byte count for people: ``512.0 MiB``, ``3.20 GiB``, ``1.5 TiB``."""
    for unit, size in (("TiB", 2**40), ("GiB", 2**30)):
        if n >= size:
            return f"{n / size:.2f} {unit}" if unit == "GiB" else f"{n / size:.1f} {unit}"
    return f"{n / 2**20:.1f} MiB"
