"""The volume form of the dataset contract: 3D cases (NIfTI, or NRRD/MetaImage with SimpleITK) served as 2D slices.

A volume dataset is a table of cases, one row each: ``case`` (its name), ``image_paths`` (a
tuple: one 4D file with channels last, as the Decathlon stores them, or one 3D file per
channel, as nnU-Net's ``_0000``, ``_0001`` files) and ``label_path``. That table, the channel
names and the label names are all a plugin gives::

    class MyVolumes(VolumeDataset):
        def __init__(self, root: str):
            files = sorted(Path(root).glob("*_image.nii.gz"))
            cases = pd.DataFrame({"case": [f.name[:-13] for f in files],
                                  "image_paths": [(str(f),) for f in files],
                                  "label_path": [str(f).replace("_image", "_label") for f in files]})
            super().__init__(cases, channels=["MRI"], labels=["background", "tumour"])

Everything else comes from this class, the same for every volume dataset:

- every label volume is read once to index the slices (``has_lesion`` per slice) and to check
  it against its image's header: same spatial shape and voxel spacing, whole label values
  within the labels; every case's problems are listed together, each naming its case;
- 2D models train on the slices along ``slice_axis`` (nnU-Net's ``2d`` configuration): by
  default the axis with the largest voxel spacing (the out-of-plane axis of anisotropic scans),
  the last axis when the spacing is the same along all three;
- each case's channels are scaled to 0..255 by their own 0.5th and 99.5th percentiles (a
  per-case rescaling, like the z-score nnU-Net applies to MRI; raw scanner values differ by
  orders of magnitude between cases);
- every slice is padded with background to one in-plane size (the largest of the dataset,
  rounded up to a multiple of ``pad_multiple``), so slices batch without resizing and the
  voxel spacing stays exact for the boundary metrics in millimetres;
- up to ``cached_volumes`` decoded cases stay in memory (``cache = true`` keeps every slice).

Overriding :meth:`VolumeDataset.read_image` and :meth:`VolumeDataset.image_shape` (and
:meth:`VolumeDataset.read_label`, :meth:`VolumeDataset.image_spacing`) reads other formats.
"""

from __future__ import annotations

import math
import warnings
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from segkit.data.base import SegmentationDataset
from segkit.data.case_workers import map_bounded, plan_workers
from segkit.data.verify import cases_message
from segkit.data.volume_io import Volume, check_finite, header_shape, header_spacing, read_label, read_volume
from segkit.errors import ConfigError, DataError

__all__ = ["VolumeDataset", "scale_to_uint8", "choose_slice_axis"]

CASE_COLUMNS: tuple[str, ...] = ("case", "image_paths", "label_path")


def scale_to_uint8(image: np.ndarray, low: float = 0.5, high: float = 99.5) -> np.ndarray:
    """``image`` (C, ...) with each channel mapped from its ``low``..``high`` percentiles to 0..255, as uint8."""
    out = np.empty(image.shape, dtype=np.uint8)
    for c, channel in enumerate(image):
        lo, hi = np.percentile(channel, [low, high])
        span = hi - lo if hi > lo else 1.0
        out[c] = np.rint(np.clip((channel - lo) / span, 0.0, 1.0) * 255.0)
    return out


def _mm(spacing: Sequence[float]) -> str:
    """``1 x 1 x 2.5 mm``."""
    return " x ".join(f"{float(s):g}" for s in spacing) + " mm"


def choose_slice_axis(spacings: Sequence[Sequence[float]]) -> int:
    """The axis with the largest median spacing; the last axis when all three are equal (within 1%)."""
    median = np.median(np.asarray(spacings, dtype=np.float64), axis=0)
    if median.max() <= median.min() * 1.01:
        return 2
    return int(np.argmax(median))


