"""Reproducible data order: the order and every augmentation depend only on (seed, epoch, item).

That is what lets a resumed run, or a run with a different number of loader
workers or processes, see exactly the same data as an uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import Dataset, Sampler

__all__ = ["EpochSampler", "SeededItems", "item_seed"]


def item_seed(seed: int, epoch: int, index: int) -> int:
    """The augmentation seed of one item in one epoch."""
    return ((seed * 1_000_003 + epoch) * 10_000_019 + index) % (2**32)


class EpochSampler(Sampler[tuple[int, int]]):
    """Yields ``(index, augmentation seed)`` pairs; a new permutation per epoch.

    With ``world_size > 1`` each rank takes every ``world_size``-th item of the
    (padded) permutation, like ``DistributedSampler``.
    """

    def __init__(self, size: int, seed: int, shuffle: bool, rank: int = 0, world_size: int = 1) -> None:
        self.size, self.seed, self.shuffle = size, seed, shuffle
        self.rank, self.world_size = rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _order(self) -> list[int]:
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed * 7919 + self.epoch)
            order = torch.randperm(self.size, generator=generator).tolist()
        else:
            order = list(range(self.size))
        if self.world_size > 1:
            if self.shuffle:
                padded = -(-self.size // self.world_size) * self.world_size
                order = (order * (padded // max(len(order), 1) + 1))[:padded]
            order = order[self.rank :: self.world_size]
        return order

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for index in self._order():
            yield index, item_seed(self.seed, self.epoch, index)

    def __len__(self) -> int:
        return len(self._order())


class SeededItems(Dataset):
    """A dataset view addressed by ``(index, seed)``: seeds the transform, returns (image, mask, index)."""

    def __init__(self, view: Any) -> None:
        self.view = view

    def __len__(self) -> int:
        return len(self.view)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, int]:
        index, seed = key
        transform = getattr(self.view, "transform", None)
        if transform is not None and hasattr(transform, "set_random_seed"):
            transform.set_random_seed(seed)
        image, mask = self.view[index]
        return image, mask, index
