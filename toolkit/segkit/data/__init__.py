"""Datasets, image IO and checks, augmentation presets (per item and batched) and case-level splits.

Names are imported on first use, so ``import segkit.data`` stays cheap and
reading splits does not import torch or albumentations.
"""

from __future__ import annotations

import importlib
from typing import Any

_HOMES = {
    "segkit.data.base": ("SegmentationDataset", "SegmentationSubset", "FilePairDataset", "drop_missing", "ON_MISSING"),
    "segkit.data.io": ("IMAGE_SUFFIXES", "read_image", "read_mask", "read_pair", "raw_mask_values",
                       "check_same_size"),
    "segkit.data.transforms": ("PRESETS", "build_transform"),
    "segkit.data.batch_augment": ("AugmentRanges", "BatchAugment", "augment_generator"),
    "segkit.data.augment_presets": ("PRESET_NAMES", "AugmentPreset", "preset_ranges"),
    "segkit.data.splits": ("SPLIT_MODES", "SPLIT_NAMES", "make_splits", "write_splits", "read_splits"),
}
_WHERE = {name: module for module, names in _HOMES.items() for name in names}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'segkit.data' has no attribute {name!r}")
    value = getattr(importlib.import_module(_WHERE[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
