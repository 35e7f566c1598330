"""Augmentation presets: resizing, identical geometry for image and mask, no augmentation at eval."""

from __future__ import annotations

import numpy as np
import pytest

from segkit.data import PRESETS, build_transform
from segkit.errors import ConfigError, UnknownNameError


def square_sample(size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """An image whose first channel is 200 exactly where the mask is 1."""
    mask = np.zeros((size, size), np.uint8)
    mask[size // 4: size // 2, size // 3: size * 3 // 4] = 1
    image = np.zeros((size, size, 3), np.uint8)
    image[:, :, 0] = mask * 200
    image[:, :, 1] = 90
    return image, mask


def test_presets_are_listed():
    assert PRESETS == ("none", "light", "heavy")


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("train", [True, False])
def test_resize_linear_images_nearest_masks(preset, train):
    image, mask = square_sample(64)
    out = build_transform(preset, 32, train)(image=image, mask=mask)
    assert out["image"].shape == (32, 32, 3) and out["image"].dtype == np.uint8
    assert out["mask"].shape == (32, 32)
    assert set(np.unique(out["mask"])) <= {0, 1}


def test_resize_interpolation_kinds():
    image, mask = square_sample(64)
    out = build_transform("none", 96, train=False)(image=image, mask=mask)
    assert len(np.unique(out["image"][:, :, 0])) > 2  # linear blends the edge
    np.testing.assert_array_equal(np.unique(out["mask"]), [0, 1])  # nearest keeps 0/1


@pytest.mark.parametrize("preset", PRESETS)
def test_eval_transform_does_not_augment(preset):
    image, mask = square_sample(64)
    transform = build_transform(preset, None, train=False)
    for _ in range(5):
        out = transform(image=image, mask=mask)
        np.testing.assert_array_equal(out["image"], image)
        np.testing.assert_array_equal(out["mask"], mask)


@pytest.mark.parametrize("preset", ["light", "heavy"])
def test_training_augments_image_and_mask_together(preset):
    image, mask = square_sample(64)
    transform = build_transform(preset, None, train=True)
    changed = 0
    for _ in range(25):
        out = transform(image=image, mask=mask)
        changed += not np.array_equal(out["mask"], mask)
        assert set(np.unique(out["mask"])) <= {0, 1}
        # Geometry is shared: where the bright square went, the mask went too.
        inside = out["image"][:, :, 0][out["mask"] == 1]
        outside = out["image"][:, :, 0][out["mask"] == 0]
        if inside.size and outside.size:
            assert np.median(inside.astype(int)) > np.median(outside.astype(int)) + 50
    assert changed >= 5


def test_read_only_input_is_accepted():
    image, mask = square_sample(32)
    image.setflags(write=False)
    mask.setflags(write=False)
    for _ in range(10):
        build_transform("heavy", 48, train=True)(image=image, mask=mask)


def test_unknown_preset_suggests_the_nearest():
    with pytest.raises(UnknownNameError, match=r"augmentation preset 'ligth'.*Did you mean 'light'"):
        build_transform("ligth", None, True)


@pytest.mark.parametrize("size", [0, -3, 2.5, "64"])
def test_bad_image_size(size):
    with pytest.raises(ConfigError, match="image_size"):
        build_transform("none", size, False)
