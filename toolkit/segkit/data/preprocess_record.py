"""A run's volume preprocessing as checkpoints and ONNX exports record it, checked as untrusted input.

A checkpoint's ``preprocessing`` (and a 3D export's metadata) says how volumes reached the model: the slice
axis and padded slice size of a volume dataset, and for a 3D run ``volume``: each channel's intensity scheme,
the dataset's foreground statistics (CT) and the target spacing (:func:`segkit.train.volume_data.data_preprocessing`
writes them). Predict, export and evaluate rebuild the preprocessing from these values, so an edited one would
end in a traceback deep inside (``float('abc')``, ``ChannelStats(**{})``, a negative spacing's empty
resampling). :func:`volume_record_problem` names the first field that segkit could not have written.

(The patch size and window overlap are checked with the sliding-window settings.)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from segkit.data.preprocess import SCHEMES

__all__ = ["volume_record_problem", "STATS_KEYS"]

STATS_KEYS: tuple[str, ...] = ("low", "high", "mean", "std")
"""The foreground statistics of one channel (:class:`segkit.data.preprocess.ChannelStats`)."""


def _number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)


def _whole(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, int)


def _spacing_problem(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, list) or len(value) != 3 or not all(_number(v) and v > 0 for v in value):
        return f"is {value!r} but must be three positive voxel sizes in mm, or absent (no resampling)"
    return None


def _stats_problem(value: Any, channels: int | None) -> str | None:
    if value is None:
        return None
    if not isinstance(value, list) or (channels is not None and len(value) != channels):
        return f"is {value!r} but must list one table of {', '.join(STATS_KEYS)} per channel"
    for k, entry in enumerate(value):
        if not isinstance(entry, Mapping) or sorted(entry) != sorted(STATS_KEYS) \
                or not all(_number(entry[key]) for key in STATS_KEYS):
            return f"holds {entry!r} for channel {k}; each channel needs the finite numbers {', '.join(STATS_KEYS)}"
        if entry["low"] > entry["high"] or entry["std"] < 0:
            return f"holds {dict(entry)!r} for channel {k}; its low must not exceed its high, nor its std be negative"
    return None


def _volume_problem(volume: Any, channels: int | None) -> tuple[str, str] | None:
    if not isinstance(volume, Mapping):
        return "volume", f"is {volume!r} but must be a table of schemes, stats and target_spacing"
    schemes = volume.get("schemes")
    if schemes is not None:
        if not isinstance(schemes, list) or not schemes or not all(s in SCHEMES for s in schemes) \
                or (channels is not None and len(schemes) != channels):
            count = f"{channels} of" if channels is not None else "one per channel, each"
            return "volume.schemes", f"is {schemes!r} but must list {count} {', '.join(SCHEMES)}"
        channels = len(schemes)
    stats = volume.get("stats")
    problem = _stats_problem(stats, channels)
    if problem:
        return "volume.stats", problem
    if schemes is not None and "ct" in schemes and stats is None:
        return "volume.stats", "is missing, but a channel is normalised as CT (scheme 'ct') with these statistics"
    problem = _spacing_problem(volume.get("target_spacing"))
    return ("volume.target_spacing", problem) if problem else None


def volume_record_problem(record: Mapping[str, Any], channels: int | None = None,
                          trained_spacing: Any = None) -> tuple[str, str] | None:
    """``(field, problem)`` for the first volume field of ``record`` (a checkpoint's ``preprocessing``, or an ONNX
    export's metadata values decoded) that segkit could not have written; None when all are usable or absent.

    ``channels``: the model's input channels, when known (one scheme and one stats table each).
    ``trained_spacing``: ``train.target_spacing`` of the run's config, which the record must repeat.
    Checked: ``slice_axis`` (0, 1 or 2), ``slice_shape`` (two sizes >= 1, or ``[0, 0]``: not recorded),
    ``volume.schemes``, ``volume.stats`` and ``volume.target_spacing``.
    """
    if "slice_axis" in record and not (_whole(record["slice_axis"]) and record["slice_axis"] in (0, 1, 2)):
        return "slice_axis", f"is {record['slice_axis']!r} but must be 0, 1 or 2 (the volume axis sliced along)"
    if "slice_shape" in record:
        shape = record["slice_shape"]
        if not isinstance(shape, list) or len(shape) != 2 or not all(_whole(n) for n in shape) \
                or not (all(n >= 1 for n in shape) or shape == [0, 0]):
            return "slice_shape", f"is {shape!r} but must be two sizes >= 1 (the padded slice)"
    if record.get("volume") is None:
        return None
    problem = _volume_problem(record["volume"], channels)
    if problem:
        return problem
    recorded = record["volume"].get("target_spacing")
    if isinstance(trained_spacing, list) and all(_number(t) for t in trained_spacing) \
            and [float(t) for t in trained_spacing] != [float(t) for t in recorded or []]:
        return "volume.target_spacing", f"is {recorded!r} but the run trained with train.target_spacing = " \
                                        f"{list(trained_spacing)!r}"
    return None
