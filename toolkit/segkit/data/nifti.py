"""Reading NIfTI volumes (``.nii``, ``.nii.gz``) through nibabel, with the checks a dataset needs.

A volume keeps what its header says about where it lies: the voxel array in the file's own axis
order, the affine (voxel -> world, millimetres) and the voxel spacing (the header's zooms).
Problems are a :class:`~segkit.errors.DataError` that names the file: a file that is missing or
not NIfTI, an image with fewer than three axes, NaN or infinite voxels, label values that are not
whole numbers or lie outside the dataset's labels.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from segkit.errors import DataError

__all__ = ["NIFTI_SUFFIXES", "Volume", "is_nifti", "read_nifti", "read_label", "check_finite"]

NIFTI_SUFFIXES: tuple[str, ...] = (".nii", ".nii.gz")


@dataclass(frozen=True)
class Volume:
    """One NIfTI file: ``array`` (the voxels, file axis order), ``affine`` (4x4) and ``spacing`` (mm per axis)."""

    array: np.ndarray
    affine: np.ndarray
    spacing: tuple[float, ...]
    path: Path


def is_nifti(path: str | Path) -> bool:
    """Whether ``path``'s name ends in ``.nii`` or ``.nii.gz``."""
    name = Path(path).name.lower()
    return name.endswith(NIFTI_SUFFIXES)


def _load(path: Path):  # noqa: ANN202 - a nibabel image
    import nibabel as nib

    if not path.is_file():
        raise DataError(f"volume file not found: {path}")
    try:
        return nib.load(str(path))
    except Exception as exc:  # nibabel raises several types for files that are not NIfTI
        raise DataError(f"cannot read {path} as NIfTI: {exc}") from None


def header_shape(path: str | Path) -> tuple[int, ...]:
    """The voxel shape from the header alone (no voxels are read)."""
    return tuple(int(n) for n in _load(Path(path)).shape)


def read_nifti(path: str | Path, dtype: type = np.float32) -> Volume:
    """The volume in ``path`` as ``dtype`` (3D, or 4D with channels last as the Decathlon stores them)."""
    path = Path(path)
    image = _load(path)
    if len(image.shape) < 3:
        raise DataError(f"{path} is a {len(image.shape)}D image of shape {tuple(image.shape)}; this dataset reads "
                        "volumes (3D, or 4D with channels last). 2D images belong in the folder or csv datasets")
    try:
        array = np.asarray(image.dataobj, dtype=dtype)
    except (OSError, EOFError, ValueError, MemoryError) as exc:
        raise DataError(f"cannot read the voxels of {path}: {exc}") from None
    zooms = tuple(float(z) for z in image.header.get_zooms()[:3])
    if any(not np.isfinite(z) or z <= 0 for z in zooms):
        raise DataError(f"{path} has the voxel spacing {zooms} in its header; a spacing must be positive. "
                        "Fix the header (pixdim) of that file")
    return Volume(array, np.asarray(image.affine, dtype=np.float64), zooms, path)


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
    are float32); anything else names the file and the values found.
    """
    volume = read_nifti(path, dtype=np.float64)  # whole numbers of any stored type are exact in float64
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

