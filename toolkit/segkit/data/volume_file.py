"""One volume file as read: its voxels, where they lie (the RAS affine), its spacing and its path.

The type every volume reader returns (:mod:`segkit.data.nifti`, :mod:`segkit.data.sitk_volume`) and the
dispatcher :mod:`segkit.data.volume_io` hands on, kept apart from both so neither imports the other.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["Volume"]


@dataclass(frozen=True)
class Volume:
    """One volume file: ``array`` (the voxels, file axis order), ``affine`` (4x4, RAS) and ``spacing`` (mm per axis)."""

    array: np.ndarray
    affine: np.ndarray
    spacing: tuple[float, ...]
    path: Path
