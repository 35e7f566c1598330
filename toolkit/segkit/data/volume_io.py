"""Reading volume files of any supported format, with the checks a dataset needs.

Each file is read by the registered volume format that owns its suffix
(:mod:`segkit.data.volume_formats`): built in, NIfTI (``.nii``, ``.nii.gz``) by nibabel and NRRD
and MetaImage (``.nrrd``, ``.nhdr``, ``.mha``, ``.mhd``) by SimpleITK (the ``segkit[sitk]`` extra);
a plugin may add more. Either way a volume keeps what its
header says about where it lies: the voxel array in the file's own (x, y, z) axis order, the RAS
affine (voxel -> world, millimetres) and the voxel spacing. Problems are a
:class:`~segkit.errors.DataError` that names the file: a file that is missing or unreadable, an
image with fewer than three axes, NaN or infinite voxels, label values that are not whole numbers
or lie outside the dataset's labels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from segkit.data.volume_file import Volume
from segkit.data.volume_formats import format_of, is_volume_file, volume_stem, volume_suffixes
from segkit.errors import DataError

__all__ = ["Volume", "is_volume_file", "volume_stem", "volume_suffixes", "read_volume", "header_shape",
           "header_spacing", "read_label", "check_finite", "MAX_LABELS"]

MAX_LABELS = 256
"""Label values are kept in 8 bits (0 .. 255), as for 2D masks: at most this many labels, background included."""


def read_volume(path: str | Path, dtype: type = np.float32) -> Volume:
    """The volume in ``path`` as ``dtype`` (3D, or 4D with channels last), by the format its suffix names."""
    return format_of(path).read(Path(path), dtype)


def header_shape(path: str | Path) -> tuple[int, ...]:
    """The voxel shape from the header alone (no voxels are read, where the format allows)."""
    return format_of(path).header_shape(Path(path))


def header_spacing(path: str | Path) -> tuple[float, ...]:
    """The voxel spacing (mm per axis) from the header alone (no voxels are read, where the format allows)."""
    return format_of(path).header_spacing(Path(path))


def check_finite(volume: Volume) -> None:
    """A DataError when ``volume`` holds NaN or infinite voxels."""
    finite = np.isfinite(volume.array)
    if not finite.all():
        bad = int(finite.size - finite.sum())
        raise DataError(f"{volume.path} holds {bad} NaN or infinite voxel(s); replace them (for example with the "
                        "image's minimum) or leave the case out")


def read_label(path: str | Path, classes: int) -> Volume:
    """A label volume as uint8 label values ``0 .. classes - 1``.

    Labels stored as floats are accepted when every value is a whole number (some Decathlon files
    are float32); anything else names the file and the values found. A value is never wrapped into
    8 bits: more than :data:`MAX_LABELS` labels is refused.
    """
    if classes > MAX_LABELS:
        raise DataError(f"{classes} labels are declared; segkit keeps label values in 8 bits, so at most "
                        f"{MAX_LABELS} labels (0 .. {MAX_LABELS - 1}), background included")
    volume = read_volume(path, dtype=np.float64)  # whole numbers of any stored type are exact in float64
    array = volume.array
    if array.ndim != 3:
        raise DataError(f"{volume.path} is a label volume of shape {array.shape}; labels are 3D, one value per voxel")
    check_finite(volume)
    values = np.unique(array)
    fractional = values[values != np.round(values)]
    if fractional.size:
        raise DataError(f"{volume.path} holds label values that are not whole numbers, e.g. {fractional[:5].tolist()}; "
                        f"labels are the integers 0 .. {classes - 1}")
    outside = values[(values < 0) | (values >= classes)]
    if outside.size:
        raise DataError(f"{volume.path} holds the label value(s) {outside[:5].astype(int).tolist()}, outside "
                        f"0 .. {classes - 1} (the labels the dataset declares); fix the file or the dataset's labels")
    return Volume(array.astype(np.uint8), volume.affine, volume.spacing, volume.path)
