"""Random 3D patches: foreground oversampling per label, padding of small volumes, the patch dataset's items."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from segkit.components import get_registry
from segkit.data.patches import PatchDataset, PatchSampler, check_patch_size
from segkit.data.volume_cache import VolumeCache
from segkit.errors import ConfigError
from volumes import HIPPOCAMPUS, hippocampus_subset, write_msd


def sparse_volume() -> tuple[np.ndarray, np.ndarray, dict[int, np.ndarray]]:
    """A 48^3 volume whose label 1 is a 6^3 block and label 2 a single 2^3 block: random patches rarely hold them."""
    rng = np.random.default_rng(0)
    image = rng.normal(size=(2, 48, 48, 48)).astype(np.float32)
    label = np.zeros((48, 48, 48), np.uint8)
    label[5:11, 30:36, 8:14] = 1
    label[40:42, 3:5, 44:46] = 2
    foreground = {v: np.argwhere(label == v).astype(np.int32) for v in (1, 2)}
    return image, label, foreground


def holds(patches: list[np.ndarray], value: int) -> float:
    return float(np.mean([(p == value).any() for p in patches]))


def test_a_patch_is_the_padded_volume_cut_at_the_drawn_start() -> None:
    image, label, foreground = sparse_volume()
    sampler = PatchSampler((16, 12, 20), foreground_fraction=0.5)
    for seed in range(20):
        start, before, _ = sampler.start(label.shape, foreground, np.random.default_rng(seed))
        image_patch, label_patch = sampler.sample(image, label, foreground, np.random.default_rng(seed))
        assert before == (0, 0, 0) and image_patch.dtype == np.float32 and label_patch.dtype == np.uint8
        box = tuple(slice(s, s + p) for s, p in zip(start, (16, 12, 20), strict=True))
        np.testing.assert_array_equal(image_patch, image[(slice(None), *box)])
        np.testing.assert_array_equal(label_patch, label[box])


def test_foreground_patches_come_at_the_asked_rate_and_every_label_is_drawn() -> None:
    image, label, foreground = sparse_volume()
    rng = np.random.default_rng(1)
    for fraction in (0.0, 0.33, 1.0):
        sampler = PatchSampler((8, 8, 8), foreground_fraction=fraction)
        patches = [sampler.sample(image, label, foreground, rng)[1] for _ in range(600)]
        share = float(np.mean([(p > 0).any() for p in patches]))
        if fraction == 0.0:
            assert share < 0.1  # chance alone: the foreground is under 0.3% of the volume
        else:
            assert share >= fraction - 0.06, (fraction, share)
    # the tiny label is drawn as often as the large one: about half of the foreground patches each
    sampler = PatchSampler((8, 8, 8), foreground_fraction=1.0)
    patches = [sampler.sample(image, label, foreground, rng)[1] for _ in range(400)]
    assert 0.4 < holds(patches, 2) < 0.6 and 0.4 < holds(patches, 1) < 0.6


def test_the_foreground_voxel_lands_anywhere_in_the_patch_not_only_its_centre() -> None:
    _, label, _ = sparse_volume()
    one_voxel = {1: np.array([[24, 24, 24]], np.int32)}
    sampler = PatchSampler((8, 8, 8), foreground_fraction=1.0)
    rng = np.random.default_rng(2)
    offsets = set()
    for _ in range(300):
        start, _, chosen = sampler.start(label.shape, one_voxel, rng)
        assert chosen == 1 and all(s <= 24 < s + 8 for s in start)
        offsets.add(tuple(24 - s for s in start))
    assert len(offsets) > 100


def test_volumes_smaller_than_the_patch_are_padded_centred_with_zeros() -> None:
    rng = np.random.default_rng(3)
    image = rng.normal(size=(1, 5, 20, 9)).astype(np.float32) + 10.0
    label = np.ones((5, 20, 9), np.uint8)
    sampler = PatchSampler((8, 16, 9), foreground_fraction=0.5)
    padded_image = np.pad(image, ((0, 0), (1, 2), (0, 0), (0, 0)))
    padded_label = np.pad(label, ((1, 2), (0, 0), (0, 0)))
    for seed in range(10):
        start, before, _ = sampler.start(label.shape, {1: np.argwhere(label)}, np.random.default_rng(seed))
        image_patch, label_patch = sampler.sample(image, label, {1: np.argwhere(label)}, np.random.default_rng(seed))
        assert before == (1, 0, 0) and start[0] == 0 and start[2] == 0
        box = (slice(0, 8), slice(start[1], start[1] + 16), slice(0, 9))
        np.testing.assert_array_equal(image_patch[0], padded_image[0][box])
        np.testing.assert_array_equal(label_patch, padded_label[box])
        assert np.all(image_patch[:, 0] == 0) and np.all(label_patch[6:] == 0)


def test_a_patch_larger_than_every_volume_is_refused_naming_the_largest() -> None:
    shapes = {"a": (30, 40, 20), "b": (35, 38, 22)}
    check_patch_size((32, 40, 16), shapes)  # larger than "a" along axis 0 only: padded
    with pytest.raises(ConfigError, match=r"the patch 32x40x24 is larger than every volume along axis 2: "
                                          r"the largest there is 'b' \(35x38x22 voxels\)"):
        check_patch_size((32, 40, 24), shapes)
    for bad in ((16, 16), (16, 0, 16), (16.5, 16, 16), (True, 16, 16)):
        with pytest.raises(ConfigError, match="three positive integers"):
            PatchSampler(bad)
    with pytest.raises(ConfigError, match="foreground_fraction"):
        PatchSampler((8, 8, 8), foreground_fraction=1.5)


@pytest.fixture
def cache(tmp_path: Path) -> VolumeCache:
    dataset = get_registry().build("dataset", "msd", root=str(write_msd(tmp_path / "msd", cases=3,
                                                                          shape=(20, 24, 12), channels=2)))
    return VolumeCache(dataset, directory=tmp_path / "cache", progress=False).build()


def test_dataset_items_match_the_2d_items_and_cycle_through_the_cases(cache: VolumeCache) -> None:
    data = PatchDataset(cache, cache.cases, PatchSampler((16, 16, 8)), patches_per_epoch=7, seed=5)
    assert len(data) == 7 and [data.case_of(i) for i in range(4)] == ["vol_000", "vol_001", "vol_002", "vol_000"]
    image, mask, index = data[4]
    assert image.dtype == torch.float32 and tuple(image.shape) == (2, 16, 16, 8)
    assert mask.dtype == torch.float32 and tuple(mask.shape) == (1, 16, 16, 8) and index == 4
    assert set(mask.unique().tolist()) <= {0.0, 1.0, 2.0}
    with pytest.raises(IndexError):
        data[7]
    from segkit.train.assemble import _collate  # the trainer's own collate takes the items as they are

    images, masks, indices = next(iter(torch.utils.data.DataLoader(data, batch_size=3, collate_fn=_collate)))
    assert tuple(images.shape) == (3, 2, 16, 16, 8) and tuple(masks.shape) == (3, 1, 16, 16, 8)
    assert indices.tolist() == [0, 1, 2]


def test_patches_are_reproducible_by_seed_and_epoch(cache: VolumeCache) -> None:
    def epoch(seed: int, number: int) -> list[np.ndarray]:
        data = PatchDataset(cache, cache.cases, PatchSampler((8, 8, 8)), patches_per_epoch=6, seed=seed)
        data.set_epoch(number)
        return [data[i][0].numpy() for i in range(6)]

    first = epoch(0, 3)
    assert all(np.array_equal(a, b) for a, b in zip(first, epoch(0, 3), strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(first, epoch(0, 4), strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(first, epoch(1, 3), strict=True))


def test_workers_draw_the_same_patches_as_the_main_process(cache: VolumeCache) -> None:
    import pickle

    from segkit.train.assemble import _collate

    data = PatchDataset(cache, cache.cases, PatchSampler((8, 8, 8)), patches_per_epoch=6, seed=2)
    data.set_epoch(1)
    assert pickle.loads(pickle.dumps(data)).cache.dataset is None  # workers get the folder, not the dataset

    def epoch(workers: int) -> list[torch.Tensor]:
        loader = torch.utils.data.DataLoader(data, batch_size=2, num_workers=workers, collate_fn=_collate)
        return [images for images, _, _ in loader]

    assert all(torch.equal(a, b) for a, b in zip(epoch(0), epoch(2), strict=True))


def test_a_patch_only_a_validation_volume_holds_trains_on_padded_training_cases(tmp_path: Path) -> None:
    """segkit plan fits the patch to the largest case, not knowing the split: on 8 hippocampus cases a patch of 40
    along axis 0, where the training cases had at most 39 (the run refused its own plan). The run checks every
    case, as the plan does; training cases smaller along an axis are padded."""
    root = write_msd(tmp_path / "data", cases=3, shapes=[(20, 24, 12), (20, 24, 12), (24, 24, 12)])
    dataset = get_registry().build("dataset", "msd", root=str(root))
    cache = VolumeCache(dataset, directory=tmp_path / "cache", progress=False).build()
    data = PatchDataset(cache, ["vol_000", "vol_001"], PatchSampler((24, 16, 8)), patches_per_epoch=2)
    image, mask, _ = data[0]
    assert image.shape == (1, 24, 16, 8) and mask.shape == (1, 24, 16, 8)
    with pytest.raises(ConfigError, match="larger than every volume along axis 0: the largest there is 'vol_002'"):
        PatchDataset(cache, ["vol_000"], PatchSampler((26, 16, 8)), patches_per_epoch=2)


def test_bad_patch_dataset_settings_are_refused_before_training(cache: VolumeCache) -> None:
    with pytest.raises(ConfigError, match="larger than every volume along axis 2"):
        PatchDataset(cache, cache.cases, PatchSampler((16, 16, 16)), patches_per_epoch=4)
    with pytest.raises(ConfigError, match="patches_per_epoch"):
        PatchDataset(cache, cache.cases, PatchSampler((8, 8, 8)), patches_per_epoch=0)
    with pytest.raises(ConfigError, match="at least one case"):
        PatchDataset(cache, [], PatchSampler((8, 8, 8)), patches_per_epoch=4)


def test_real_hippocampus_patches_hold_both_labels(tmp_path: Path) -> None:
    if not (HIPPOCAMPUS / "dataset.json").is_file():
        pytest.skip(f"the hippocampus volumes are not at {HIPPOCAMPUS}")
    dataset = get_registry().build("dataset", "msd", root=str(hippocampus_subset(tmp_path / "h", count=2)))
    cache = VolumeCache(dataset, directory=tmp_path / "cache", progress=False).build()
    data = PatchDataset(cache, cache.cases, PatchSampler((35, 40, 35), foreground_fraction=1.0),
                        patches_per_epoch=40, seed=0)  # hippocampus_003 is 34 voxels along axis 0: padded
    masks = [data[i][1].numpy() for i in range(40)]
    assert all((m > 0).any() for m in masks)
    assert holds(masks, 1) > 0.5 and holds(masks, 2) > 0.5
