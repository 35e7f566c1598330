"""The device-resident data path: decode once, keep uint8 tensors on the training device, augment per batch.

``train.loader = "device"`` decodes and resizes every item once into one uint8 tensor
on the training device; each batch is then gathered by index and augmented there in
one batched pass (:mod:`segkit.data.batch_augment`) instead of item by item in CPU
worker processes. The batches come from the same :class:`EpochBatchSampler` as the
worker path, so sampling rules (foreground oversampling) apply to both; augmentation
parameters depend only on (seed, epoch, step, rank).

``"auto"`` picks the device path on CUDA when the cache takes at most
:data:`CUDA_CACHE_SHARE` of the free GPU memory, and the worker path otherwise.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from segkit.data import build_transform
from segkit.data.augment_presets import preset_ranges
from segkit.data.batch_augment import BatchAugment, augment_generator
from segkit.data.modality import SEED_SALT
from segkit.errors import ConfigError, DataError
from segkit.labels import IGNORE

__all__ = ["CUDA_CACHE_SHARE", "LoaderChoice", "DeviceCache", "DeviceBatches", "choose_loader", "cache_bytes"]

#: The largest share of the free GPU memory the cache may take under ``loader = "auto"``; the rest
#: is left to the model's weights, optimizer state and activations.
CUDA_CACHE_SHARE = 0.25
#: An explicit ``loader = "device"`` is refused when the cache would take more than this share.
HARD_CACHE_SHARE = 0.8


@dataclass(frozen=True)
class LoaderChoice:
    """Which data path a run uses and why (shown on the run's first line and in summary.json)."""

    path: str
    reason: str


def _item_shape(dataset: Any, image_size: int) -> tuple[int, int, int]:
    """``(channels, height, width)`` of a cached item; DataError when sizes differ and no size is set."""
    if image_size:
        return int(dataset.in_channels), image_size, image_size
    image, _ = dataset.read(0)
    return int(dataset.in_channels), int(image.shape[0]), int(image.shape[1])


def cache_bytes(dataset: Any, image_size: int) -> int:
    """Bytes the device cache of ``dataset`` takes: images plus masks, one byte per value."""
    channels, height, width = _item_shape(dataset, image_size)
    return len(dataset) * (channels + 1) * height * width


def _available_host_bytes() -> int:
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # not Linux: no limit we can read
        return 1 << 62


def _gib(n: int) -> str:
    """A byte count for people: MiB below one GiB."""
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def choose_loader(config: Any, dataset: Any, device: torch.device) -> LoaderChoice:
    """Resolve ``train.loader``; DataError when ``"device"`` is asked for and the cache cannot fit."""
    asked = config.train.loader
    if asked == "workers":
        return LoaderChoice("workers", "train.loader = workers")
    if len(getattr(config.train, "patch_size", ())) == 2:  # images at their own sizes: nothing of one size to cache
        if asked == "device":
            raise ConfigError(f"train.loader = device keeps the dataset resized to one size on the device, and "
                              f"train.patch_size = {config.train.patch_size} trains on patches of the images at their "
                              "own sizes; use train.loader = workers (or auto).")
        return LoaderChoice("workers", "auto: a run on 2D patches crops each image at its own size")
    needed = cache_bytes(dataset, config.train.image_size)
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        where = f"free GPU memory {_gib(free)}"
    else:
        free, where = _available_host_bytes(), f"available memory {_gib(_available_host_bytes())}"
    if asked == "auto":
        if device.type != "cuda":
            return LoaderChoice("workers", f"auto: training on {device.type}, where the batched path gains nothing")
        if needed <= CUDA_CACHE_SHARE * free:
            return LoaderChoice("device", f"auto: the cache ({_gib(needed)}) fits in {CUDA_CACHE_SHARE:.0%} of the {where}")
        return LoaderChoice("workers", f"auto: the cache ({_gib(needed)}) exceeds {CUDA_CACHE_SHARE:.0%} of the {where}")
    if needed > HARD_CACHE_SHARE * free:
        raise DataError(
            f"train.loader = device needs {_gib(needed)} for the decoded dataset ({len(dataset)} items at "
            f"{'x'.join(map(str, _item_shape(dataset, config.train.image_size)[1:]))}), more than "
            f"{HARD_CACHE_SHARE:.0%} of the {where}. Use train.loader = workers (or auto), or a smaller --image-size."
        )
    return LoaderChoice("device", f"train.loader = device ({_gib(needed)} cached)")


class DeviceCache:
    """Every item of a dataset decoded and resized once, as uint8 tensors on ``device``.

    Shape:
        ``images``: ``(N, C, H, W)`` uint8; ``masks``: ``(N, 1, H, W)`` uint8 label values ({0, 1} when binary).
    """

    def __init__(self, dataset: Any, image_size: int, device: torch.device) -> None:

        resize = build_transform("none", image_size or None)
        channels, height, width = _item_shape(dataset, image_size)
        try:
            self.images = torch.empty((len(dataset), channels, height, width), dtype=torch.uint8, device=device)
            self.masks = torch.empty((len(dataset), 1, height, width), dtype=torch.uint8, device=device)
        except (torch.cuda.OutOfMemoryError, MemoryError):
            needed = len(dataset) * (channels + 1) * height * width
            raise DataError(f"the device cache of {_gib(needed)} did not fit in the memory of {device}. Use "
                            "train.loader = workers, or a smaller --image-size.") from None
        for i in range(len(dataset)):
            image, mask = dataset.read(i)
            out = resize(image=image, mask=mask)
            image, mask = np.asarray(out["image"]), np.asarray(out["mask"])
            if image.ndim == 2:
                image = image[:, :, None]
            if image.shape[:2] != (height, width):
                raise DataError(
                    f"item {dataset.index['item'].iloc[i]!r} is {image.shape[1]}x{image.shape[0]}, the first "
                    f"{width}x{height}: train.loader = device needs one size; set --image-size."
                )
            self.images[i] = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).to(device)
            if len(getattr(dataset, "labels", ())) <= 2:  # binary: {0, 1}, ignored pixels kept as IGNORE
                mask = np.where(mask == IGNORE, IGNORE, mask > 0) if getattr(dataset, "ignores", False) else mask > 0
            self.masks[i, 0] = torch.from_numpy(np.asarray(mask, dtype=np.uint8)).to(device)

    def __len__(self) -> int:
        return self.images.shape[0]


