"""The augmentation presets ``train.augment`` names (``none``, ``light``, ``heavy``), each defined once.

A preset holds all three forms of itself: the albumentations pipeline applied per item on the
CPU (:mod:`segkit.data.transforms`), the ranges of the batched 2D augmentation on the training
device (:mod:`segkit.data.batch_augment`, matching the albumentations pipeline) and the settings
of the batched 3D augmentation (:mod:`segkit.data.augment3d`, nnU-Net-like). A transform of your
own is not a preset: register it as an ``augmentation`` and name it in ``train.transforms``
(:mod:`segkit.data.batch_transforms`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import albumentations as A
import cv2

from segkit.data.augment3d import Augment3DSettings
from segkit.data.batch_augment import AugmentRanges
from segkit.errors import ConfigError, unknown_name

__all__ = ["AugmentPreset", "PRESETS", "PRESET_NAMES", "preset", "preset_ranges", "volume_settings"]


def _light_items() -> list[A.BasicTransform]:
    return [
        A.HorizontalFlip(p=0.5),
        A.Affine(translate_percent=(-0.0625, 0.0625), scale=(0.9, 1.1), rotate=(-15, 15),
                 interpolation=cv2.INTER_LINEAR, mask_interpolation=cv2.INTER_NEAREST,
                 border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=0, p=0.5),
        A.RandomBrightnessContrast(brightness_limit=0.15, contrast_limit=0.15, p=0.5),
    ]


def _heavy_items() -> list[A.BasicTransform]:
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


@dataclass(frozen=True)
class AugmentPreset:
    """One preset in its three forms: per-item 2D (albumentations), batched 2D (device) and batched 3D (device)."""

    name: str
    summary: str
    items: Callable[[], list[A.BasicTransform]]
    batch: AugmentRanges
    volume: Augment3DSettings


PRESETS: dict[str, AugmentPreset] = {
    "none": AugmentPreset("none", "no augmentation (resizing only)", list, AugmentRanges(), Augment3DSettings.none()),
    "light": AugmentPreset(
        "light", "horizontal flip, small affine, brightness/contrast (3D: nnU-Net-like rotations, scaling, mirroring, "
        "intensity)", _light_items,
        AugmentRanges(hflip_p=0.5, affine_p=0.5, rotate=(-15.0, 15.0), scale=(0.9, 1.1), translate=(-0.0625, 0.0625),
                      brightness_contrast_p=0.5, brightness=(-0.15, 0.15), contrast=(-0.15, 0.15)),
        Augment3DSettings()),
    "heavy": AugmentPreset(
        "heavy", "light plus vertical flip, shear, elastic or grid distortion, gamma, noise (3D: light plus elastic "
        "deformation)", _heavy_items,
        AugmentRanges(hflip_p=0.5, vflip_p=0.2, affine_p=0.7, rotate=(-25.0, 25.0), scale=(0.85, 1.15),
                      translate=(-0.1, 0.1), shear=(-8.0, 8.0), elastic_p=0.15, elastic_alpha=30.0, elastic_sigma=6.0,
                      grid_p=0.15, grid_steps=5, grid_limit=0.2, brightness_contrast_p=0.7, brightness=(-0.25, 0.25),
                      contrast=(-0.25, 0.25), gamma_p=0.4, gamma=(0.75, 1.35), noise_p=0.3, noise_std=(0.01, 0.05)),
        Augment3DSettings(elastic_p=0.2)),
}
PRESET_NAMES: tuple[str, ...] = tuple(PRESETS)
"""``none``, ``light``, ``heavy``: what ``train.augment`` accepts."""


def preset(name: str) -> AugmentPreset:
    """The preset ``name``; an unknown name gets suggestions."""
    if name not in PRESETS:
        raise unknown_name("augmentation preset", name, PRESET_NAMES,
                           "Transforms of your own go in train.transforms (see 'segkit list augmentation').")
    return PRESETS[name]


def preset_ranges(name: str) -> AugmentRanges:
    """The batched 2D ranges of preset ``name`` (matching its albumentations pipeline)."""
    return preset(name).batch


def volume_settings(name: str) -> Augment3DSettings:
    """The 3D augmentation of preset ``name``: ``none`` changes nothing; ``light`` and ``heavy`` are nnU-Net-like
    rotations, scaling, mirroring and intensity changes (``heavy`` adds elastic deformation)."""
    if name not in PRESETS:
        raise ConfigError(f"train.augment {name!r} has no 3D form; use none, light or heavy for a 3D run.")
    return PRESETS[name].volume
