"""The dataset contract every segkit dataset fulfils.

A dataset is an ``index`` (a pandas DataFrame, one row per item) plus a way to
read item ``i`` as ``(image H x W x C uint8, mask H x W uint8 in {0, 1})``.
Subclasses implement :meth:`SegmentationDataset.read_raw`; the base class adds
an optional cache of decoded slices, the albumentations ``transform`` and the
conversion to tensors.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from segkit.data.io import read_image, read_mask, read_pair
from segkit.errors import DataError, unknown_name

__all__ = ["SegmentationDataset", "SegmentationSubset", "FilePairDataset", "ON_MISSING", "drop_missing"]

Transform = Callable[..., dict[str, Any]]
ON_MISSING: tuple[str, ...] = ("error", "skip")
REQUIRED_COLUMNS: tuple[str, ...] = ("item", "case", "has_lesion")


class SegmentationDataset(Dataset):
    """Base class of segkit datasets.

    Args:
        index: one row per item with at least the columns ``item`` (unique str),
            ``case`` (str) and ``has_lesion`` (bool).
        in_channels: number of image channels ``C``.
        cache: keep decoded slices in memory so later epochs skip the disk.
        transform: an albumentations-style ``transform(image=, mask=) -> dict``, or None.

    Shape:
        ``read(i)``: image ``(H, W, C)`` uint8, mask ``(H, W)`` uint8 in {0, 1}.
        ``self[i]``: image ``(C, H, W)`` float32 in [0, 1], mask ``(1, H, W)`` float32 in {0, 1}.
    """

    def __init__(self, index: pd.DataFrame, in_channels: int, cache: bool = False,
                 transform: Transform | None = None) -> None:
        missing = [c for c in REQUIRED_COLUMNS if c not in index.columns]
        if missing:
            raise DataError(f"dataset index lacks the column(s) {', '.join(missing)}")
        duplicated = index["item"][index["item"].duplicated()].tolist()
        if duplicated:
            raise DataError(f"{len(duplicated)} item name(s) appear twice, e.g. {', '.join(map(str, duplicated[:5]))}")
        self.index = index.reset_index(drop=True)
        self.in_channels = int(in_channels)
        self.cache = bool(cache)
        self.transform = transform
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def __len__(self) -> int:
        return len(self.index)

    @property
    def cases(self) -> list[str]:
        """The case (patient) of every item, in index order."""
        return self.index["case"].astype(str).tolist()

    def read_raw(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Read item ``i`` from its source; implemented by subclasses."""
        raise NotImplementedError

    def read(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Item ``i`` as ``(image, mask)`` arrays, from the cache when enabled.

        Cached arrays are shared between calls and marked read-only.
        """
        if not 0 <= i < len(self):
            raise IndexError(f"item {i} out of range for a dataset of {len(self)}")
        if not self.cache:
            return self.read_raw(i)
        if i not in self._cache:
            image, mask = self.read_raw(i)
            image.setflags(write=False)
            mask.setflags(write=False)
            self._cache[i] = (image, mask)
        return self._cache[i]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, mask = self.read(int(i))
        if self.transform is not None:
            out = self.transform(image=image, mask=mask)
            image, mask = out["image"], out["mask"]
        image = np.asarray(image)
        image = image.astype(np.float32) / 255.0 if image.dtype == np.uint8 else image.astype(np.float32)
        if image.ndim == 2:
            image = image[:, :, None]
        mask = (np.asarray(mask) > 0).astype(np.float32)
        return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))), torch.from_numpy(mask[None])

    def subset(self, indices: Sequence[int], transform: Transform | None = None) -> SegmentationSubset:
        """A view of some items that reads through this dataset (and its cache)."""
        return SegmentationSubset(self, indices, transform)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({len(self)} items, {self.index['case'].nunique()} cases, "
                f"{self.in_channels} channels)")


class SegmentationSubset(SegmentationDataset):
    """Items ``indices`` of ``parent``, with their own transform; reads share the parent's cache."""

    def __init__(self, parent: SegmentationDataset, indices: Sequence[int],
                 transform: Transform | None = None) -> None:
        positions = np.asarray(indices, dtype=np.int64).reshape(-1)
        if positions.size and (positions.min() < 0 or positions.max() >= len(parent)):
            raise IndexError(f"subset indices must lie in [0, {len(parent)}), got {positions.min()}..{positions.max()}")
        super().__init__(parent.index.iloc[positions], parent.in_channels, cache=False, transform=transform)
        self.parent = parent
        self.positions = positions

    def read_raw(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        return self.parent.read(int(self.positions[i]))

    def read(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        if not 0 <= i < len(self):
            raise IndexError(f"item {i} out of range for a subset of {len(self)}")
        return self.parent.read(int(self.positions[i]))


def drop_missing(index: pd.DataFrame, missing: pd.Series, on_missing: str, what: str) -> pd.DataFrame:
    """Handle rows whose mask is missing: DataError (``"error"``) or warn and drop (``"skip"``).

    ``missing`` is a boolean Series aligned with ``index``; ``what`` names the source
    (a folder or table) in the message.
    """
    if on_missing not in ON_MISSING:
        raise unknown_name("on_missing value", on_missing, ON_MISSING)
    count = int(missing.sum())
    if not count:
        return index
    names = [Path(p).name for p in index.loc[missing, "image_path"]]
    shown = ", ".join(names[:5]) + (f", ... ({count} in all)" if count > 5 else "")
    if on_missing == "error":
        raise DataError(f"{count} image(s) in {what} have no mask: {shown}. "
                        f"Add the masks, or pass on_missing='skip' to leave those images out.")
    warnings.warn(f"skipping {count} image(s) in {what} without a mask: {shown}", UserWarning, stacklevel=3)
    return index.loc[~missing].reset_index(drop=True)


class FilePairDataset(SegmentationDataset):
    """A dataset whose index has ``image_path`` and ``mask_path`` columns, read lazily.

    ``has_lesion`` is computed by reading every mask once when the index lacks it.
    ``in_channels=None`` takes the channel count of the first image; every image is
    then read with that many channels.
    """

    def __init__(self, index: pd.DataFrame, in_channels: int | None = None, cache: bool = False) -> None:
        if index.empty:
            raise DataError("no images found")
        if "has_lesion" not in index.columns:
            index = index.assign(has_lesion=[bool(read_mask(p).any()) for p in index["mask_path"]])
        if in_channels is None:
            in_channels = read_image(index["image_path"].iloc[0]).shape[2]
        super().__init__(index, in_channels, cache=cache)

    def read_raw(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        row = self.index.iloc[i]
        return read_pair(row["image_path"], row["mask_path"], channels=self.in_channels)
