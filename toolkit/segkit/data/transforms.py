"""The albumentations pipeline of an augmentation preset (:mod:`segkit.data.augment_presets`), per item.

Every transform is applied identically to the image and its mask: geometric
transforms move both (masks with nearest-neighbour interpolation), intensity
transforms touch the image only.
"""

from __future__ import annotations

import albumentations as A
import cv2

from segkit.data.augment_presets import PRESET_NAMES as PRESETS
from segkit.data.augment_presets import preset as preset_named
from segkit.errors import ConfigError

__all__ = ["PRESETS", "build_transform"]


def build_transform(preset: str, image_size: int | None = None, train: bool = False) -> A.Compose:
    """The albumentations pipeline for ``preset``.

    Resizes to ``image_size`` x ``image_size`` when given (linear for images,
    nearest for masks), then augments when ``train`` is true. Validation and
    test data use ``train=False``: resizing only.
    """
    chosen = preset_named(preset)  # an unknown name is refused even where nothing is augmented
    augmentations = chosen.items() if train else []
    steps: list[A.BasicTransform] = []
    if image_size is not None:
        if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
            raise ConfigError(f"image_size must be a positive integer or None, got {image_size!r}")
        steps.append(A.Resize(image_size, image_size, interpolation=cv2.INTER_LINEAR,
                              mask_interpolation=cv2.INTER_NEAREST))
    return A.Compose(steps + augmentations)
