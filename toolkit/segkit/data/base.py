"""The dataset contract every segkit dataset fulfils.

A dataset is an ``index`` (a pandas DataFrame, one row per item) plus a way to
read item ``i`` as ``(image H x W x C uint8, mask H x W uint8)``: label values
``0 .. len(labels) - 1``, {0, 1} for binary data (see :mod:`segkit.labels`).
Subclasses implement :meth:`SegmentationDataset.read_raw` (one slice); the base
class adds per-case intensity normalisation (:mod:`segkit.data.intensity`), an
optional cache of decoded slices, 2.5D context (neighbouring slices of the same
case stacked as extra channels), the albumentations ``transform`` and the
conversion to tensors.

Why it is long: it is the one dataset contract every plugin builds on (the base class with its cache,
per-case normalisation and 2.5D stacking, the subset view, and the file-pair dataset); the volume
form lives in :mod:`segkit.data.volume` and the ``dataset.cases`` list in :mod:`segkit.components.cases`.
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

from segkit.data.intensity import apply_factors, case_factors, check_normalize
from segkit.data.io import IGNORE, decode_mask, read_image, read_pair
from segkit.errors import ConfigError, DataError, unknown_name
from segkit.labels import BINARY_NAMES

__all__ = ["SegmentationDataset", "SegmentationSubset", "CaseSelection", "FilePairDataset", "ON_MISSING", "drop_missing",
           "CONTEXT_HELP", "check_context", "neighbour_positions"]

Transform = Callable[..., dict[str, Any]]
ON_MISSING: tuple[str, ...] = ("error", "skip")
REQUIRED_COLUMNS: tuple[str, ...] = ("item", "case", "has_lesion")
CONTEXT_HELP = ("The lgg and synthetic datasets know it; folder needs slice_pattern (a regular expression whose "
                "group 'slice', or first group, is the slice number in the file name) or a case_pattern with "
                "named groups 'case' and 'slice', e.g. '^(?P<case>.+)_(?P<slice>\\d+)$'; csv needs slice_column "
                "(and case_column).")
"""Which built-in datasets know the slice order that ``context`` needs, and how to give it."""


def check_context(context: Any) -> int:
    """``context`` as an int >= 0; a :class:`ConfigError` otherwise."""
    if isinstance(context, bool) or not isinstance(context, (int, np.integer)) or context < 0:
        raise ConfigError(f"context must be an integer >= 0 (the number of neighbouring slices stacked on each "
                          f"side of a slice; 0 turns 2.5D context off), got {context!r}")
    return int(context)


def neighbour_positions(index: pd.DataFrame, context: int) -> np.ndarray:
    """For every row, the rows of slices ``n - context .. n + context`` of its case: ``(len(index), 2 * context + 1)``.

    Neighbours follow the order of the ``slice`` column within each ``case`` (gaps in the
    numbering are skipped, not filled). Past the first or last slice of a case the edge
    slice repeats (replicate padding). Row ``i``'s own position is the middle column.
    Missing, non-integer or repeated slice numbers are a :class:`DataError`.
    """
    count = len(index)
    width = 2 * context + 1
    if count == 0:
        return np.zeros((0, width), dtype=np.int64)
    numbers = pd.to_numeric(index["slice"], errors="coerce")
    bad = numbers.isna() | (numbers != numbers.round())
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataError(f"item {index['item'].iloc[row]!r} has the slice number {index['slice'].iloc[row]!r}; "
                        "2.5D context needs an integer slice number for every item")
    cases = index["case"].astype(str).to_numpy()
    slices = numbers.to_numpy(dtype=np.int64)
    order = np.lexsort((slices, cases))  # by case, then slice
    sorted_cases, sorted_slices = cases[order], slices[order]
    same_case = sorted_cases[1:] == sorted_cases[:-1]
    repeated = np.flatnonzero(same_case & (sorted_slices[1:] == sorted_slices[:-1]))
    if repeated.size:
        first, second = order[repeated[0]], order[repeated[0] + 1]
        raise DataError(f"items {index['item'].iloc[first]!r} and {index['item'].iloc[second]!r} are both slice "
                        f"{sorted_slices[repeated[0]]} of case {sorted_cases[repeated[0]]!r}; 2.5D context needs "
                        "one item per slice number in a case")
    starts = np.concatenate([[0], np.flatnonzero(~same_case) + 1])
    lengths = np.diff(np.concatenate([starts, [count]]))
    start = np.repeat(starts, lengths)
    end = start + np.repeat(lengths, lengths) - 1
    ranks = np.arange(count)[:, None] + np.arange(-context, context + 1)[None, :]
    table = np.empty((count, width), dtype=np.int64)
    table[order] = order[np.clip(ranks, start[:, None], end[:, None])]
    return table


class SegmentationDataset(Dataset):
    """Base class of segkit datasets.

    Args:
        index: one row per item with at least the columns ``item`` (unique str),
            ``case`` (str) and ``has_lesion`` (bool).
            With ``context > 0`` it also needs ``slice`` (the slice number within the case).
        in_channels: number of channels ``C`` of one slice, as :meth:`read_raw` returns it.
        cache: keep decoded slices in memory so later epochs skip the disk.
        transform: an albumentations-style ``transform(image=, mask=) -> dict``, or None.
        context: 2.5D context ``k``: stack the ``k`` neighbouring slices on each side of a
            slice (same case, by slice number) as extra channels; 0 reads single slices.
        normalize: ``"none"`` keeps the stored pixels; ``"case"`` rescales each channel of each
            case so its 99th percentile of non-zero pixels is 204 (:mod:`segkit.data.intensity`).
            The first read of a case's slice reads all of that case's slices to find the factors.
        labels: the names of the mask's label values ``0 .. C-1``, background first; None for
            binary masks (background, lesion).

    Attributes:
        slice_channels: channels of one slice (``C``).
        in_channels: channels of an item as :meth:`read` returns it, ``C * (2k + 1)``.

    Shape:
        ``read_raw(i)``: one slice, image ``(H, W, C)`` uint8, mask ``(H, W)`` uint8 label values.
        ``read(i)``: image ``(H, W, C * (2k + 1))`` uint8 (slices ``n - k .. n + k``, each ``C``
        channels, in that order; the edge slice repeats past the ends of a case), and the
        mask of slice ``n``.
        ``self[i]``: image ``(C * (2k + 1), H, W)`` float32 in [0, 1], mask ``(1, H, W)`` float32 label
        values (in {0, 1} for binary data).

    Attributes:
        labels: names of the label values, ``labels[v]`` for value ``v``.
    """

    verify_items = True
    """Whether the data check before training (:mod:`segkit.data.verify`) reads every item; False for generated data."""

    channel_names: tuple[str, ...] | None = None
    """Names of a slice's channels (``("pre-contrast", "FLAIR", "post-contrast")``), shown by ``segkit inspect``;
    None: channels are known by their index."""

    missing_channel_fill: int | None = None
    """The channel (of a slice) this dataset stores in place of a missing one, as LGG stores FLAIR; None: missing
    channels are zeros. ``train.modality_dropout`` fills the channels it drops with it (:mod:`segkit.data.modality`)."""

    ignores: bool = False
    """Whether masks may hold :data:`~segkit.data.io.IGNORE` (255): pixels that neither train nor score (an
    ``ignore_label``, outside a region of interest). Binary masks then come as {0, 1, 255}."""

    display_channel: int = 0
    """The channel (of a slice) that figures draw in grey under coloured outlines and masks: the one a reader
    knows best, FLAIR for LGG. Showing the channels as RGB instead gives false colours that mix with the
    masks' colours."""

    def __init__(self, index: pd.DataFrame, in_channels: int, cache: bool = False,
                 transform: Transform | None = None, context: int = 0, normalize: str = "none",
                 labels: Sequence[str] | None = None) -> None:
        missing = [c for c in REQUIRED_COLUMNS if c not in index.columns]
        if missing:
            raise DataError(f"dataset index lacks the column(s) {', '.join(missing)}")
        duplicated = index["item"][index["item"].duplicated()].tolist()
        if duplicated:
            raise DataError(f"{len(duplicated)} item name(s) appear twice, e.g. {', '.join(map(str, duplicated[:5]))}")
        self.index = index.reset_index(drop=True)
        self.slice_channels = int(in_channels)
        self.context = check_context(context)
        self.normalize = check_normalize(normalize)
        self.cache = bool(cache)
        self.transform = transform
        self.labels: tuple[str, ...] = tuple(labels) if labels is not None else BINARY_NAMES
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._factors: dict[str, np.ndarray] = {}
        self._case_positions: dict[str, list[int]] | None = None
        self._neighbours: np.ndarray | None = None
        if self.context:
            if "slice" not in self.index.columns:
                raise ConfigError(f"{type(self).__name__}: context = {self.context} stacks neighbouring slices, "
                                  "so it needs the slice number of every item, and this dataset has none (its "
                                  f"index has no 'slice' column). {CONTEXT_HELP}")
            longest = int(self.index.groupby("case", sort=False).size().max()) if len(self.index) else 0
            if self.context >= max(longest, 1):
                raise ConfigError(f"{type(self).__name__}: context = {self.context} reaches beyond every case (the "
                                  f"longest has {longest} slice(s), so context {max(longest - 1, 0)} already stacks "
                                  "all of it); use a small context, 1 to 3 neighbours on each side.")
            self._neighbours = neighbour_positions(self.index, self.context)

    @property
    def in_channels(self) -> int:
        """Channels of an item as :meth:`read` returns it: ``slice_channels * (2 * context + 1)``."""
        return self.slice_channels * (2 * self.context + 1)

    @in_channels.setter
    def in_channels(self, value: int) -> None:
        width = 2 * getattr(self, "context", 0) + 1
        if int(value) % width:
            raise ValueError(f"in_channels {value} is not a multiple of the {width} stacked slices")
        self.slice_channels = int(value) // width

    def __len__(self) -> int:
        return len(self.index)

    @property
    def cases(self) -> list[str]:
        """The case (patient) of every item, in index order."""
        return self.index["case"].astype(str).tolist()

    def read_raw(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Read slice ``i`` (image ``H x W x slice_channels``, mask) from its source; implemented by subclasses."""
        raise NotImplementedError

    def read_raw_image(self, i: int) -> np.ndarray:
        """Only the image of slice ``i``, for neighbours; override when it is cheaper than :meth:`read_raw`."""
        return self.read_raw(i)[0]

    def read_slice(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Slice ``i`` alone (no context), normalised as ``normalize`` says, from the cache when enabled.

        Cached arrays are shared between calls and marked read-only.
        """
        if not self.cache:
            image, mask = self.read_raw(i)
            return self._normalized(i, image), mask
        if i not in self._cache:
            if self.normalize != "none":
                self.case_factors(self.case_at(i))  # fills the cache with the whole case
                if i in self._cache:
                    return self._cache[i]
            image, mask = self.read_raw(i)
            self._store(i, self._normalized(i, image), mask)
        return self._cache[i]

    def _store(self, i: int, image: np.ndarray, mask: np.ndarray) -> None:
        image.setflags(write=False)
        mask.setflags(write=False)
        self._cache[i] = (image, mask)

    def _slice_image(self, i: int) -> np.ndarray:
        """Only the image of slice ``i``, normalised, for neighbours read without the cache."""
        return self._normalized(i, self.read_raw_image(i))

    def case_at(self, i: int) -> str:
        """The case of item ``i``."""
        return str(self.index["case"].iloc[i])

    def case_positions(self, case: str) -> list[int]:
        """The positions of ``case``'s items, in index order."""
        if self._case_positions is None:
            groups = self.index.groupby(self.index["case"].astype(str), sort=False).indices
            self._case_positions = {str(k): v.tolist() for k, v in groups.items()}
        return self._case_positions[case]

    def case_factors(self, case: str) -> np.ndarray:
        """The per-channel intensity factors of ``case`` (:func:`segkit.data.intensity.case_factors`).

        Computed once per case from all its slices; with the cache on, those slices are
        kept (normalised) so they are decoded only once.
        """
        if case not in self._factors:
            positions = self.case_positions(case)
            if self.cache:
                raw = {j: self.read_raw(j) for j in positions}
                factors = self._factors[case] = case_factors(image for image, _ in raw.values())
                for j, (image, mask) in raw.items():
                    if j not in self._cache:
                        self._store(j, apply_factors(image, factors), mask)
            else:
                self._factors[case] = case_factors(self.read_raw_image(j) for j in positions)
        return self._factors[case]

    def _normalized(self, i: int, image: np.ndarray) -> np.ndarray:
        if self.normalize == "none":
            return image
        return apply_factors(image, self.case_factors(self.case_at(i)))

    def neighbours(self, i: int) -> list[int]:
        """Positions of the slices stacked for item ``i``, ``n - k .. n + k`` (edges repeated); ``[i]`` when k = 0."""
        if self._neighbours is None:
            return [int(i)]
        return self._neighbours[i].tolist()

    def read(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Item ``i`` as ``(image, mask)`` arrays: slice ``i`` with its context channels, from the cache when enabled.

        The cache holds single slices, so each slice is decoded once however many
        items stack it. Without context, cached arrays are returned shared and read-only.
        """
        if not 0 <= i < len(self):
            raise IndexError(f"item {i} out of range for a dataset of {len(self)}")
        image, mask = self.read_slice(i)
        if self._neighbours is None:
            return image, mask
        layers = []
        for j in self._neighbours[i].tolist():
            layer = image if j == i else (self.read_slice(j)[0] if self.cache else self._slice_image(j))
            layer = layer[:, :, None] if layer.ndim == 2 else layer
            if layer.shape[:2] != image.shape[:2] or layer.shape[2] != self.slice_channels:
                raise DataError(f"slice {self.index['item'].iloc[i]!r} is {image.shape[0]}x{image.shape[1]} with "
                                f"{self.slice_channels} channel(s) but its neighbouring slice "
                                f"{self.index['item'].iloc[j]!r} is {layer.shape[0]}x{layer.shape[1]} with "
                                f"{layer.shape[2]}; 2.5D context stacks the slices of a case as channels, so they "
                                "must share size and channels")
            layers.append(layer)
        return np.concatenate(layers, axis=2), mask

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, mask = self.read(int(i))
        if self.transform is not None:
            out = self.transform(image=image, mask=mask)
            image, mask = out["image"], out["mask"]
        image = np.asarray(image)
        image = image.astype(np.float32) / 255.0 if image.dtype == np.uint8 else image.astype(np.float32)
        if image.ndim == 2:
            image = image[:, :, None]
        mask = np.asarray(mask)
        if len(self.labels) == 2:
            lesion = (mask > 0).astype(np.float32)
            mask = np.where(mask == IGNORE, np.float32(IGNORE), lesion) if self.ignores else lesion
        else:
            mask = mask.astype(np.float32)
        return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))), torch.from_numpy(mask[None])

    def subset(self, indices: Sequence[int], transform: Transform | None = None) -> SegmentationSubset:
        """A view of some items that reads through this dataset (and its cache)."""
        return SegmentationSubset(self, indices, transform)

    def select_cases(self, cases: Sequence[str]) -> CaseSelection:
        """The items of ``cases`` only, standing in for the whole dataset (``dataset.cases``)."""
        return CaseSelection(self, cases)

    def __repr__(self) -> str:
        context = f", context {self.context}" if self.context else ""
        normalize = f", normalize {self.normalize!r}" if self.normalize != "none" else ""
        return (f"{type(self).__name__}({len(self)} items, {self.index['case'].nunique()} cases, "
                f"{self.in_channels} channels{context}{normalize})")


class SegmentationSubset(SegmentationDataset):
    """Items ``indices`` of ``parent``, with their own transform; reads share the parent's cache.

    With 2.5D context the neighbours come from the parent, so a slice whose neighbour
    lies outside the subset still gets it.
    """

    def __init__(self, parent: SegmentationDataset, indices: Sequence[int],
                 transform: Transform | None = None) -> None:
        positions = np.asarray(indices, dtype=np.int64).reshape(-1)
        if positions.size and (positions.min() < 0 or positions.max() >= len(parent)):
            raise IndexError(f"subset indices must lie in [0, {len(parent)}), got {positions.min()}..{positions.max()}")
        super().__init__(parent.index.iloc[positions], parent.slice_channels, cache=False, transform=transform,
                         labels=parent.labels)
        self.context = parent.context  # reads go through the parent, which stacks
        self.display_channel = parent.display_channel
        self.ignores = getattr(parent, "ignores", False)
        self.parent = parent
        self.positions = positions

    def read_raw(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        return self.parent.read_slice(int(self.positions[i]))

    def read_slice(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        return self.parent.read_slice(int(self.positions[i]))

    def neighbours(self, i: int) -> list[int]:
        """Positions in the parent of the slices stacked for item ``i``."""
        return self.parent.neighbours(int(self.positions[i]))

    def read(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        if not 0 <= i < len(self):
            raise IndexError(f"item {i} out of range for a subset of {len(self)}")
        return self.parent.read(int(self.positions[i]))


class CaseSelection(SegmentationSubset):
    """The items of some cases of ``parent`` (``dataset.cases``), standing in for the whole dataset.

    Reads go through the parent (its cache, normalisation and 2.5D context); the parent's settings
    and attributes (``spacing``, ``root``, ``channel_names``, ...) read the same through the selection.
    """

    _SHARED = ("normalize", "cache", "verify_items", "missing_channel_fill", "channel_names")

    def __init__(self, parent: SegmentationDataset, cases: Sequence[str]) -> None:
        wanted = set(cases)
        positions = np.flatnonzero(parent.index["case"].astype(str).isin(wanted).to_numpy())
        super().__init__(parent, positions, transform=parent.transform)
        for name in self._SHARED:
            setattr(self, name, getattr(parent, name, None))
        self.selected_cases = list(cases)

    def __getattr__(self, name: str) -> Any:
        """What the selection does not hold itself, it reads from the parent dataset."""
        parent = self.__dict__.get("parent")
        if parent is None or name.startswith("__"):
            raise AttributeError(name)
        return getattr(parent, name)


def drop_missing(index: pd.DataFrame, missing: pd.Series, on_missing: str, what: str,
                 advice: str = "") -> pd.DataFrame:
    """Handle rows whose mask is missing: DataError (``"error"``) or warn and drop (``"skip"``).

    ``missing`` is a boolean Series aligned with ``index``; ``what`` names the source
    (a folder or table) in the message; ``advice``, where the dataset knows better (masks that
    carry a suffix, say), replaces the error's advice to add the masks or skip those images.
    """
    if on_missing not in ON_MISSING:
        raise unknown_name("on_missing value", on_missing, ON_MISSING)
    count = int(missing.sum())
    if not count:
        return index
    names = [Path(p).name for p in index.loc[missing, "image_path"]]
    shown = ", ".join(names[:5]) + (f", ... ({count} in all)" if count > 5 else "")
    if on_missing == "error":
        raise DataError(f"{count} image(s) in {what} have no mask: {shown}. " + (advice or
                        "Add the masks, or pass on_missing='skip' (--set dataset.on_missing=skip) to leave those "
                        "images out."))
    warnings.warn(f"skipping {count} image(s) in {what} without a mask: {shown}", UserWarning, stacklevel=3)
    return index.loc[~missing].reset_index(drop=True)


_MASK_SUMMARIES: dict[tuple[str, int, int, int, int | None], tuple[bool, int]] = {}
"""What :func:`_lesion_flags` read from each mask in this process (whether it holds a label, pixels snapped), by
path, modification time, size and reading settings: ``segkit plan`` builds its dataset several times (the
planner's, its loading timings, the first-batch check), and each build would otherwise decode every mask again."""
_MASK_SUMMARIES_LIMIT = 1_000_000


def _mask_summary(path: str, classes: int, ignore: int | None) -> tuple[bool, int]:
    """Whether the mask at ``path`` holds a foreground label, and how many lossy pixels were snapped; remembered
    per process while the file is unchanged (same modification time and size). A DataError for an unreadable mask."""
    try:
        stat = Path(path).stat()
    except OSError:  # missing or unreadable: reading it raises the DataError that says so
        return _read_summary(path, classes, ignore)
    key = (str(path), stat.st_mtime_ns, stat.st_size, classes, ignore)
    if key not in _MASK_SUMMARIES:
        if len(_MASK_SUMMARIES) >= _MASK_SUMMARIES_LIMIT:
            _MASK_SUMMARIES.clear()
        _MASK_SUMMARIES[key] = _read_summary(path, classes, ignore)
    return _MASK_SUMMARIES[key]


def _read_summary(path: str, classes: int, ignore: int | None) -> tuple[bool, int]:
    """:func:`_mask_summary` read from the file itself."""
    reading = decode_mask(path, classes, ignore)
    return bool(((reading.mask > 0) & (reading.mask != IGNORE)).any()), int(reading.snapped)


def _lesion_flags(index: pd.DataFrame, classes: int = 2, ignore: int | None = None) -> tuple[list[bool], int, int]:
    """Whether each item's mask holds lesion (any foreground label), reading every mask (once per process while
    it is unchanged: :func:`_mask_summary`); and how many lossy (JPEG) masks had pixels snapped to their label
    values, and how many pixels.

    An unreadable mask counts as no lesion here, so that the index can still be built:
    the data check before training (:mod:`segkit.data.verify`) then lists it with every
    other problem, and reading that item raises its :class:`DataError`.
    """
    flags, files, pixels = [], 0, 0
    for path in index["mask_path"]:
        try:
            flag, snapped = _mask_summary(path, classes, ignore)
        except DataError:
            flags.append(False)
            continue
        flags.append(flag)
        files += snapped > 0
        pixels += snapped
    return flags, files, pixels


def _inside(roi_path: str, shape: tuple[int, ...], mask_path: str) -> np.ndarray:
    """The region of interest a mask is scored inside: a binary image (any non-zero pixel is inside) of its size."""
    roi = read_image(roi_path, channels=1)[:, :, 0] > 0
    if roi.shape != shape[:2]:
        raise DataError(f"the region-of-interest mask {roi_path} is {roi.shape[1]}x{roi.shape[0]} (WxH) but the mask "
                        f"{mask_path} is {shape[1]}x{shape[0]}; a region of interest must have its image's size")
    return roi


class FilePairDataset(SegmentationDataset):
    """A dataset whose index has ``image_path`` and ``mask_path`` columns, read lazily.

    ``has_lesion`` is computed by reading every mask once when the index lacks it.
    ``in_channels=None`` takes the channel count of the first image; every image is
    then read with that many channels. ``context`` is the base class's 2.5D context
    (the index then needs a ``slice`` column); ``normalize`` its per-case intensity rule.
    ``labels`` names the mask's label values (background first; None: binary 0/1 or 0/255 masks);
    with more than two, masks store the label values themselves.

    ``ignore_label``: a value stored in the masks for pixels that neither train nor score (partial
    annotations). An index column ``roi_path`` names a region-of-interest image per item (a retina's
    field of view): pixels outside it are ignored the same way. Both come back as
    :data:`~segkit.data.io.IGNORE` in the masks (``ignores`` is then true).
    Masks stored lossy (JPEG) are snapped to their label values; :attr:`mask_note` says how many pixels moved.
    """

    def __init__(self, index: pd.DataFrame, in_channels: int | None = None, cache: bool = False,
                 context: int = 0, normalize: str = "none", labels: Sequence[str] | None = None,
                 ignore_label: int | None = None) -> None:
        if index.empty:
            raise DataError("no images found")
        classes = len(labels) if labels is not None else 2
        if ignore_label is not None and (isinstance(ignore_label, bool) or not isinstance(ignore_label, int)
                                         or not 0 <= ignore_label <= 65535 or ignore_label < classes):
            raise ConfigError(f"ignore_label must be a whole number stored in the masks that is not one of the "
                              f"{classes} label values 0..{classes - 1} (e.g. 128, or 255 for masks with several "
                              f"labels), got {ignore_label!r}")
        self.ignore_label = ignore_label
        self.mask_note: str | None = None
        """One line on the lossy masks snapped to their label values, or None."""
        if "has_lesion" not in index.columns:
            flags, files, pixels = _lesion_flags(index, classes, ignore_label)
            index = index.assign(has_lesion=flags)
            if files:
                self.mask_note = (f"note: {files} mask(s) are stored lossy (JPEG): {pixels:,} of their pixels held "
                                  "values near, not at, a label value and were snapped to the nearest one")
        if in_channels is None:
            in_channels = read_image(index["image_path"].iloc[0]).shape[2]
        super().__init__(index, in_channels, cache=cache, context=context, normalize=normalize, labels=labels)
        self.ignores = ignore_label is not None or "roi_path" in self.index.columns

    def read_raw(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        row = self.index.iloc[i]
        image, mask = read_pair(row["image_path"], row["mask_path"], channels=self.slice_channels,
                                classes=len(self.labels), ignore=self.ignore_label)
        if "roi_path" in self.index.columns and isinstance(row["roi_path"], str):
            outside = ~_inside(row["roi_path"], mask.shape, row["mask_path"])
            if outside.any():
                mask = mask.copy()
                mask[outside] = IGNORE
        return image, mask

    def read_raw_image(self, i: int) -> np.ndarray:
        return read_image(self.index["image_path"].iloc[i], channels=self.slice_channels)
