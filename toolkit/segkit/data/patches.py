"""Random 3D patches from cached volumes, with foreground oversampling per label.

:class:`PatchSampler` cuts one patch from a case: with probability ``foreground_fraction`` it
draws a foreground label present in the case (uniformly, so a small label is drawn as often as a
large one), then one of that label's voxels, and places the patch so it holds that voxel at a
random position; otherwise anywhere. A volume smaller than the patch along an axis is padded,
centred (image 0, the mean after normalisation; label 0, background). Only the patch's region is
read, so a memory-mapped case is never loaded whole.

:class:`PatchDataset` serves ``patches_per_epoch`` such patches per epoch as the trainer's
DataLoader expects items: ``(image float32 (C, *P), mask float32 (1, *P) label values, index)``,
the 2D datasets' triple with one more spatial axis. Patch ``i`` of epoch ``e`` comes from case
``cases[i % len(cases)]`` and is the same for the same seed, epoch and ``i`` (resume, workers).
The trainer addresses it as ``data[(i, seed)]`` instead, with the per-item seed its epoch
sampler draws (:class:`segkit.train.sampling.EpochBatchSampler`), so DDP shards and resumed runs
draw the same patches as 2D runs draw the same augmentations.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from segkit.errors import ConfigError

__all__ = ["PatchDataset", "PatchSampler", "check_patch_size"]


def _patch_size(patch_size: Sequence[int], dims: int = 3) -> tuple[int, ...]:
    size = tuple(patch_size)
    if len(size) != dims or any(isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1 for n in size):
        count, unit = ("three", "voxels") if dims == 3 else ("two", "pixels")
        raise ConfigError(f"the patch size must be {count} positive integers ({unit}), got {patch_size!r}")
    return tuple(int(n) for n in size)


def check_patch_size(patch_size: Sequence[int], shapes: Mapping[str, Sequence[int]]) -> None:
    """A ConfigError when the patch is larger than every volume along some axis.

    Smaller volumes are padded to the patch, but a patch larger than the largest volume holds
    nothing but padding along that axis: that is a setting to fix, not data to pad.
    """
    size = _patch_size(patch_size)
    if not shapes:
        raise ConfigError("no volumes to cut patches from")
    for axis in range(3):
        case, shape = max(shapes.items(), key=lambda item: item[1][axis])
        if size[axis] > shape[axis]:
            raise ConfigError(
                f"the patch {'x'.join(map(str, size))} is larger than every volume along axis {axis}: the largest "
                f"there is {case!r} ({'x'.join(map(str, shape))} voxels); use a patch of at most {shape[axis]} "
                f"voxels along axis {axis}")


class PatchSampler:
    """Cuts random patches of ``patch_size`` voxels, a share ``foreground_fraction`` centred on foreground.

    Args:
        patch_size: voxels per axis, ``(X, Y, Z)`` in the volume's axis order (``dims = 2``: pixels,
            ``(H, W)``, for 2D patches of images).
        foreground_fraction: the probability that a patch is placed on a voxel of a foreground label.
        dims: spatial axes of the patch, 3 (volumes) or 2 (images).
    """

    def __init__(self, patch_size: Sequence[int], foreground_fraction: float = 0.33, dims: int = 3) -> None:
        self.patch_size = _patch_size(patch_size, dims)
        if isinstance(foreground_fraction, bool) or not 0.0 <= float(foreground_fraction) <= 1.0:
            raise ConfigError(f"foreground_fraction must be in [0, 1], got {foreground_fraction!r}")
        self.foreground_fraction = float(foreground_fraction)

    def start(self, shape: Sequence[int], foreground: Mapping[int, np.ndarray],
              rng: np.random.Generator) -> tuple[tuple[int, ...], tuple[int, ...], int | None]:
        """Where the next patch starts in a volume of ``shape``, padded; ``(start, padding before, label or None)``.

        ``start`` is in the padded volume's coordinates (``start - before`` in the volume's own);
        the label is the foreground label the patch was placed on, None for a random placement.
        """
        padded = [max(n, p) for n, p in zip(shape, self.patch_size, strict=True)]
        before = tuple((m - n) // 2 for m, n in zip(padded, shape, strict=True))
        present = sorted(k for k, v in foreground.items() if len(v))
        chosen = None
        if rng.random() < self.foreground_fraction and present:
            chosen = present[int(rng.integers(len(present)))]
            coords = foreground[chosen]
            voxel = coords[int(rng.integers(len(coords)))]
            start = []
            for v, b, m, p in zip(voxel, before, padded, self.patch_size, strict=True):
                at = int(v) + b  # the voxel in padded coordinates; the patch [s, s + p) must hold it
                low, high = max(0, at - p + 1), min(at, m - p)
                start.append(int(rng.integers(low, high + 1)))
        else:
            start = [int(rng.integers(0, m - p + 1)) for m, p in zip(padded, self.patch_size, strict=True)]
        return tuple(start), before, chosen

    def sample(self, image: np.ndarray, label: np.ndarray, foreground: Mapping[int, np.ndarray],
               rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """One patch: ``(image (C, *P), label (*P) uint8)``, the image in its own dtype; reads only the patch's region.

        ``image`` (C, X, Y, Z) and ``label`` (X, Y, Z) may be memory-mapped; ``foreground`` maps each
        foreground label to voxel coordinates ``(n, 3)`` (as :meth:`VolumeCache.foreground` gives). With
        ``dims = 2``: ``image`` (C, H, W), ``label`` (H, W), coordinates ``(n, 2)``.
        """
        shape = tuple(label.shape)
        if tuple(image.shape[1:]) != shape:
            raise ValueError(f"image {tuple(image.shape)} and label {shape} differ in shape")
        start, before, _ = self.start(shape, foreground, rng)
        source, target = [], []
        for s, b, n, p in zip(start, before, shape, self.patch_size, strict=True):
            lo, hi = max(0, s - b), min(n, s - b + p)  # the part of the volume inside the patch
            source.append(slice(lo, hi))
            target.append(slice(lo - (s - b), hi - (s - b)))
        image_patch = np.zeros((image.shape[0], *self.patch_size), dtype=image.dtype)
        label_patch = np.zeros(self.patch_size, dtype=np.uint8)
        image_patch[(slice(None), *target)] = image[(slice(None), *source)]
        label_patch[tuple(target)] = label[tuple(source)]
        return image_patch, label_patch


class PatchDataset:
    """``patches_per_epoch`` random patches per epoch from the cached ``cases``, reproducible by seed and epoch.

    A torch-style map dataset: item ``i`` is ``(image float32 (C, *P), mask float32 (1, *P), i)`` like the
    2D datasets' items (mask holds label values), from case ``cases[i % len(cases)]``. Call
    :meth:`set_epoch` before each epoch. Each item opens its case's arrays memory-mapped and drops
    them (and its foreground coordinates) after, so neither the process nor a DataLoader worker accumulates the dataset.

    Raises:
        ConfigError: a patch larger than every volume of the cache along an axis (see :func:`check_patch_size`;
            the training cases alone may all be smaller: they are padded).
    """

    def __init__(self, cache: Any, cases: Sequence[str], sampler: PatchSampler, patches_per_epoch: int,
                 seed: int = 0) -> None:
        self.cases = tuple(str(c) for c in cases)
        if not self.cases:
            raise ConfigError("a patch dataset needs at least one case")
        if isinstance(patches_per_epoch, bool) or not isinstance(patches_per_epoch, int) or patches_per_epoch < 1:
            raise ConfigError(f"patches_per_epoch must be an integer >= 1, got {patches_per_epoch!r}")
        # Against every case of the cache, as segkit plan sizes a patch (it does not know the split) and as the
        # validation volumes are windowed: training cases smaller along an axis are padded to the patch.
        check_patch_size(sampler.patch_size, {case: cache.shape(case) for case in getattr(cache, "cases", self.cases)})
        self.cache = cache
        self.sampler = sampler
        self.patches_per_epoch = patches_per_epoch
        self.seed = int(seed)
        self.epoch = 0
        # As the trainer reads every dataset: the case of item ``i`` (``item_cases[i]``) and an index table.
        self.item_cases = [self.case_of(i) for i in range(patches_per_epoch)]
        self.index = pd.DataFrame({"item": [f"patch_{i}" for i in range(patches_per_epoch)], "case": self.item_cases,
                                   "has_lesion": True})

    def set_epoch(self, epoch: int) -> None:
        """Draw the patches of ``epoch`` from now on."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.patches_per_epoch

    def case_of(self, i: int) -> str:
        """The case patch ``i`` is cut from."""
        return self.cases[i % len(self.cases)]

    def patch(self, i: int, seed: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Patch ``i`` as numpy arrays ``(image (C, *P) float32, label (*P) uint8)``, drawn with ``seed``
        (by default from the dataset's seed, the current epoch and ``i``)."""
        if not 0 <= i < self.patches_per_epoch:
            raise IndexError(f"patch {i} of {self.patches_per_epoch}")
        case = self.case_of(i)
        rng = np.random.default_rng([self.seed, self.epoch, i] if seed is None else seed)
        # read per item, nothing kept: memory stays one patch however many cases there are
        return self.sampler.sample(self.cache.image(case), self.cache.label(case), self.cache.foreground(case), rng)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[Any, Any, int]:
        """Item ``i`` of the current epoch, or ``(i, seed)``: the patch drawn with that seed."""
        import torch

        i, seed = (int(key[0]), int(key[1])) if isinstance(key, tuple) else (int(key), None)
        image, label = self.patch(i, seed)
        return (torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)),
                torch.from_numpy(label.astype(np.float32)[None]), i)
