"""Reading and writing NRRD and MetaImage volumes through SimpleITK (the optional ``segkit[sitk]`` extra).

SimpleITK is ITK's Python face, the library 3D Slicer and nnU-Net read these formats with. It
stores arrays in (z, y, x) order and its world coordinates are LPS; segkit's volumes are in the
file's (x, y, z) axis order with a RAS affine, as nibabel gives NIfTI. This module converts both
ways, so a NRRD or MHA case reads like a NIfTI one: the same axis order, spacing and affine.
A multi-component image (one vector per voxel) is a 4D array with its channels last, like a
Decathlon 4D NIfTI.

A header can keep its voxels in other files (MetaImage ``ElementDataFile``, NRRD ``data file``;
always so for ``.mhd`` and ``.nhdr``). Every file a header names must lie inside the header's own
folder: it is checked before SimpleITK opens anything (:func:`check_data_files`), so a header
naming ``../../secret.raw`` or ``/etc/passwd`` is refused in training, inspect, plan and predict.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from segkit.data.contained import inside_folder
from segkit.data.volume_file import Volume
from segkit.errors import ConfigError, DataError

__all__ = ["SITK_SUFFIXES", "is_sitk_volume", "require_simpleitk", "sitk_output_suffix", "sitk_header_shape",
           "sitk_header_spacing", "read_sitk", "write_sitk_like", "header_data_files", "check_data_files"]

SITK_SUFFIXES: tuple[str, ...] = (".nrrd", ".nhdr", ".mha", ".mhd")
"""Volume files SimpleITK reads for segkit: NRRD (``.nrrd``, ``.nhdr``) and MetaImage (``.mha``, ``.mhd``)."""

_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
_HEADER_LIMIT = 1 << 20  # a header naming its data files within its first MiB (MetaIO and NRRD headers are short)
_PRINTF = re.compile(r"%[-+ #0]*\d*(?:\.\d+)?[a-zA-Z]")
_SINGLE_FILE = {".nrrd": ".nrrd", ".nhdr": ".nrrd", ".mha": ".mha", ".mhd": ".mha"}


def is_sitk_volume(path: str | Path) -> bool:
    """Whether ``path``'s name ends in one of :data:`SITK_SUFFIXES`."""
    return Path(path).name.lower().endswith(SITK_SUFFIXES)


def sitk_output_suffix(path: str | Path) -> str:
    """The suffix of outputs written for the input ``path``: its format as one file (``.nrrd`` or ``.mha``).

    ``.nhdr`` and ``.mhd`` keep the voxels in a second file, which an atomic rename cannot move
    with the header; their outputs are written as the single-file form of the same format.
    """
    return _SINGLE_FILE[Path(path).suffix.lower()]


def require_simpleitk() -> Any:
    """The SimpleITK module; a ConfigError saying how to install it when it is missing."""
    try:
        import SimpleITK
    except ImportError:
        raise ConfigError("reading NRRD and MetaImage volumes (.nrrd, .nhdr, .mha, .mhd) needs SimpleITK: "
                          "pip install 'segkit[sitk]' (or convert the files to NIfTI)") from None
    return SimpleITK


def _listed(lines: list[str], value: str, key: str) -> list[tuple[str, str]]:
    """The files one data-file field names: itself, the lines after it (``LIST``) or its pattern's folder."""
    if value.split()[:1] == ["LIST"]:
        return [(f"{key} (LIST)", line.strip()) for line in lines if line.strip()]
    if _PRINTF.search(value):  # "slice%03d.raw 1 40 1": the files differ only by the number
        return [(f"{key} (pattern)", _PRINTF.sub("0", value.split()[0]))]
    return [(key, value)]


def header_data_files(path: str | Path) -> list[tuple[str, str]]:
    """``(field, file)`` for every data file a MetaImage or NRRD header names (none when its voxels are inside it).

    A DataError when the header is too long to check (its fields not within its first MiB).
    """
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            head = handle.read(_HEADER_LIMIT + 1)
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror}") from None
    complete = len(head) <= _HEADER_LIMIT
    lines = head.decode("latin-1").splitlines()
    metaimage = path.suffix.lower() in (".mha", ".mhd")
    named: list[tuple[str, str]] | None = None
    for number, line in enumerate(lines):
        if metaimage:
            key, sign, value = line.partition("=")
            if sign and key.strip().lower() == "elementdatafile":
                value = value.strip()
                named = [] if value.upper() == "LOCAL" else _listed(lines[number + 1:], value, "ElementDataFile")
                break
        else:
            if not line.strip():
                named = []  # the end of an NRRD header (the voxels follow) without a data file
                break
            key, colon, value = line.partition(":")
            if colon and not value.startswith("=") and key.strip().lower() in ("data file", "datafile"):
                named = _listed(lines[number + 1:], value.strip(), "data file")
                break
    if named is None and complete:
        return []  # not a header SimpleITK can read either; it says so
    if named is None or (not complete and any("LIST" in field for field, _ in named)):
        raise DataError(f"{path}: its header does not say within its first {_HEADER_LIMIT >> 20} MiB where its "
                        "voxels lie, so segkit cannot check that they stay in its folder. Convert it to a "
                        "single-file .mha, .nrrd or .nii.gz")
    return named


