"""Per-case preprocessing of a volume before training on patches: intensity normalisation by modality
and optional resampling to a target spacing (the rules of nnU-Net, written for segkit).

- A channel named ``CT`` (any case) is clipped to the dataset's foreground 0.5th..99.5th percentiles,
  then shifted and scaled by the foreground mean and standard deviation: Hounsfield units mean the
  same in every scan, so one dataset-wide mapping keeps them comparable.
- Every other channel (MRI and the rest) is z-scored per case: its own mean and standard deviation,
  as scanner intensities differ between cases.
- ``none`` leaves a channel as stored (already normalised data).

Typical use::

    schemes = channel_schemes(dataset.channel_names)           # ("zscore",) for an MRI set
    stats = foreground_stats(pairs) if "ct" in schemes else None
    image, label = resample_case(image, label, spacing, target_spacing)
    image = normalize_case(image, schemes, stats)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from segkit.errors import ConfigError, DataError, unknown_name
from segkit import memory

__all__ = [
    "SCHEMES",
    "ChannelStats",
    "channel_scheme",
    "channel_schemes",
    "check_resampling_fits",
    "case_rng",
    "foreground_sample",
    "foreground_stats",
    "stats_of_samples",
    "normalize_case",
    "resample_case",
    "resample_image",
    "resample_labels",
    "resampled_shape",
    "resize_probabilities",
    "resize_slabs",
    "smallest_target_spacing",
]

SCHEMES: tuple[str, ...] = ("zscore", "ct", "none")
"""The intensity schemes: per-case z-score, dataset-wide CT clip-and-scale, none."""

_EPS = 1e-8


@dataclass(frozen=True)
class ChannelStats:
    """One channel's foreground intensities over a dataset: percentiles ``low`` (0.5) and ``high`` (99.5),
    ``mean`` and ``std``."""

    low: float
    high: float
    mean: float
    std: float

    def to_dict(self) -> dict[str, float]:
        """The stats as a plain dict (for cache.json)."""
        return asdict(self)


def channel_scheme(modality: str, override: str | None = None) -> str:
    """The intensity scheme of a channel: ``override`` when given, else "ct" for a channel named CT, else "zscore"."""
    if override is not None:
        if override not in SCHEMES:
            raise unknown_name("intensity scheme", str(override), SCHEMES)
        return override
    return "ct" if str(modality).strip().lower() == "ct" else "zscore"


def channel_schemes(channels: Sequence[str], overrides: Sequence[str] | None = None) -> tuple[str, ...]:
    """The scheme of every channel; ``overrides`` (one per channel) replaces the choice by name."""
    if overrides is None:
        return tuple(channel_scheme(c) for c in channels)
    if len(overrides) != len(channels):
        raise ConfigError(f"{len(overrides)} intensity scheme(s) {list(overrides)} for {len(channels)} channel(s) "
                          f"({', '.join(channels)}); give one of {', '.join(SCHEMES)} per channel")
    return tuple(channel_scheme(c, o) for c, o in zip(channels, overrides, strict=True))


def foreground_sample(image: np.ndarray, label: np.ndarray, voxels: int = 10_000,
                      rng: np.random.Generator | None = None) -> np.ndarray:
    """Up to ``voxels`` foreground (label > 0) intensities of one case, ``(C, n)`` float64, drawn with ``rng``
    (all of them when there are fewer): what :func:`foreground_stats` keeps of a case."""
    image = np.asarray(image)
    if image.shape[1:] != np.shape(label):
        raise DataError(f"an image of shape {image.shape[1:]} with a label of shape {np.shape(label)}")
    where = np.flatnonzero(np.asarray(label).reshape(-1) > 0)
    if where.size > voxels:
        where = np.sort((rng or np.random.default_rng(0)).choice(where, voxels, replace=False))
    return image.reshape(image.shape[0], -1)[:, where].astype(np.float64)


def stats_of_samples(samples: Iterable[np.ndarray]) -> tuple[ChannelStats, ...]:
    """Each channel's :class:`ChannelStats` over the cases' :func:`foreground_sample` arrays put together."""
    drawn = list(samples)
    values = np.concatenate(drawn, axis=1) if drawn else np.empty((0, 0))
    if values.size == 0:
        raise DataError("no foreground voxels (label > 0) in any case: CT normalisation needs them; "
                        "use the 'zscore' scheme for this dataset")
    stats = []
    for channel in values:
        low, high = np.percentile(channel, [0.5, 99.5])
        stats.append(ChannelStats(float(low), float(high), float(channel.mean()), float(channel.std())))
    return tuple(stats)


def case_rng(seed: int, index: int) -> np.random.Generator:
    """The generator that draws case ``index``'s foreground sample: the same whichever process draws it."""
    return np.random.default_rng([int(seed), int(index)])


