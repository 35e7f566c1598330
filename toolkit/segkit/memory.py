"""How much memory a machine has free, and whether an array segkit is about to make will fit in it.

Checks made before work (a model, a batch, a cached dataset, a resampled volume, the buffers of
sliding-window inference, a batch of resized images) compare an estimate with
:func:`available_bytes` through :func:`require_memory`, so a size that cannot fit is an error that
says what would fit, not an allocation traceback minutes later. The estimates here are the bytes of
the arrays the code allocates (lower bounds: what the code holds at its peak, without the
allocator's overhead); each names the function whose allocations it counts.

Typical use, before resampling a volume::

    needed = volume_preprocess_bytes(source_voxels, target_voxels, channels)
    require_memory(needed, "preprocessing case 'la_003' (512x512x300 voxels)", "use a coarser target spacing")
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from typing import Any

from segkit.errors import ConfigError

__all__ = ["available_bytes", "format_bytes", "require_memory", "smallest_fitting_scale",
           "volume_preprocess_bytes", "volume_inference_bytes", "volume_streamed_bytes", "image_batch_bytes", "FLOAT32"]

FLOAT32 = 4
"""Bytes of one float32 value, the type of every volume and probability map segkit computes with."""

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
    """A byte count for people: ``512.0 MiB``, ``3.20 GiB``, ``1.5 TiB``, ``2.6 EiB``."""
    for unit, size in (("EiB", 2**60), ("PiB", 2**50), ("TiB", 2**40), ("GiB", 2**30)):
        if n >= size:
            return f"{n / size:.2f} {unit}" if unit == "GiB" else f"{n / size:.1f} {unit}"
    return f"{n / 2**20:.1f} MiB"


def require_memory(needed: float, what: str, fits: str = "", device: Any = None) -> None:
    """A :class:`ConfigError` when ``needed`` bytes for ``what`` are more than ``device`` has free.

    The message names the need, the memory available and ``fits`` (what would fit, or how to
    make it fit): ``{what} needs at least 3.20 GiB; this machine has 1.50 GiB of host memory
    available; {fits}.``
    """
    free = available_bytes(device)
    if needed <= free:
        return
    where = "GPU" if getattr(device, "type", None) == "cuda" else "host"
    raise ConfigError(f"{what} needs at least {format_bytes(needed)}; this machine has {format_bytes(free)} of "
                      f"{where} memory available" + (f"; {fits}" if fits else "") + ".")


def smallest_fitting_scale(bytes_at: Callable[[float], float], free: float, largest: float = 1e6) -> float | None:
    """The smallest factor ``f >= 1`` (to 3 significant digits, rounded up) with ``bytes_at(f) <= free``.

    ``bytes_at`` must not grow with ``f`` (a coarser spacing, a smaller image: fewer voxels).
    None when not even ``largest`` fits.
    """
    if bytes_at(largest) > free:
        return None
    if bytes_at(1.0) <= free:
        return 1.0
    low, high = 1.0, largest
    for _ in range(200):
        if high / low < 1 + 1e-4:
            break
        middle = math.sqrt(low * high)
        low, high = (low, middle) if bytes_at(middle) <= free else (middle, high)
    digits = 2 - int(math.floor(math.log10(high)))
    rounded = math.ceil(high * 10**digits) / 10**digits
    return rounded if bytes_at(rounded) <= free else high


def volume_preprocess_bytes(source_voxels: int, target_voxels: int | None, channels: int) -> int:
    """Bytes one case needs at the peak of its preprocessing (:func:`segkit.data.preprocess.resample_case`, then
    :func:`~segkit.data.preprocess.normalize_case`): ``target_voxels`` None when it is not resampled.

    Resampling holds the case as read (float32 image, uint8 label), the resampled float32 image, one label's
    mask of the source (one byte a voxel) and, on the target grid, the labels' interpolated weights within
    their bounding boxes (counted as one float32 map: organs fill part of a scan), the best weight so far
    (float32) and the result (uint8); normalising holds the image twice (in and out) and the label.
    """
    read = channels * FLOAT32 * source_voxels + source_voxels
    normalise = 2 * channels * FLOAT32 * (target_voxels or source_voxels) + (target_voxels or source_voxels)
    if target_voxels is None:
        return max(read, normalise)
    resample = read + channels * FLOAT32 * target_voxels + source_voxels + 9 * target_voxels
    return max(resample, normalise)


def volume_inference_bytes(source_voxels: int, target_voxels: int | None, in_channels: int, out_channels: int) -> int:
    """Bytes one volume needs while a 3D model predicts it whole by sliding windows
    (:func:`segkit.evaluation.volume_evaluate.volume_probabilities`): ``target_voxels`` None when the model sees it
    on its own grid.

    The volume as read (float32, ``in_channels``), its resampled copy, the windows' weighted sum of logits and
    the sum of their weights (float32 on the model's grid), the probabilities computed from the sum, and the
    probabilities brought back to the volume's grid.
    """
    grid = target_voxels or source_voxels
    volume = in_channels * FLOAT32 * source_voxels + (in_channels * FLOAT32 * grid if target_voxels else 0)
    windows = volume + FLOAT32 * grid * (2 * out_channels + 1)
    back = volume + FLOAT32 * out_channels * (grid + source_voxels) if target_voxels else 0
    return max(windows, back)


def volume_streamed_bytes(source_voxels: int, target_voxels: int | None, in_channels: int, out_channels: int,
                          slab_voxels: float, *, kept_probabilities: int = 0, label_masks: int = 0,
                          largest_component: bool = False) -> int:
    """Bytes one volume needs while one 3D model predicts its label map slab by slab
    (:func:`segkit.inference.volume_labels.predict_label_map`): ``target_voxels`` None when the model sees it on
    its own grid; ``slab_voxels``: one patch deep along the slab axis, on the model's grid.

    The volume (float32, normalised in place) and its resampled copy; the ring buffer of logits, a finished
    slab and its probabilities (and, resampled, their copies on the volume's grid); the uint8 label map, the
    float32 probability maps kept and the masks kept for post-processing; and keeping the largest component
    (one label's region, its int32 component numbers and the component kept).
    """
    volume = in_channels * FLOAT32 * (source_voxels + (target_voxels or 0))
    back = 2 * min(slab_voxels * source_voxels / target_voxels, source_voxels) if target_voxels else 0
    slabs = FLOAT32 * out_channels * (3 * slab_voxels + back)
    outputs = source_voxels * (1 + FLOAT32 * kept_probabilities + label_masks)
    component = 6 * source_voxels if largest_component else 0
    return int(volume + slabs + outputs + component)


def image_batch_bytes(batch: int, channels: int, height: int, width: int) -> int:
    """Bytes of a batch of images resized to ``height x width`` (:func:`segkit.inference.predictor.resize_images`):
    8-bit pixels, their float32 copy, and the float32 tensor a model receives."""
    return batch * channels * height * width * (1 + 2 * FLOAT32)
