"""Reproducible data order: the order and every augmentation depend only on (seed, epoch, item).

That is what lets a resumed run, or a run with a different number of loader
workers or processes, see exactly the same data as an uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

__all__ = ["EpochSampler", "EpochBatchSampler", "SeededItems", "item_seed", "foreground_slots"]


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
            # numpy's SeedSequence mixes (seed, epoch) thoroughly: torch.randperm under consecutive manual
            # seeds gives small permutations that end with the same item epoch after epoch (9 items, seeds
            # 23751-23754: item 5 last every time), which would leave one item out of every epoch's last batch.
            order = np.random.default_rng([self.seed & (2**64 - 1), self.epoch]).permutation(self.size).tolist()
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


def foreground_slots(batch_size: int, fraction: float) -> int:
    """How many places of a batch of ``batch_size`` are guaranteed to lesion items.

    nnU-Net's rule: ``batch_size - round(batch_size * (1 - fraction))``, so 0.33 of a batch
    of 2 guarantees one lesion item and of a batch of 16 five; any fraction above 0 guarantees
    at least one.
    """
    if fraction <= 0:
        return 0
    return max(1, batch_size - round(batch_size * (1 - fraction)))


class EpochBatchSampler(Sampler[list[tuple[int, int]]]):
    """Batches of ``(index, augmentation seed)`` pairs: the one sampling rule of both loader paths.

    The items come in :class:`EpochSampler` order (this rank's share of a new permutation
    per epoch) and are cut into batches of ``batch_size``. With ``foreground_fraction > 0``
    each batch holds at least :func:`foreground_slots` lesion items: when the permutation
    gives fewer, the last non-lesion places of the batch are given to lesion items drawn
    from a separate permutation of the lesion items (nnU-Net's foreground oversampling).
    Everything depends only on (seed, epoch, rank), so a resumed run sees the same batches.
    An item in its permutation place gets :func:`item_seed` of its index (as with the item
    sampler); an oversampled item gets a seed of its own draw, so an item drawn twice in one
    epoch is augmented differently each time.

    Args:
        items: the item-order sampler (shuffled for training, in order for evaluation).
        batch_size: items per batch (the last batch of an epoch may be smaller).
        lesion: one flag per item of the view; needed when ``foreground_fraction > 0``.
        foreground_fraction: guaranteed share of lesion items per batch, in [0, 1].
        drop_single: leave out an epoch's last batch when it holds a single item (and is not the only
            batch). For training: batch norm cannot normalise one item whose deepest feature map is
            1x1 (small images through smp's encoders), and one item's statistics are noise anyway;
            the permutation changes every epoch, so no item is left out for good.
    """

    def __init__(self, items: EpochSampler, batch_size: int, lesion: Sequence[bool] | None = None,
                 foreground_fraction: float = 0.0, drop_single: bool = False) -> None:
        self.items, self.batch_size = items, int(batch_size)
        self.drop_single = bool(drop_single)
        self.foreground_fraction = float(foreground_fraction)
        self.lesion_items = [i for i, flag in enumerate(lesion or []) if flag]
        if self.foreground_fraction > 0 and lesion is None:
            raise ValueError("foreground oversampling needs the lesion flag of every item")

    @property
    def epoch(self) -> int:
        return self.items.epoch

    def set_epoch(self, epoch: int) -> None:
        self.items.set_epoch(epoch)

    def _lesion_stream(self) -> Iterator[int]:
        """Lesion items in a fresh order per (seed, epoch, rank), cycling when exhausted."""
        generator = torch.Generator().manual_seed((self.items.seed * 7919 + self.items.epoch) * 131 + 17 + self.items.rank)
        while True:
            for position in torch.randperm(len(self.lesion_items), generator=generator).tolist():
                yield self.lesion_items[position]

    def batches(self) -> list[list[tuple[int, int]]]:
        """This epoch's batches of ``(index, augmentation seed)`` for this rank."""
        seed, epoch = self.items.seed, self.items.epoch
        order = [(index, item_seed(seed, epoch, index)) for index in self.items._order()]
        batches = [order[start:start + self.batch_size] for start in range(0, len(order), self.batch_size)]
        if self._drops_last(len(order)):
            batches.pop()
        wanted = foreground_slots(self.batch_size, self.foreground_fraction)
        if not wanted or not self.lesion_items:
            return batches
        is_lesion = set(self.lesion_items)
        extra = self._lesion_stream()
        draws = 0
        for batch in batches:
            missing = min(wanted, len(batch)) - sum(index in is_lesion for index, _ in batch)
            for place in range(len(batch) - 1, -1, -1):
                if missing <= 0:
                    break
                if batch[place][0] not in is_lesion:
                    draws += 1
                    index = next(extra)
                    batch[place] = (index, item_seed(seed ^ 0x5EED, epoch * 65_537 + self.items.rank, draws))
                    missing -= 1
        return batches

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        yield from self.batches()

    def _drops_last(self, count: int) -> bool:
        return self.drop_single and self.batch_size > 1 and count > self.batch_size and count % self.batch_size == 1

    def __len__(self) -> int:
        count = len(self.items)
        return -(-count // self.batch_size) - int(self._drops_last(count))


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