def check_data_files(path: str | Path) -> None:
    """A DataError when a header names a data file outside its own folder (``..``, an absolute path elsewhere)."""

    path = Path(path)
    for field, named in header_data_files(path):
        inside_folder(named, path.parent, entry=field, source=path, what="the header's folder")


def _information(path: Path) -> Any:
    """A SimpleITK reader that has read ``path``'s header only."""
    sitk = require_simpleitk()
    if not path.is_file():
        raise DataError(f"volume file not found: {path}")
    check_data_files(path)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise DataError(f"cannot read {path} as a volume: {str(exc).strip().splitlines()[-1]}") from None
    return reader


def sitk_header_shape(path: str | Path) -> tuple[int, ...]:
    """The voxel shape in (x, y, z) order from the header alone; components add a last axis."""
    reader = _information(Path(path))
    shape = tuple(int(n) for n in reader.GetSize())
    components = int(reader.GetNumberOfComponents())
    return shape + ((components,) if components > 1 else ())


def sitk_header_spacing(path: str | Path) -> tuple[float, ...]:
    """The voxel spacing (mm, x y z) from the header alone."""
    return tuple(float(v) for v in _information(Path(path)).GetSpacing()[:3])


def _affine(spacing: tuple[float, ...], origin: tuple[float, ...], direction: tuple[float, ...]) -> np.ndarray:
    """The RAS voxel-to-world affine of a 3D SimpleITK geometry (LPS, row-major direction)."""
    lps = np.eye(4)
    lps[:3, :3] = np.asarray(direction, dtype=np.float64).reshape(3, 3) * np.asarray(spacing, dtype=np.float64)
    lps[:3, 3] = origin
    return _LPS_TO_RAS @ lps


def read_sitk(path: str | Path, dtype: type = np.float32) -> Any:
    """The volume in ``path`` as a :class:`~segkit.data.volume_io.Volume` in (x, y, z[, channels]) order."""

    path = Path(path)
    sitk = require_simpleitk()
    if not path.is_file():
        raise DataError(f"volume file not found: {path}")
    check_data_files(path)
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise DataError(f"cannot read {path} as a volume: {str(exc).strip().splitlines()[-1]}") from None
    if image.GetDimension() != 3:
        raise DataError(f"{path} is a {image.GetDimension()}D image of size {image.GetSize()}; this dataset reads "
                        "3D volumes (channels as vector components, or one file per channel)")
    array = sitk.GetArrayViewFromImage(image)  # (z, y, x) or (z, y, x, components)
    axes = (2, 1, 0, 3) if array.ndim == 4 else (2, 1, 0)
    array = np.ascontiguousarray(np.transpose(array, axes), dtype=dtype)
    spacing = tuple(float(s) for s in image.GetSpacing())
    if any(not np.isfinite(s) or s <= 0 for s in spacing):
        raise DataError(f"{path} has the voxel spacing {spacing} in its header; a spacing must be positive")
    return Volume(array, _affine(spacing, image.GetOrigin(), image.GetDirection()), spacing, path)


def write_sitk_like(path: Path, array: np.ndarray, reference: Path) -> None:
    """Write ``array`` (x, y, z) to ``path`` (``.nrrd`` or ``.mha``) on ``reference``'s grid, atomically.

    Spacing, origin and direction are the reference file's; the data type is the array's. The file
    is written to a temporary name in the same folder, then renamed over ``path``.
    """
    sitk = require_simpleitk()
    info = _information(Path(reference))
    image = sitk.GetImageFromArray(np.ascontiguousarray(np.transpose(array, (2, 1, 0))))
    image.SetSpacing(info.GetSpacing()[:3])
    image.SetOrigin(info.GetOrigin()[:3])
    direction = info.GetDirection()
    image.SetDirection(direction if len(direction) == 9 else
                       tuple(np.asarray(direction).reshape(info.GetDimension(), -1)[:3, :3].ravel()))
    suffix = "".join(Path(path).suffixes[-1:])
    handle, temporary = tempfile.mkstemp(prefix=f".{Path(path).name}.", suffix=suffix, dir=Path(path).parent)
    os.close(handle)
    try:
        sitk.WriteImage(image, temporary, True)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