def foreground_stats(samples: Iterable[tuple[np.ndarray, np.ndarray]], voxels_per_case: int = 10_000,
                     seed: int = 0) -> tuple[ChannelStats, ...]:
    """Each channel's foreground (label > 0) intensity stats over ``samples``.

    ``samples`` yields ``(image (C, X, Y, Z), label (X, Y, Z))`` one case at a time; up to
    ``voxels_per_case`` foreground voxels of case ``k`` are drawn with :func:`case_rng` ``(seed, k)``, so
    the cost stays one case in memory plus ``voxels_per_case`` values per case, and the cases can be
    sampled in any order or process (:func:`foreground_sample`, :func:`stats_of_samples`).
    """
    return stats_of_samples(foreground_sample(image, label, voxels_per_case, case_rng(seed, k))
                            for k, (image, label) in enumerate(samples))


def normalize_case(image: np.ndarray, schemes: Sequence[str],
                   stats: Sequence[ChannelStats] | None = None, *, in_place: bool = False) -> np.ndarray:
    """``image`` (C, X, Y, Z) normalised channel by channel, as float32.

    zscore: ``(x - mean) / std`` of the whole case (std 0: only the mean is taken away); ct:
    clipped to ``stats``' percentiles, then ``(x - stats.mean) / stats.std``; none: unchanged.
    ``in_place`` overwrites a writeable float32 ``image`` instead of allocating a copy (a large volume
    then exists once).
    """
    image = np.asarray(image)
    if len(schemes) != image.shape[0]:
        raise ConfigError(f"{len(schemes)} intensity scheme(s) for an image of {image.shape[0]} channel(s)")
    reuse = in_place and image.dtype == np.float32 and image.flags.writeable
    out = image if reuse else np.empty(image.shape, dtype=np.float32)
    for c, scheme in enumerate(schemes):
        channel = image[c].astype(np.float32, copy=False)
        if scheme == "zscore":
            mean, std = float(channel.mean(dtype=np.float64)), float(channel.std(dtype=np.float64))
            np.subtract(channel, mean, out=out[c])
            if std > _EPS:
                out[c] /= std
        elif scheme == "ct":
            if stats is None or c >= len(stats):
                raise ConfigError(f"channel {c} is normalised as CT but no foreground stats were given for it")
            s = stats[c]
            np.clip(channel, s.low, s.high, out=out[c])
            out[c] -= s.mean
            out[c] /= max(s.std, _EPS)
        elif scheme == "none":
            if out[c] is not channel:
                out[c] = channel
        else:
            raise unknown_name("intensity scheme", str(scheme), SCHEMES)
    return out


def resampled_shape(shape: Sequence[int], spacing: Sequence[float], target_spacing: Sequence[float]) -> tuple[int, ...]:
    """The voxel shape of a volume of ``shape`` at ``spacing`` once resampled to ``target_spacing`` (at least 1)."""
    if len(target_spacing) != len(shape) or any(not np.isfinite(t) or t <= 0 for t in target_spacing):
        raise ConfigError(f"the target spacing must be {len(shape)} positive numbers (mm), got {tuple(target_spacing)}")
    return tuple(max(1, int(np.rint(n * s / t))) for n, s, t in zip(shape, spacing, target_spacing, strict=True))


