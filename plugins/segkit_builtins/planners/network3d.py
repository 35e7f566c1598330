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

__all__ = ["Topology", "topology", "fit_patch", "shrink_patch", "MIN_FEATURE_MAP", "MAX_STAGES", "ANISOTROPY_FACTOR"]

MIN_FEATURE_MAP = 4
"""The smallest feature map size an axis is pooled down to (nnU-Net's 4)."""
MAX_STAGES = 6
ANISOTROPY_FACTOR = 2.0
"""An axis counts as coarse while its spacing is more than this many times the finest axis's."""


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