class VolumeDataset(SegmentationDataset):
    """Volumes as 2D slices, each item one slice of one case (see the module docstring).

    Args:
        cases: one row per case with ``case``, ``image_paths`` (tuple of paths) and ``label_path``.
        channels: the name of each image channel (``dataset.json``'s modality), in order.
        labels: the names of the label values ``0 .. C-1``, background first.
        slice_axis: 0, 1 or 2, the volume axis to slice along; None chooses (see module docstring).
        pad_multiple: the in-plane size is padded up to a multiple of this (16 suits a 4-level U-Net).
        cache: keep every decoded slice in memory after its first read.
        context: 2.5D context: neighbouring slices of the same case stacked as channels.
        cached_volumes: how many decoded cases to keep for reading their slices.

    Attributes:
        channel_names: ``channels``.
        slice_axis: the axis sliced along.
        slice_shape: ``(H, W)`` of every slice after padding.
        spacing: ``(slice, row, column)`` voxel spacing in mm when every case has the same one, else None.
        cases_table: ``cases`` with the spatial ``shape`` and ``spacing`` of each case added.
    """

    def __init__(self, cases: pd.DataFrame, channels: Sequence[str], labels: Sequence[str],
                 slice_axis: int | None = None, pad_multiple: int = 16, cache: bool = False, context: int = 0,
                 cached_volumes: int = 8) -> None:
        missing = [c for c in CASE_COLUMNS if c not in cases.columns]
        if missing:
            raise DataError(f"the case table lacks the column(s) {', '.join(missing)}")
        if cases.empty:
            raise DataError("the dataset lists no cases")
        if slice_axis is not None and slice_axis not in (0, 1, 2):
            raise ConfigError(f"slice_axis must be 0, 1 or 2 (a volume axis) or left out to choose, got {slice_axis!r}")
        if isinstance(pad_multiple, bool) or not isinstance(pad_multiple, int) or not 1 <= pad_multiple <= 256:
            raise ConfigError(f"pad_multiple must be an integer from 1 to 256, got {pad_multiple!r}")
        if isinstance(cached_volumes, bool) or not isinstance(cached_volumes, int) or cached_volumes < 1:
            raise ConfigError(f"cached_volumes must be an integer >= 1, got {cached_volumes!r}")
        self.channel_names = tuple(str(c) for c in channels)
        classes = len(labels)
        shapes, spacings, lesion, problems = [], [], [], []
        for row, checked in zip(cases.itertuples(index=False), self._check_cases(cases, classes), strict=True):
            if isinstance(checked, str):
                problems.append(f"case {str(row.case)!r}: {checked}")
                continue
            shape, spacing, per_axis = checked
            shapes.append(shape)
            spacings.append(spacing)
            lesion.append(per_axis)
        if problems:
            raise DataError(cases_message(problems, len(cases)))
        self.slice_axis = choose_slice_axis(spacings) if slice_axis is None else int(slice_axis)
        in_plane = [tuple(s for axis, s in enumerate(shape) if axis != self.slice_axis) for shape in shapes]
        self.slice_shape = tuple(int(math.ceil(max(sizes) / pad_multiple) * pad_multiple) for sizes in zip(*in_plane))
        rows = []
        for row, per_axis in zip(cases.itertuples(index=False), lesion, strict=True):
            for number, has in enumerate(per_axis[self.slice_axis].tolist()):
                rows.append({"item": f"{row.case}_{number:03d}", "case": str(row.case), "slice": number,
                             "has_lesion": bool(has)})
        self.cases_table = cases.assign(shape=shapes, spacing=spacings).reset_index(drop=True)
        self._rows = {str(r.case): r for r in self.cases_table.itertuples(index=False)}
        self._volumes: OrderedDict[str, tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self._cached_volumes = cached_volumes
        unique = {tuple(round(s, 4) for s in spacing) for spacing in spacings}
        self.spacing = self._ordered_spacing(spacings[0]) if len(unique) == 1 else None
        if self.spacing is None:
            warnings.warn(f"the {len(cases)} cases have {len(unique)} different voxel spacings; boundary metrics "
                          "(HD95, ASSD, surface Dice) are then given in voxels, not millimetres", UserWarning,
                          stacklevel=2)
        super().__init__(pd.DataFrame(rows), in_channels=len(self.channel_names), cache=cache, context=context,
                         labels=labels)

    def _check_cases(self, cases: pd.DataFrame, classes: int) -> list[Any]:
        """:meth:`_check_case` of every case (its result, or its error's message), in worker processes when the
        labels are large (:func:`segkit.data.case_workers.plan_workers`: a CT set's labels are 0.1 GB each)."""
        rows = list(cases.itertuples(index=False))

        def check(k: int) -> Any:
            try:
                return self._check_case(rows[k], classes)
            except DataError as error:
                return str(error)

        sizes = []
        for row in rows:  # a label read whole: its voxels as stored and a few masks of them
            try:
                sizes.append(4.0 * math.prod(header_shape(row.label_path)))
            except (DataError, OSError, ValueError):
                sizes.append(0.0)  # unreadable: its own check says so
        workers, _ = plan_workers(0, sizes, what="reading the labels")
        results = dict(map_bounded(check, range(len(rows)), workers))
        return [results[k] for k in range(len(rows))]

    def _check_case(self, row: Any, classes: int) -> tuple[tuple[int, ...], tuple[float, ...], list[np.ndarray]]:
        """One case's shape, spacing and, per axis, which slices hold a label; a DataError when image and label
        disagree (shape, spacing) or the label holds a value outside ``0 .. classes - 1``."""
        label = self.read_label(row.label_path, classes)
        array = label.array
        if array.size and (int(array.min()) < 0 or int(array.max()) >= classes):  # a plugin's read_label unchecked
            value = int(array.max()) if int(array.max()) >= classes else int(array.min())
            raise DataError(f"its label {row.label_path} holds the label value {value}, outside 0 .. {classes - 1} "
                            "(the labels the dataset declares); fix the file or the dataset's labels")
        shape = self.image_shape(tuple(row.image_paths))
        images = ", ".join(map(str, row.image_paths))
        if shape != array.shape:
            raise DataError(f"the image {images} is {'x'.join(map(str, shape))} voxels but its label {row.label_path} "
                            f"is {'x'.join(map(str, array.shape))}; a label must have its image's shape")
        spacing = self.image_spacing(tuple(row.image_paths))
        if spacing is not None and not np.allclose(spacing, label.spacing, rtol=1e-3, atol=1e-6):
            raise DataError(f"the image {images} has the voxel spacing {_mm(spacing)} but its label {row.label_path} "
                            f"{_mm(label.spacing)}; a label must lie on its image's grid. Fix the header of the one "
                            "that is wrong (resample the label onto the image if it was made on another grid)")
        # per axis, which slices hold a label: the arrays themselves are not kept (memory would grow with cases)
        per_axis = [array.any(axis=tuple(a for a in range(3) if a != axis)) for axis in range(3)]
        return shape, tuple(float(s) for s in label.spacing), per_axis

    def _ordered_spacing(self, spacing: Sequence[float]) -> tuple[float, float, float]:
        """``spacing`` (file axis order) as (slice, row, column)."""
        others = [float(s) for axis, s in enumerate(spacing) if axis != self.slice_axis]
        return (float(spacing[self.slice_axis]), others[0], others[1])

    # What a plugin overrides to read another format ---------------------------------------------

    def read_label(self, path: str, classes: int) -> Volume:
        """The label volume at ``path``: uint8 values ``0 .. classes - 1`` and its spacing."""
        return read_label(path, classes)

    def image_shape(self, paths: tuple[str, ...]) -> tuple[int, ...]:
        """The spatial shape of a case's image from its header(s); checks the channel count."""
        shapes = [header_shape(p) for p in paths]
        channels = len(self.channel_names)
        if len(paths) == 1:
            shape = shapes[0]
            found = shape[3] if len(shape) == 4 else 1
            if len(shape) < 3:
                raise DataError(f"{paths[0]} is a {len(shape)}D image of shape {shape}; this dataset reads volumes "
                                "(3D, or 4D with channels last). 2D images belong in the folder or csv datasets")
            if len(shape) > 4 or found != channels:
                raise DataError(f"{paths[0]} has shape {shape}: {found} channel(s), but the dataset declares "
                                f"{channels} ({', '.join(self.channel_names)})")
            return shape[:3]
        if len(paths) != channels:
            raise DataError(f"{len(paths)} channel files ({', '.join(paths)}) for {channels} declared channels")
        if len({s[:3] for s in shapes}) != 1 or any(len(s) != 3 for s in shapes):
            raise DataError(f"the channel files {', '.join(paths)} differ in shape ({shapes}); each must be one 3D "
                            "volume of the same size")
        return shapes[0]

    def image_spacing(self, paths: tuple[str, ...]) -> tuple[float, ...] | None:
        """A case's voxel spacing (mm) from its image header(s), compared with its label's; None: unknown.

        Channel files that disagree on their spacing are a DataError.
        """
        spacings = [header_spacing(p) for p in paths]
        for path, spacing in zip(paths[1:], spacings[1:], strict=True):
            if not np.allclose(spacing, spacings[0], rtol=1e-3, atol=1e-6):
                raise DataError(f"the channel files {paths[0]} ({_mm(spacings[0])}) and {path} ({_mm(spacing)}) "
                                "differ in voxel spacing; the channels of a case must share one grid")
        return spacings[0]

    def read_image(self, paths: tuple[str, ...]) -> np.ndarray:
        """A case's image as float32 ``(C, X, Y, Z)``; NaN or infinite voxels are a DataError."""
        volumes = [read_volume(p) for p in paths]
        for volume in volumes:
            check_finite(volume)
        if len(volumes) == 1:
            array = volumes[0].array
            return np.moveaxis(array, 3, 0) if array.ndim == 4 else array[None]
        return np.stack([v.array for v in volumes])

    # Slices ---------------------------------------------------------------------------------------

    def read_case_volume(self, case: str) -> tuple[np.ndarray, np.ndarray]:
        """``(image uint8 (C, X, Y, Z), label uint8 (X, Y, Z))`` of ``case``, scaled, read now and not kept (checking
        every case once must not fill the cache of volumes: 8 CT cases are gigabytes)."""
        row = self._rows[case]
        image = scale_to_uint8(self.read_image(tuple(row.image_paths)))
        return image, self.read_label(row.label_path, len(self.labels)).array

    def case_volume(self, case: str) -> tuple[np.ndarray, np.ndarray]:
        """``(image uint8 (C, X, Y, Z), label uint8 (X, Y, Z))`` of ``case``, scaled, from a small cache."""
        if case in self._volumes:
            self._volumes.move_to_end(case)
            return self._volumes[case]
        image, label = self.read_case_volume(case)
        self._volumes[case] = (image, label)
        while len(self._volumes) > self._cached_volumes:
            self._volumes.popitem(last=False)
        return image, label

    def _pad(self, plane: np.ndarray) -> np.ndarray:
        height, width = self.slice_shape
        padding = [(0, height - plane.shape[0]), (0, width - plane.shape[1])] + [(0, 0)] * (plane.ndim - 2)
        return np.pad(plane, padding)

    def read_raw(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Slice ``i``: image ``(H, W, C)`` uint8 and mask ``(H, W)`` uint8, padded to :attr:`slice_shape`."""
        row = self.index.iloc[i]
        image, label = self.case_volume(str(row["case"]))
        number = int(row["slice"])
        plane = np.take(image, number, axis=self.slice_axis + 1)  # (C, a, b)
        mask = np.take(label, number, axis=self.slice_axis)
        return self._pad(np.ascontiguousarray(np.moveaxis(plane, 0, -1))), self._pad(mask)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({len(self.cases_table)} volumes, {len(self)} slices along axis "
                f"{self.slice_axis}, {'x'.join(map(str, self.slice_shape))}, channels "
                f"{', '.join(self.channel_names)})")
