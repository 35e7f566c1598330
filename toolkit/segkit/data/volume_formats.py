"""Volume file formats: one reader and writer per format, registered by suffix (the ``volume_format`` kind).

A format is a :class:`VolumeFormat`: the suffixes it owns, ``read`` (voxels, affine and spacing as a
:class:`~segkit.data.volume_file.Volume`), header-only ``header_shape`` and ``header_spacing`` (no
voxels read; the defaults read them), ``write_like`` (a label map or probability volume on the grid of
an input file, atomically) and ``check_available`` (a ConfigError saying what to install). Datasets,
``segkit inspect``, the cache and ``segkit predict`` all find a file's format here, by its name's
longest matching suffix, among the formats the registry holds: built-in NIfTI and SimpleITK
(NRRD, MetaImage), and any a plugin registers::

    [volume_format.my_format]
    target = "my_plugin.formats:MyFormat"     # a VolumeFormat subclass (or a function returning one)

A plugin's format is a subclass that sets ``suffixes`` and implements ``read`` and ``write_like``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from segkit.components.registry import current_registry
from segkit.data.volume_file import Volume
from segkit.errors import ConfigError, DataError

__all__ = ["VolumeFormat", "volume_formats", "format_of", "find_format", "volume_suffixes", "is_volume_file",
           "volume_stem", "check_formats_available"]


class VolumeFormat:
    """One volume file format. Subclasses set :attr:`suffixes` and implement :meth:`read` and :meth:`write_like`."""

    #: The file name endings this format owns, lower case with their dot (``.nii.gz``); the longest match wins.
    suffixes: tuple[str, ...] = ()

    def check_available(self) -> None:
        """A ConfigError saying what to install when this format's library is missing; nothing otherwise."""

    def read(self, path: Path, dtype: type = np.float32) -> Volume:
        """The volume in ``path`` as ``dtype``: 3D ``(x, y, z)``, or 4D with channels last; a DataError naming the
        file when it cannot be read."""
        raise NotImplementedError(f"{type(self).__name__} does not read volumes")

    def header_shape(self, path: Path) -> tuple[int, ...]:
        """The voxel shape; formats whose header says it without the voxels override this."""
        return tuple(int(n) for n in self.read(path).array.shape)

    def header_spacing(self, path: Path) -> tuple[float, ...]:
        """The voxel spacing (mm per axis); formats whose header says it without the voxels override this."""
        return tuple(float(s) for s in self.read(path).spacing)

    def output_suffix(self, path: Path) -> str:
        """The suffix of outputs written for the input ``path`` (its own, by default)."""
        name = path.name.lower()
        return max((s for s in self.suffixes if name.endswith(s)), key=len, default=self.suffixes[0])

    def write_like(self, path: Path, array: np.ndarray, reference: Path, intent: str = "none") -> None:
        """Write ``array`` (3D, ``(x, y, z)``) to ``path`` on the grid of the input file ``reference``, atomically.
        ``intent`` is ``"label"`` for label maps, ``"none"`` for probabilities."""
        raise NotImplementedError(f"{type(self).__name__} does not write volumes")


def volume_formats(registry: Any = None) -> list[tuple[str, VolumeFormat]]:
    """``(name, format)`` of every registered volume format (the running command's registry by default)."""
    registry = registry or current_registry()
    cache = registry.__dict__.setdefault("_volume_formats", {})
    found = []
    for component in registry.list("volume_format"):
        if component.name not in cache:
            built = component.build()
            if not isinstance(built, VolumeFormat) or not built.suffixes:
                raise ConfigError(f"volume_format {component.name!r} ({component.target}) must build a "
                                  "segkit.data.volume_formats.VolumeFormat with at least one suffix")
            cache[component.name] = built
        found.append((component.name, cache[component.name]))
    return found


def _match(path: str | Path, registry: Any = None) -> tuple[str, VolumeFormat] | None:
    """``(suffix, format)`` of the longest registered suffix that ends ``path``'s name, or None."""
    name = Path(path).name.lower()
    best: tuple[str, VolumeFormat] | None = None
    for _, volume_format in volume_formats(registry):
        for suffix in volume_format.suffixes:
            if name.endswith(suffix.lower()) and (best is None or len(suffix) > len(best[0])):
                best = (suffix.lower(), volume_format)
    return best


def find_format(path: str | Path, registry: Any = None) -> VolumeFormat | None:
    """The format whose suffix ends ``path``'s name (the longest such suffix), or None."""
    match = _match(path, registry)
    return None if match is None else match[1]


def format_of(path: str | Path, registry: Any = None) -> VolumeFormat:
    """The format of ``path``; a DataError listing the suffixes segkit reads when none owns it."""
    volume_format = find_format(path, registry)
    if volume_format is None:
        raise DataError(f"{path} is not a volume file segkit reads: the suffixes are {', '.join(volume_suffixes(registry))} "
                        "(a plugin can register more: see docs/plugins.md, volume formats)")
    return volume_format


def volume_suffixes(registry: Any = None) -> tuple[str, ...]:
    """Every registered volume suffix, longest first (so ``.nii.gz`` is tried before ``.nii``)."""
    suffixes = {s.lower() for _, f in volume_formats(registry) for s in f.suffixes}
    return tuple(sorted(suffixes, key=lambda s: (-len(s), s)))


def is_volume_file(path: str | Path, registry: Any = None) -> bool:
    """Whether a registered volume format owns ``path``'s name."""
    return find_format(path, registry) is not None


def volume_stem(path: str | Path, registry: Any = None) -> str:
    """The file name without its volume suffix (``case.nii.gz`` -> ``case``; other names: without the last suffix)."""
    match = _match(path, registry)
    return Path(path).stem if match is None else Path(path).name[: -len(match[0])]


def check_formats_available(paths: Sequence[Path], registry: Any = None) -> None:
    """A ConfigError, before any work, when the library of one of these volumes' formats is missing."""
    checked: set[int] = set()
    for path in paths:
        volume_format = format_of(path, registry)
        if id(volume_format) not in checked:
            checked.add(id(volume_format))
            volume_format.check_available()
