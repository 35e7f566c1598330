"""Pure arithmetic for 3D plans: a U-Net's stages, per-axis kernels and strides from a patch and a spacing.

The rules follow nnU-Net's published heuristics in spirit (Isensee et al., 2021): an axis is pooled
(stride 2) only while its feature map keeps at least :data:`MIN_FEATURE_MAP` voxels and its current
spacing is at most twice the finest one, so thick slices are not pooled until the other axes have
caught up; an axis whose spacing is still more than twice the finest gets kernel 1 instead of 3.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["Topology", "Resampling", "topology", "fit_patch", "shrink_patch", "target_spacing", "MIN_FEATURE_MAP",
           "MAX_STAGES", "ANISOTROPY_FACTOR", "THICK_SLICE_FACTOR"]

MIN_FEATURE_MAP = 4
"""The smallest feature map size an axis is pooled down to (nnU-Net's 4)."""
MAX_STAGES = 6
ANISOTROPY_FACTOR = 2.0
"""An axis counts as coarse while its spacing is more than this many times the finest axis's."""
THICK_SLICE_FACTOR = 3.0
"""A dataset has thick slices when one axis's median spacing is more than this many times the others' (and that
axis holds a third of their voxels or fewer): its target along that axis is then the 10th percentile."""
SPACING_TOLERANCE = 0.01
"""Cases whose spacings differ by at most this share along every axis are on one grid: nothing to resample."""


@dataclass(frozen=True)
class Resampling:
    """Where a 3D plan puts its voxels: ``target`` (mm per axis; None when the cases already share one spacing),
    the cases' median ``shape`` and largest ``largest`` on that grid, and ``why`` in one line."""

    target: list[float] | None
    spacing: list[float]
    shape: list[int]
    largest: list[int]
    why: str


@dataclass(frozen=True)
class Topology:
    """A U-Net's stages: per-stage kernel sizes and strides (stage 1 has stride 1), and the total stride per axis."""

    kernels: list[list[int]]
    strides: list[list[int]]

    @property
    def stages(self) -> int:
        return len(self.strides)

    @property
    def total_stride(self) -> list[int]:
        return [math.prod(s[axis] for s in self.strides) for axis in range(len(self.strides[0]))]


def _kernel(spacing: Sequence[float]) -> list[int]:
    finest = min(spacing)
    return [3 if s <= ANISOTROPY_FACTOR * finest else 1 for s in spacing]


def topology(patch: Sequence[int], spacing: Sequence[float], max_stages: int = MAX_STAGES) -> Topology:
    """The stages of a U-Net for ``patch`` (voxels per axis) of voxels of ``spacing`` (mm per axis)."""
    size = [float(p) for p in patch]
    current = [float(s) for s in spacing]
    kernels, strides = [_kernel(current)], [[1] * len(patch)]
    while len(strides) < max_stages:
        poolable = [axis for axis in range(len(size)) if size[axis] / 2 >= MIN_FEATURE_MAP]
        if not poolable:
            break
        finest = min(current[axis] for axis in poolable)
        chosen = [axis for axis in poolable if current[axis] <= ANISOTROPY_FACTOR * finest]
        stride = [2 if axis in chosen else 1 for axis in range(len(size))]
        for axis in chosen:
            size[axis] /= 2
            current[axis] *= 2
        strides.append(stride)
        kernels.append(_kernel(current))
    return Topology(kernels, strides)


def fit_patch(patch: Sequence[int], total_stride: Sequence[int], largest: Sequence[int]) -> list[int]:
    """``patch`` rounded to a multiple of each axis's total stride: up while that stays within ``largest`` (the
    largest case), else down (kept as it is when smaller than the stride)."""
    fitted = []
    for size, stride, limit in zip(patch, total_stride, largest, strict=True):
        up = -(-int(size) // stride) * stride
        down = int(size) // stride * stride
        fitted.append(up if up <= limit else down if down >= stride else min(int(size), int(limit)))
    return fitted


def shrink_patch(patch: Sequence[int], spacing: Sequence[float], median_shape: Sequence[int]) -> list[int] | None:
    """``patch`` one step smaller: the axis largest relative to the median shape (ties: largest in mm) loses an eighth.

    None when every axis is already at :data:`MIN_FEATURE_MAP` * 2 voxels or less.
    """
    order = sorted(range(len(patch)), key=lambda a: (patch[a] / median_shape[a], patch[a] * spacing[a]), reverse=True)
    for axis in order:
        if patch[axis] > 2 * MIN_FEATURE_MAP:
            smaller = list(patch)
            smaller[axis] = max(2 * MIN_FEATURE_MAP, int(patch[axis] * 7 / 8))
            return smaller
    return None


def target_spacing(shapes: Sequence[Sequence[int]], spacings: Sequence[Sequence[float]]) -> Resampling:
    """The voxel size a 3D run resamples every case to, from the cases' shapes and spacings (file axis order).

    The median spacing per axis, so most cases change little. When one axis is much coarser than the others
    (over :data:`THICK_SLICE_FACTOR` times, with a third of their voxels or fewer), the median along it would
    blur the fine axes' detail into thick slices for many cases; that axis takes the 10th percentile of its
    spacings instead (nnU-Net's published rule for anisotropic data). Cases that already share one spacing
    (within :data:`SPACING_TOLERANCE`) are not resampled at all.
    """
    shape_table = [[int(n) for n in shape] for shape in shapes]
    spacing_table = [[float(s) for s in spacing] for spacing in spacings]
    axes = range(len(spacing_table[0]))
    median = [float(np.median([row[a] for row in spacing_table])) for a in axes]
    lowest = [min(row[a] for row in spacing_table) for a in axes]
    highest = [max(row[a] for row in spacing_table) for a in axes]
    if all(hi <= lo * (1 + SPACING_TOLERANCE) for lo, hi in zip(lowest, highest, strict=True)):
        return Resampling(None, median, [int(round(np.median([row[a] for row in shape_table]))) for a in axes],
                          [max(row[a] for row in shape_table) for a in axes],
                          f"every case has the spacing {_rounded(median)} mm (within 1%): no resampling")
    target = list(median)
    why = f"the median spacing of the cases (from {_rounded(lowest)} to {_rounded(highest)} mm)"
    coarse = max(axes, key=lambda a: target[a])
    others = [a for a in axes if a != coarse]
    if others:
        voxels = [np.median([row[a] * sp[a] / target[a] for row, sp in zip(shape_table, spacing_table, strict=True)])
                  for a in axes]
        finest_other = min(target[a] for a in others)
        if (target[coarse] > THICK_SLICE_FACTOR * finest_other
                and voxels[coarse] * THICK_SLICE_FACTOR <= min(voxels[a] for a in others)):
            tenth = float(np.percentile([row[coarse] for row in spacing_table], 10))
            target[coarse] = max(tenth, finest_other)
            why += f"; thick slices along axis {coarse}: its 10th percentile {target[coarse]:.3g} mm there"
    resampled = [[max(1, round(n * s / t)) for n, s, t in zip(row, sp, target, strict=True)]
                 for row, sp in zip(shape_table, spacing_table, strict=True)]
    return Resampling(target, target, [int(round(np.median([row[a] for row in resampled]))) for a in axes],
                      [max(row[a] for row in resampled) for a in axes], why)


def _rounded(values: Sequence[float]) -> list[float]:
    return [round(float(v), 3) for v in values]
