"""What a volume dataset holds, for ``segkit inspect``: shapes, spacings, intensities and label volumes.

:func:`summarize_volumes` reads each case of a :class:`~segkit.data.volume.VolumeDataset` once
(its raw image and its label) and keeps only small numbers and a seeded sample of voxels per case,
so memory stays one case plus ``voxels_per_case`` float32 values per case and channel (twice: all
voxels and foreground ones). From the same reads
it gives the slice counts that :func:`segkit.data.inspect.summarize` gives for 2D data, so a volume
set is not read a second time for them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from segkit.data.preprocess import channel_schemes
from segkit.data.volume import VolumeDataset
from segkit.progress import track

__all__ = ["SCALE_RATIO", "summarize_volumes"]

SCALE_RATIO = 10.0
"""Cases' intensity spans differing by this factor or more (an order of magnitude) are flagged."""

PERCENTILES: tuple[float, ...] = (0.5, 50.0, 99.5)


def _range(values: np.ndarray) -> dict[str, list[float]]:
    """Per column of ``values`` (cases x axes): min, median and max."""
    return {"min": np.min(values, axis=0).tolist(), "median": np.median(values, axis=0).tolist(),
            "max": np.max(values, axis=0).tolist()}


def _stats(values: np.ndarray) -> dict[str, float] | None:
    """0.5 / 50 / 99.5 percentiles, mean, std and the count of ``values``; None when there are none."""
    if values.size == 0:
        return None
    values = values.astype(np.float64)
    low, median, high = np.percentile(values, PERCENTILES)
    return {"p0.5": float(low), "p50": float(median), "p99.5": float(high), "mean": float(values.mean()),
            "std": float(values.std()), "voxels": int(values.size)}


def _spread(values: Sequence[float]) -> dict[str, float]:
    """Mean, median, min and max of ``values``."""
    array = np.asarray(values, dtype=np.float64)
    return {"mean": float(array.mean()), "median": float(np.median(array)), "min": float(array.min()),
            "max": float(array.max())}


def _draw(rng: np.random.Generator, positions: np.ndarray | int, count: int) -> np.ndarray:
    """Up to ``count`` of ``positions`` (an array, or ``range(n)`` for an int), sorted; all of them when fewer."""
    total = positions if isinstance(positions, int) else positions.size
    if total <= count:
        return np.arange(total) if isinstance(positions, int) else positions
    chosen = np.sort(rng.choice(total, count, replace=False))
    return chosen if isinstance(positions, int) else positions[chosen]


def _scale(spans: list[tuple[str, float]]) -> dict[str, Any]:
    """The smallest and largest per-case intensity span (99.5th - 0.5th percentile) and their ratio."""
    positive = [(case, span) for case, span in spans if span > 0]
    if not positive:
        return {"smallest": None, "largest": None, "ratio": None, "differs": False, "constant_cases": len(spans)}
    smallest = min(positive, key=lambda item: item[1])
    largest = max(positive, key=lambda item: item[1])
    ratio = largest[1] / smallest[1]
    return {"smallest": {"case": smallest[0], "span": smallest[1]}, "largest": {"case": largest[0], "span": largest[1]},
            "ratio": ratio, "differs": bool(ratio >= SCALE_RATIO), "constant_cases": len(spans) - len(positive)}