def _mm(spacing: Sequence[float]) -> str:
    return "[" + ", ".join(f"{float(s):.4g}" for s in spacing) + "] mm"


def smallest_target_spacing(target_spacing: Sequence[float], bytes_at: Callable[[tuple[float, ...]], float],
                            device: Any = None) -> tuple[float, ...] | None:
    """``target_spacing`` made uniformly coarser (every axis times one factor, 3 significant digits) until the
    arrays ``bytes_at(spacing)`` counts fit in the free memory of ``device``; None when no spacing up to a
    million times coarser does (the rest of the work alone does not fit)."""
    target = tuple(float(t) for t in target_spacing)
    free = memory.available_bytes(device)
    scale = memory.smallest_fitting_scale(lambda f: bytes_at(tuple(t * f for t in target)), free)
    if scale is None:
        return None
    coarser = tuple(float(f"{t * scale:.3g}") for t in target)
    return coarser if bytes_at(coarser) <= free else tuple(t * scale for t in target)


def check_resampling_fits(shape: Sequence[int], spacing: Sequence[float], target_spacing: Sequence[float], channels: int,
                          *, what: str = "a volume", setting: str = "the target spacing") -> None:
    """A :class:`ConfigError` before a volume of ``shape`` (voxels at ``spacing`` mm) resampled to
    ``target_spacing`` is preprocessed when its arrays (:func:`segkit.memory.volume_preprocess_bytes`) do not
    fit in memory; the message names the size, the memory available and the smallest target spacing that fits."""
    source = int(np.prod([int(n) for n in shape], dtype=np.float64))

    def needed(target: Sequence[float]) -> float:
        voxels = int(np.prod(resampled_shape(shape, spacing, target), dtype=np.float64))
        return memory.volume_preprocess_bytes(source, voxels, channels)

    if needed(target_spacing) <= memory.available_bytes():
        return
    size = "x".join(str(n) for n in resampled_shape(shape, spacing, target_spacing))
    coarser = smallest_target_spacing(target_spacing, needed)
    fits = (f"the smallest target spacing that fits is {_mm(coarser)} (or leave it out to keep each case's own)"
            if coarser is not None else "not even the volume as stored fits")
    memory.require_memory(needed(target_spacing), f"{setting} {_mm(target_spacing)} resamples {what} "
                          f"({'x'.join(str(int(n)) for n in shape)} voxels of {_mm(spacing)}, {channels} channel(s)) "
                          f"to {size} voxels, which", fits)


def resample_image(image: np.ndarray, spacing: Sequence[float], target_spacing: Sequence[float] | None) -> np.ndarray:
    """``image`` ``(C, X, Y, Z)`` float32 resampled trilinearly to ``target_spacing`` (unchanged when None or equal).

    A result that cannot fit in memory is a :class:`ConfigError` before it is allocated (:func:`check_resampling_fits`).
    """
    image = np.asarray(image, dtype=np.float32)
    if target_spacing is None or np.allclose(spacing, target_spacing, rtol=0, atol=1e-4):
        return image
    size = resampled_shape(image.shape[1:], spacing, target_spacing)
    if size == tuple(image.shape[1:]):
        return image
    check_resampling_fits(image.shape[1:], spacing, target_spacing, image.shape[0])
    import torch
    import torch.nn.functional as F

    with torch.no_grad():
        tensor = torch.from_numpy(np.ascontiguousarray(image))[None]
        return F.interpolate(tensor, size=size, mode="trilinear", align_corners=False)[0].numpy()