class DeviceBatches:
    """A loader over a :class:`DeviceCache`: batches from ``sampler``, augmented on the device.

    Yields ``(images (N, C, H, W) float in [0, 1], masks (N, 1, H, W) float, indices (N,))`` like
    the worker path, with ``indices`` into the split's view.

    Args:
        cache: the decoded dataset.
        positions: for each item of the split's view, its row in the cache.
        sampler: the split's :class:`~segkit.train.sampling.EpochBatchSampler`.
        augment: a batched augmentation, or None (validation and test).
        seed, rank: with the epoch and step, what the augmentation parameters depend on.
        dropout: a :class:`~segkit.data.modality.ModalityDropout` applied before ``augment``, or None.
    """

    def __init__(self, cache: DeviceCache, positions: Sequence[int], sampler: Any, augment: Any | None,
                 seed: int, rank: int = 0, dropout: Any | None = None) -> None:
        self.cache, self.sampler, self.augment, self.dropout = cache, sampler, augment, dropout
        self.positions = torch.as_tensor(np.asarray(positions, dtype=np.int64), device=cache.images.device)
        self.seed, self.rank = seed, rank

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:

        epoch = self.sampler.epoch
        for step, batch in enumerate(self.sampler):
            indices = torch.tensor([index for index, _seed in batch], dtype=torch.long)
            rows = self.positions[indices.to(self.positions.device)]
            images = self.cache.images.index_select(0, rows).float().div_(255.0)
            masks = self.cache.masks.index_select(0, rows).float()
            if self.dropout is not None:
                generator = augment_generator(self.seed ^ SEED_SALT, epoch, step, self.rank)
                images = self.dropout.apply(images, self.dropout.draw(len(images), generator))
            if self.augment is not None:
                images, masks = self.augment(images, masks, augment_generator(self.seed, epoch, step, self.rank))
            yield images, masks, indices


def device_loaders(config: Any, dataset: Any, views: dict[str, Any], samplers: dict[str, Any],
                   device: torch.device, rank: int = 0, dropout: Any | None = None) -> dict[str, DeviceBatches]:
    """One :class:`DeviceBatches` per split over one shared cache; augmentation (and ``dropout``) for training only."""

    cache = DeviceCache(dataset, config.train.image_size, device)
    loaders = {}
    for name, view in views.items():
        augment = None
        if name == "train" and config.train.augment != "none":
            augment = BatchAugment(preset_ranges(config.train.augment))
        loaders[name] = DeviceBatches(cache, view.positions, samplers[name], augment, config.train.seed, rank,
                                      dropout=dropout if name == "train" else None)
    return loaders