def summarize_volumes(dataset: VolumeDataset, voxels_per_case: int = 10_000, seed: int = 0,
                      progress: bool = False) -> dict[str, Any]:
    """Read every case of ``dataset`` once and summarise it (reporting how far it got with ``progress``).

    Returns ``{"slices": ..., "volumes": ...}``. ``slices`` has the keys of
    :func:`segkit.data.inspect.summarize` (what 2D models see along ``dataset.slice_axis``).
    ``volumes`` has ``cases``, ``channels`` and ``labels`` (names), ``shape`` (voxels) and ``spacing``
    (mm), each ``{"min", "median", "max"}`` per file axis, ``anisotropy`` (largest / smallest median
    spacing), ``slice_axis``, ``intensity`` (per channel: the stats of a seeded sample of up to
    ``voxels_per_case`` voxels of each case, ``all`` voxels and ``foreground`` ones, label > 0, and
    ``scale``, the spread of the per-case spans, ``differs`` when they span ``SCALE_RATIO`` or more, and
    ``scheme_3d``, the intensity scheme a 3D run gives the channel) and
    ``label_volumes`` (per label, over the cases that hold it: ``mm3`` and ``voxels`` as mean, median,
    min and max; ``cases`` holding it and ``absent``, the number of cases without it).
    """

    if isinstance(voxels_per_case, bool) or not isinstance(voxels_per_case, int) or voxels_per_case < 1:
        raise ValueError(f"voxels_per_case must be a positive integer, got {voxels_per_case!r}")
    table = dataset.cases_table
    labels = list(dataset.labels)
    channels = list(dataset.channel_names)
    shapes = np.array([list(shape) for shape in table["shape"]], dtype=np.int64)
    spacings = np.array([list(spacing) for spacing in table["spacing"]], dtype=np.float64)
    drawn_all: list[list[np.ndarray]] = [[] for _ in channels]
    drawn_fg: list[list[np.ndarray]] = [[] for _ in channels]
    spans: list[list[tuple[str, float]]] = [[] for _ in channels]
    counts = np.zeros((len(table), len(labels)), dtype=np.int64)
    label_slices = np.zeros(len(labels), dtype=np.int64)
    copied: dict[str, list[list[int]]] = {}
    rows = list(table.itertuples(index=False))
    for k, row in track(enumerate(rows), total=len(rows), desc="inspect", unit="volumes", enabled=progress):
        image = dataset.read_image(tuple(row.image_paths))  # (C, X, Y, Z), raw values
        label = dataset.read_label(row.label_path, len(labels)).array
        rng = np.random.default_rng([seed, k])
        flat = image.reshape(image.shape[0], -1)
        flat_label = label.reshape(-1)
        anywhere = _draw(rng, flat_label.size, voxels_per_case)
        foreground = _draw(rng, np.flatnonzero(flat_label > 0), voxels_per_case)
        for c in range(len(channels)):
            sample = flat[c, anywhere]  # float32 as read: 4 bytes per sampled voxel
            drawn_all[c].append(sample)
            drawn_fg[c].append(flat[c, foreground])
            low, high = np.percentile(sample.astype(np.float64), [PERCENTILES[0], PERCENTILES[-1]])
            spans[c].append((str(row.case), float(high - low)))
        counts[k] = np.bincount(flat_label, minlength=len(labels))[: len(labels)]
        others = tuple(a for a in range(3) if a != dataset.slice_axis)
        for value in range(1, len(labels)):
            label_slices[value] += int((label == value).any(axis=others).sum())
        pairs = [[a, b] for a in range(len(channels)) for b in range(a + 1, len(channels))
                 if np.array_equal(image[a], image[b])]
        if pairs:
            copied[str(row.case)] = pairs
    voxel_mm3 = np.prod(spacings, axis=1)
    label_volumes = {}
    for value in range(1, len(labels)):
        present = counts[:, value] > 0
        holding = counts[present, value]
        label_volumes[labels[value]] = {
            "value": value, "cases": int(present.sum()), "absent": int((~present).sum()),
            "voxels": _spread(holding) if holding.size else None,
            "mm3": _spread(holding * voxel_mm3[present]) if holding.size else None}
    intensity = []
    schemes = channel_schemes(channels)
    for c, name in enumerate(channels):
        intensity.append({"channel": name, "all": _stats(np.concatenate(drawn_all[c])),
                          "foreground": _stats(np.concatenate(drawn_fg[c])), "scale": _scale(spans[c]),
                          "scheme_3d": schemes[c]})
    median_spacing = np.median(spacings, axis=0)
    lesion = int(dataset.index["has_lesion"].astype(bool).sum())
    slices = {
        "cases": len(table), "images": len(dataset), "lesion_slices": lesion, "empty_slices": len(dataset) - lesion,
        "image_sizes": {"x".join(map(str, dataset.slice_shape)): len(dataset)},
        "channels": [dataset.in_channels], "in_channels": dataset.in_channels,
        "mask_values": [value for value in range(len(labels)) if counts[:, value].any()],
        "copied_channels": copied,
    }
    if len(labels) > 2:
        slices["labels"] = labels
        slices["label_slices"] = {labels[value]: int(label_slices[value]) for value in range(1, len(labels))}
    volumes = {
        "cases": len(table), "channels": channels, "labels": labels,
        "shape": _range(shapes), "spacing": _range(spacings),
        "anisotropy": float(median_spacing.max() / median_spacing.min()), "slice_axis": int(dataset.slice_axis),
        "intensity": {"voxels_per_case": voxels_per_case, "seed": seed, "channels": intensity},
        "label_volumes": label_volumes,
    }
    return {"slices": slices, "volumes": volumes}