def resize_probabilities(probabilities: Any, size: Sequence[int]) -> Any:
    """Probabilities ``(K, X, Y, Z)`` (a torch tensor) interpolated trilinearly to the spatial ``size``.

    How a model trained on resampled volumes is brought back to a case's own grid, as nnU-Net does:
    interpolating probabilities rather than labels gives smooth boundaries, and a trilinear weight sums
    to one, so softmax probabilities still sum to one per voxel.
    """
    import torch
    import torch.nn.functional as F

    size = tuple(int(n) for n in size)
    if tuple(probabilities.shape[1:]) == size:
        return probabilities
    with torch.no_grad():
        return F.interpolate(probabilities[None].float(), size=size, mode="trilinear", align_corners=False)[0]


def _linear_source(size_in: int, size_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each output position along an axis resized linearly (``align_corners=False``, PyTorch's rule): the
    two source positions it reads and the weight of the second."""
    scale = size_in / size_out
    source = np.maximum((np.arange(size_out, dtype=np.float64) + 0.5) * scale - 0.5, 0.0)
    low = np.minimum(np.floor(source).astype(np.int64), size_in - 1)
    high = np.minimum(low + 1, size_in - 1)
    return low, high, source - low


def resize_slabs(slabs: Iterable[tuple[int, int, Any]], axis: int, source_shape: Sequence[int],
                 size: Sequence[int]) -> Iterator[tuple[int, int, Any]]:
    """Slabs of a map ``(K, *source_shape)`` along ``axis``, resized as :func:`resize_probabilities` resizes the
    whole map, as slabs of the resized map ``(K, *size)`` along the same axis.

    ``slabs`` yields ``(first, last, values (K, ...))`` torch tensors covering the axis once, in order (as
    :func:`segkit.inference.sliding_window.window_slabs` gives them). Each arriving slab is resized across the
    other axes at once; along ``axis`` an output position is interpolated between its two source positions as
    soon as both have arrived, so only a slab and one position before it are held, never the whole map.
    """
    import torch
    import torch.nn.functional as F

    size_in, size_out = int(source_shape[axis]), int(size[axis])
    plane = [int(n) for k, n in enumerate(size) if k != axis]
    modes = {1: "linear", 2: "bilinear"}
    low, high, weight = _linear_source(size_in, size_out)
    held: Any = None  # source positions [base, arrived) resized across the plane: (K, positions, *plane)
    base = arrived = done = 0
    for first, last, values in slabs:
        if first != arrived:
            raise ValueError(f"slabs must cover axis {axis} in order: expected one from {arrived}, got {first}")
        moved = torch.movedim(values.float(), axis + 1, 1)
        if list(moved.shape[2:]) != plane:
            moved = F.interpolate(moved, size=plane, mode=modes[len(plane)], align_corners=False)
        held = moved if held is None else torch.cat([held, moved], 1)
        arrived = last
        ready = done
        while ready < size_out and high[ready] < arrived:
            ready += 1
        if ready > done:
            a, b = torch.from_numpy(low[done:ready] - base), torch.from_numpy(high[done:ready] - base)
            w = torch.from_numpy(weight[done:ready]).to(held.dtype).view(1, -1, *[1] * len(plane))
            out = held.index_select(1, a) * (1 - w) + held.index_select(1, b) * w
            yield done, ready, torch.movedim(out, 1, axis + 1).contiguous()
            done = ready
        if done < size_out:  # keep only the source positions later outputs still read
            keep = min(int(low[done]), arrived) - base  # (a slab may end before the next output's first source)
            if keep > 0:
                held, base = held[:, keep:], base + keep
    if done != size_out:
        raise ValueError(f"slabs ended at {arrived} of {size_in} positions along axis {axis}")


def resample_case(image: np.ndarray, label: np.ndarray, spacing: Sequence[float],
                  target_spacing: Sequence[float] | None) -> tuple[np.ndarray, np.ndarray]:
    """``(image (C, X, Y, Z) float32, label (X, Y, Z) uint8)`` resampled to ``target_spacing``.

    The image is interpolated trilinearly; the label label by label: each label's indicator is
    interpolated trilinearly and every voxel takes the label of the largest value (smoother
    boundaries than nearest-neighbour and no shift of half a voxel; tests/test_volume_cache.py compares
    both against an exact sphere). Nothing changes when ``target_spacing`` is None or equals
    ``spacing`` (within 1e-4 mm). A result that cannot fit in memory is a :class:`ConfigError` before
    it is allocated (:func:`check_resampling_fits`).
    """
    if target_spacing is None or np.allclose(spacing, target_spacing, rtol=0, atol=1e-4):
        return np.asarray(image, dtype=np.float32), np.asarray(label, dtype=np.uint8)
    size = resampled_shape(label.shape, spacing, target_spacing)
    if size == tuple(label.shape):
        return np.asarray(image, dtype=np.float32), np.asarray(label, dtype=np.uint8)
    check_resampling_fits(label.shape, spacing, target_spacing, int(np.shape(image)[0]))
    out = resample_image(image, spacing, target_spacing)
    return out, resample_labels(np.asarray(label), size)


def _interpolate_box(values: np.ndarray, axes: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> np.ndarray:
    """``values`` interpolated linearly along each axis at the given ``(low, high, weight)`` source positions."""
    import torch

    out = torch.from_numpy(values)
    for k, (low, high, weight) in enumerate(axes):
        shape = [1] * out.dim()
        shape[k] = -1
        w = torch.from_numpy(weight.astype(np.float32)).view(shape)
        a, b = out.index_select(k, torch.from_numpy(low)), out.index_select(k, torch.from_numpy(high))
        out = a + (b - a) * w
    return out.numpy()


def resample_labels(label: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """A label volume resampled to ``size`` label by label: each label's indicator interpolated trilinearly
    (``align_corners=False``, as :func:`torch.nn.functional.interpolate`), every voxel the label of the largest.

    Each foreground label is interpolated only inside its bounding box (what its voxels can reach), and the
    background's weight is one minus theirs (trilinear weights sum to one), so a CT case whose organs fill a
    small part of it costs a small part of the volume; the lower label wins a tie, as it always did.
    """
    size = tuple(int(n) for n in size)
    result = np.zeros(size, dtype=np.uint8)
    axes = [_linear_source(n, m) for n, m in zip(label.shape, size, strict=True)]
    boxes: list[tuple[int, tuple[slice, ...], np.ndarray]] = []
    for value in (v for v in np.unique(label).tolist() if v != 0):
        mask = label == value
        source, target, around = [], [], []
        for k, (low, high, weight) in enumerate(axes):
            present = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != k)))
            first = int(np.searchsorted(high, present[0], "left"))  # outputs that read a voxel of the label
            last = int(np.searchsorted(low, present[-1], "right"))
            start, stop = int(low[first]), int(high[last - 1]) + 1
            source.append(slice(start, stop))
            target.append(slice(first, last))
            around.append((low[first:last] - start, high[first:last] - start, weight[first:last]))
        boxes.append((value, tuple(target), _interpolate_box(mask[tuple(source)].astype(np.float32), around)))
        del mask
    if not boxes:
        return result
    union = tuple(slice(min(b[1][k].start for b in boxes), max(b[1][k].stop for b in boxes)) for k in range(len(size)))
    best = np.ones([u.stop - u.start for u in union], dtype=np.float32)  # the background's weight: 1 - the others'
    for _, box, weight in boxes:
        best[tuple(slice(b.start - u.start, b.stop - u.start) for b, u in zip(box, union))] -= weight
    chosen = result[union]
    for value, box, weight in boxes:  # ascending values: a higher label must beat the lower ones strictly
        inside = tuple(slice(b.start - u.start, b.stop - u.start) for b, u in zip(box, union))
        better = weight > best[inside]
        chosen[inside][better] = value
        np.maximum(best[inside], weight, out=best[inside])
    return result
