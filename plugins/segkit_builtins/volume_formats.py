"""The built-in volume formats: NIfTI through nibabel, NRRD and MetaImage through SimpleITK.

Each is a :class:`segkit.data.volume_formats.VolumeFormat` registered in registry.toml (kind
``volume_format``); the readers and writers themselves live in :mod:`segkit.data.nifti` and
:mod:`segkit.data.sitk_volume`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from segkit.data.nifti import NIFTI_SUFFIXES, nifti_header_shape, nifti_header_spacing, read_nifti, write_nifti_like
from segkit.data.sitk_volume import (
    SITK_SUFFIXES,
    read_sitk,
    require_simpleitk,
    sitk_header_shape,
    sitk_header_spacing,
    sitk_output_suffix,
    write_sitk_like,
)
from segkit.data.volume_file import Volume
from segkit.data.volume_formats import VolumeFormat

__all__ = ["NiftiFormat", "SimpleITKFormat"]


class NiftiFormat(VolumeFormat):
    """NIfTI-1 and NIfTI-2 (``.nii``, ``.nii.gz``); outputs are gzipped NIfTI-1 with the input's header."""

    suffixes = NIFTI_SUFFIXES

    def read(self, path: Path, dtype: type = np.float32) -> Volume:
        return read_nifti(path, dtype)

    def header_shape(self, path: Path) -> tuple[int, ...]:
        return nifti_header_shape(path)

    def header_spacing(self, path: Path) -> tuple[float, ...]:
        return nifti_header_spacing(path)

    def output_suffix(self, path: Path) -> str:
        return ".nii.gz"

    def write_like(self, path: Path, array: np.ndarray, reference: Path, intent: str = "none") -> None:
        write_nifti_like(path, array, reference, intent=intent)


class SimpleITKFormat(VolumeFormat):
    """NRRD (``.nrrd``, ``.nhdr``) and MetaImage (``.mha``, ``.mhd``) through SimpleITK (``segkit[sitk]``);
    outputs are the single-file form of the input's format with its spacing, origin and direction."""

    suffixes = SITK_SUFFIXES

    def check_available(self) -> None:
        require_simpleitk()

    def read(self, path: Path, dtype: type = np.float32) -> Volume:
        return read_sitk(path, dtype)

    def header_shape(self, path: Path) -> tuple[int, ...]:
        return sitk_header_shape(path)

    def header_spacing(self, path: Path) -> tuple[float, ...]:
        return sitk_header_spacing(path)

    def output_suffix(self, path: Path) -> str:
        return sitk_output_suffix(path)

    def write_like(self, path: Path, array: np.ndarray, reference: Path, intent: str = "none") -> None:
        write_sitk_like(path, array, reference)
