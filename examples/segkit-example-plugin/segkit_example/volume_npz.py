"""A volume file format of this plugin: NumPy ``.vol.npz`` archives (``example_npz``).

One archive holds ``voxels`` (3D ``(x, y, z)``, or 4D with channels last) and optionally ``affine``
(4x4, voxel -> world in millimetres, RAS); without it the voxels are 1 mm apart. Registered in
components.toml, it is read by every segkit dataset of volumes (a Decathlon folder of
``.vol.npz`` files trains as it is) and ``segkit predict`` writes its label maps in it.
"""

from __future__ import annotations

import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from segkit.data.volume_file import Volume
from segkit.data.volume_formats import VolumeFormat
from segkit.errors import DataError


class NpzVolume(VolumeFormat):
    """``.vol.npz``: ``voxels`` and an optional ``affine`` in one NumPy archive."""

    suffixes = (".vol.npz",)

    def read(self, path: Path, dtype: type = np.float32) -> Volume:
        try:
            with np.load(path, allow_pickle=False) as archive:
                voxels = np.asarray(archive["voxels"], dtype=dtype)
                affine = np.asarray(archive["affine"], dtype=np.float64) if "affine" in archive else np.eye(4)
        except FileNotFoundError:
            raise DataError(f"volume file not found: {path}") from None
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
            raise DataError(f"cannot read {path} as a .vol.npz volume (voxels, affine): {exc}") from None
        if voxels.ndim not in (3, 4) or affine.shape != (4, 4):
            raise DataError(f"{path}: voxels must be 3D or 4D and affine 4x4, got {voxels.shape} and {affine.shape}")
        spacing = tuple(float(s) for s in np.linalg.norm(affine[:3, :3], axis=0))
        if not all(np.isfinite(s) and s > 0 for s in spacing):
            raise DataError(f"{path}: its affine gives the voxel spacing {spacing}; a spacing must be positive")
        return Volume(voxels, affine, spacing, Path(path))

    def write_like(self, path: Path, array: np.ndarray, reference: Path, intent: str = "none") -> None:
        affine = self.read(reference, np.float32).affine
        handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".npz", dir=path.parent)
        os.close(handle)
        try:
            np.savez_compressed(temporary, voxels=array, affine=affine)
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
