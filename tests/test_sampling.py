"""The batch sampler both loader paths share: foreground oversampling, determinism, shards."""

from __future__ import annotations

import pytest

from segkit.train.sampling import EpochBatchSampler, EpochSampler, foreground_slots


def sampler(lesion: list[bool], batch_size: int, fraction: float, seed: int = 0, rank: int = 0,
            world_size: int = 1) -> EpochBatchSampler:
    items = EpochSampler(len(lesion), seed, shuffle=True, rank=rank, world_size=world_size)
    return EpochBatchSampler(items, batch_size, lesion=lesion, foreground_fraction=fraction)


@pytest.mark.parametrize(("batch_size", "fraction", "expected"),
                         [(2, 0.33, 1), (16, 0.33, 5), (12, 0.33, 4), (8, 0.0, 0), (8, 0.01, 1), (8, 1.0, 8)])
def test_foreground_slots_follow_nnunet(batch_size: int, fraction: float, expected: int) -> None:
    assert foreground_slots(batch_size, fraction) == expected


def test_every_batch_holds_its_guaranteed_share_of_lesion_items() -> None:
    lesion = [i % 10 == 0 for i in range(200)]  # 10% lesion slices, like a sparse dataset
    batches = sampler(lesion, 16, 0.33)
    batches.set_epoch(1)
    for batch in batches:
        share = sum(lesion[index] for index, _ in batch)
        assert share >= min(5, len(batch))
    plain = sampler(lesion, 16, 0.0)
    plain.set_epoch(1)
    assert min(sum(lesion[i] for i, _ in batch) for batch in plain) < 5  # the rule did something


def test_oversampling_keeps_the_epoch_length_and_only_replaces_empty_items() -> None:
    lesion = [i % 4 == 0 for i in range(64)]
    over, plain = sampler(lesion, 8, 0.5), sampler(lesion, 8, 0.0)
    over.set_epoch(2), plain.set_epoch(2)
    over_batches, plain_batches = list(over), list(plain)
    assert len(over) == len(plain) == len(over_batches) == 8
    for a, b in zip(over_batches, plain_batches, strict=True):
        assert len(a) == len(b)
        for (i, _), (j, _) in zip(a, b, strict=True):
            assert i == j or (lesion[i] and not lesion[j])  # a replaced place was empty and now holds a lesion


def test_batches_depend_only_on_seed_epoch_and_rank() -> None:
    lesion = [i % 3 == 0 for i in range(50)]
    a, b = sampler(lesion, 8, 0.33, seed=4), sampler(lesion, 8, 0.33, seed=4)
    a.set_epoch(3), b.set_epoch(3)
    assert list(a) == list(b)
    b.set_epoch(4)
    assert list(a) != list(b)
    ranks = [sampler(lesion, 4, 0.33, seed=4, rank=r, world_size=2) for r in range(2)]
    for r in ranks:
        r.set_epoch(3)
    assert list(ranks[0]) != list(ranks[1])


def test_an_item_drawn_twice_gets_two_augmentation_seeds() -> None:
    lesion = [i == 0 for i in range(40)]  # one lesion item must fill a place in every batch
    batches = sampler(lesion, 4, 0.25)
    batches.set_epoch(1)
    seeds = [seed for batch in batches for index, seed in batch if index == 0]
    assert len(seeds) == 10 and len(set(seeds)) == 10


def test_no_lesion_items_means_no_oversampling_and_no_error() -> None:
    batches = sampler([False] * 20, 4, 0.33)
    assert sum(len(b) for b in batches) == 20


@pytest.mark.parametrize(("items", "batch", "expected"), [(9, 4, [4, 4]), (10, 4, [4, 4, 2]), (1, 4, [1]), (5, 1, [1] * 5)])
def test_training_leaves_out_a_last_batch_of_one_item(items: int, batch: int, expected: list[int]) -> None:
    """Batch norm fails on one item whose deepest map is 1x1 (small images through smp's encoders): training
    drops such a batch (a new permutation each epoch, so no item for good), evaluation keeps every item."""
    train = EpochBatchSampler(EpochSampler(items, seed=3, shuffle=True), batch, drop_single=True)
    assert [len(b) for b in train.batches()] == expected and len(train) == len(expected)
    evaluation = EpochBatchSampler(EpochSampler(items, seed=3, shuffle=False), batch)
    assert sum(len(b) for b in evaluation.batches()) == items
    left_out = []
    for epoch in range(4):
        train.set_epoch(epoch)
        left_out.append(set(range(items)) - {index for b in train.batches() for index, _ in b})
    drops = items % batch == 1 and items > batch
    assert [len(s) for s in left_out] == [int(drops)] * 4
    if drops:
        assert len(set().union(*left_out)) > 1  # a different item each epoch, not one item for good
