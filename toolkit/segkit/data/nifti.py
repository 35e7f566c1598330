"""Reading and writing NIfTI volumes (``.nii``, ``.nii.gz``) through nibabel.

The voxel array stays in the file's own axis order, with the header's affine (voxel -> world,
millimetres, RAS) and voxel spacing (the header's zooms). A compressed file (``.nii.gz``) is
decompressed whole before its voxels are used, so gzip's checksum is checked: nibabel alone reads
only as far as the array needs and never reaches the checksum, so a file with a few bytes
overwritten was read without a word, half its voxels wrong. Datasets read volumes through
:mod:`segkit.data.volume_io`, which picks the registered format by the file's suffix
(:mod:`segkit.data.volume_formats`; this one is the built-in ``nifti``).
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from segkit.data.volume_file import Volume
from segkit.errors import DataError
from segkit.fileio import atomic_write_bytes

__all__ = ["NIFTI_SUFFIXES", "is_nifti", "read_nifti", "nifti_header_shape", "nifti_header_spacing", "write_nifti",
           "write_nifti_like"]

NIFTI_SUFFIXES: tuple[str, ...] = (".nii", ".nii.gz")


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


def _load_verified(path: Path):  # noqa: ANN202 - a nibabel image
    """``path`` read whole (a ``.nii.gz`` decompressed with its checksum checked), as an in-memory nibabel image."""
    import nibabel as nib

    if not path.name.lower().endswith(".gz"):
        return _load(path)
    if not path.is_file():
        raise DataError(f"volume file not found: {path}")
    try:
        raw = gzip.decompress(path.read_bytes())
    except (OSError, EOFError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
        raise DataError(f"{path} is a damaged gzip file ({exc}); its voxels cannot be trusted: restore it from its "
                        "source or leave the case out") from None
    size = int.from_bytes(raw[:4], "little") if len(raw) >= 4 else 0
    kind = nib.Nifti2Image if size == 540 or int.from_bytes(raw[:4], "big") == 540 else nib.Nifti1Image
    try:
        return kind.from_bytes(raw)
    except Exception as exc:  # nibabel raises several types for bytes that are not NIfTI
        raise DataError(f"cannot read {path} as NIfTI: {exc}") from None


def nifti_header_shape(path: str | Path) -> tuple[int, ...]:
    """The voxel shape from the header alone (no voxels are read)."""
    return tuple(int(n) for n in _load(Path(path)).shape)


def nifti_header_spacing(path: str | Path) -> tuple[float, ...]:
    """The voxel spacing (the header's first three zooms, mm) from the header alone."""
    return tuple(float(z) for z in _load(Path(path)).header.get_zooms()[:3])


def read_nifti(path: str | Path, dtype: type = np.float32) -> Volume:
    """The volume in ``path`` as ``dtype`` (3D, or 4D with channels last as the Decathlon stores them)."""
    path = Path(path)
    image = _load_verified(path)
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


def write_nifti(path: Path, array: np.ndarray, reference: Any, intent: str = "none") -> None:
    """Write ``array`` (3D) as gzipped NIfTI-1 at ``path`` on ``reference``'s grid (a nibabel image), atomically.

    The header is ``reference``'s (qform/sform and their codes, pixdim, units, description)
    with the data type set to ``array``'s, no intensity scaling, the display range of the data,
    and a 4D reference reduced to its three spatial axes.
    """
    import nibabel as nib

    header = reference.header.copy()
    pixdim = header["pixdim"].copy()
    header.set_data_shape(array.shape)
    header["pixdim"] = pixdim  # set_data_shape resets the unused dimensions' pixdim; keep the file's
    header.set_data_dtype(array.dtype)
    header.set_slope_inter(1.0, 0.0)
    header["cal_min"], header["cal_max"] = (float(array.min()), float(array.max())) if array.size else (0.0, 0.0)
    header.set_intent(intent)
    image = nib.Nifti1Image(array, None, header)  # no affine given: the header's qform and sform are kept as they are
    atomic_write_bytes(path, gzip.compress(image.to_bytes(), compresslevel=6))


def write_nifti_like(path: Path, array: np.ndarray, reference: Path, intent: str = "none") -> None:
    """:func:`write_nifti` on the grid of the NIfTI file ``reference``."""
    write_nifti(path, array, _load(Path(reference)), intent=intent)
