"""Augmentation presets built from albumentations.

Every transform is applied identically to the image and its mask: geometric
transforms move both (masks with nearest-neighbour interpolation), intensity
transforms touch the image only.
"""

from __future__ import annotations

import albumentations as A
import cv2

from segkit.errors import ConfigError, unknown_name

__all__ = ["PRESETS", "build_transform"]

PRESETS: tuple[str, ...] = ("none", "light", "heavy")
"""The augmentation presets: ``none`` resizes only, ``light`` and ``heavy`` augment when training."""


def _light() -> list[A.BasicTransform]:
    return [
        A.HorizontalFlip(p=0.5),
        A.Affine(translate_percent=(-0.0625, 0.0625), scale=(0.9, 1.1), rotate=(-15, 15),
                 interpolation=cv2.INTER_LINEAR, mask_interpolation=cv2.INTER_NEAREST,
                 border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=0, p=0.5),
        A.RandomBrightnessContrast(brightness_limit=0.15, contrast_limit=0.15, p=0.5),
    ]


def _heavy() -> list[A.BasicTransform]:
    return [
        A.HorizontalFlip(p=0.5),
        A.VerticalFlip(p=0.2),
        A.Affine(translate_percent=(-0.1, 0.1), scale=(0.85, 1.15), rotate=(-25, 25), shear=(-8, 8),
                 interpolation=cv2.INTER_LINEAR, mask_interpolation=cv2.INTER_NEAREST,
                 border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=0, p=0.7),
        A.OneOf([
            A.ElasticTransform(alpha=30, sigma=6, border_mode=cv2.BORDER_CONSTANT),
            A.GridDistortion(num_steps=5, distort_limit=0.2, border_mode=cv2.BORDER_CONSTANT),
        ], p=0.3),
        A.RandomBrightnessContrast(brightness_limit=0.25, contrast_limit=0.25, p=0.7),
        A.RandomGamma(gamma_limit=(75, 135), p=0.4),
        A.GaussNoise(std_range=(0.01, 0.05), p=0.3),
    ]


def build_transform(preset: str, image_size: int | None = None, train: bool = False) -> A.Compose:
    """The albumentations pipeline for ``preset``.

    Resizes to ``image_size`` x ``image_size`` when given (linear for images,
    nearest for masks), then augments when ``train`` is true. Validation and
    test data use ``train=False``: resizing only.
    """
    if preset not in PRESETS:
        raise unknown_name("augmentation preset", preset, PRESETS)
    steps: list[A.BasicTransform] = []
    if image_size is not None:
        if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
            raise ConfigError(f"image_size must be a positive integer or None, got {image_size!r}")
        steps.append(A.Resize(image_size, image_size, interpolation=cv2.INTER_LINEAR,
                              mask_interpolation=cv2.INTER_NEAREST))
    if train and preset == "light":
        steps += _light()
    elif train and preset == "heavy":
        steps += _heavy()
    return A.Compose(steps)
