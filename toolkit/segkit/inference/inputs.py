"""What ``segkit predict`` is given: model sources and image inputs, expanded to files, and their case ids.

The command line mixes models (run directories, ``.pt`` checkpoints, ``.onnx`` exports) with
inputs (image files, folders, glob patterns); :func:`split_arguments` tells them apart,
:func:`expand_inputs` turns the inputs into a sorted list of image files (a volume file gets a
message that volumes are read by the volume datasets), and :func:`case_of_file` reads the case
and slice number of a file named like LGG's ``CASE_<n>.tif``.
"""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Sequence
from pathlib import Path

from segkit.errors import ConfigError

__all__ = ["split_arguments", "expand_inputs", "case_of_file"]

_GLOB_CHARS = re.compile(r"[*?\[]")
_CASE_SLICE = re.compile(r"^(?P<case>.+)_(?P<slice>\d+)$")


def split_arguments(arguments: Sequence[str]) -> tuple[list[str], list[str]]:
    """Split ``SOURCE... INPUT...``: leading sources (run directories, ``.pt``, ``.onnx``), then inputs."""
    from segkit.inference.predictor import SOURCE_SUFFIXES, is_source

    sources: list[str] = []
    position = 0
    while position < len(arguments) and is_source(arguments[position]):
        sources.append(arguments[position])
        position += 1
    inputs = list(arguments[position:])
    if not sources:
        first = arguments[0] if arguments else ""
        path = Path(first)
        why = ("it does not exist" if not path.exists() and not _GLOB_CHARS.search(first) else
               "it is a folder without config.toml or checkpoints/" if path.is_dir() else
               f"it does not end with {' or '.join(SOURCE_SUFFIXES)}" if path.suffix.lower() not in SOURCE_SUFFIXES
               else "it does not exist")
        raise ConfigError(f"the first argument must be a model: a run directory, a .pt checkpoint or a .onnx export; "
                          f"{first!r} is none of these ({why}).")
    if not inputs:
        raise ConfigError("no input images: name image files, folders or globs after the model(s).")
    late = [a for a in inputs if is_source(a)]
    if late:
        raise ConfigError(f"{late[0]!r} looks like a model but comes after the first input; "
                          "put every model before the images.")
    return sources, inputs


VOLUME_SUFFIXES: tuple[str, ...] = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd")
"""3D volume files (NIfTI, NRRD, MetaImage): not images that predict reads."""


def _is_volume(path: Path) -> bool:
    return path.name.lower().endswith(VOLUME_SUFFIXES)


def _volume_error(what: str) -> ConfigError:
    """Predict reads 2D images; a volume needs a volume dataset, which is not here yet."""
    return ConfigError(f"{what}: segkit predict reads 2D images (png, jpg, jpeg, tif, tiff), one slice a file. "
                       "Volumes are read by volume datasets, which come with the volumes work; until then save "
                       "the slices as images.")


def _images_in(paths: Sequence[Path]) -> list[Path]:
    from segkit.data import IMAGE_SUFFIXES

    return [p for p in paths if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
            and not p.stem.lower().endswith("_mask")]


def expand_inputs(inputs: Sequence[str]) -> list[Path]:
    """Image files from files, folders (not recursive) and globs (``**`` recurses).

    Folders and globs pick png, jpg, jpeg, tif and tiff files and skip ``*_mask.*``
    files (the label files of the LGG layout); a file named explicitly is always taken.
    A missing path or a glob that matches nothing is a :class:`ConfigError`.
    """
    files: list[Path] = []
    for text in inputs:
        path = Path(text).expanduser()
        if path.is_dir():
            found = _images_in(sorted(path.iterdir()))
            if not found:
                volumes = [p for p in path.iterdir() if _is_volume(p)]
                if volumes:
                    raise _volume_error(f"folder {text!r} holds {len(volumes)} volume file(s) such as "
                                        f"{volumes[0].name!r} and no images")
                raise ConfigError(f"folder {text!r} holds no images (png, jpg, jpeg, tif, tiff).")
            files.extend(found)
        elif path.is_file():
            if _is_volume(path):
                raise _volume_error(f"{text!r} is a volume")
            files.append(path)
        elif _GLOB_CHARS.search(text):
            found = _images_in([Path(p) for p in sorted(glob.glob(os.path.expanduser(text), recursive=True))])
            if not found:
                raise ConfigError(f"the pattern {text!r} matches no images (png, jpg, jpeg, tif, tiff).")
            files.extend(found)
        else:
            raise ConfigError(f"input {text!r} does not exist.")
    unique: dict[Path, None] = {}
    for f in files:
        unique.setdefault(f.resolve(), None)
    return [Path(p) for p in unique]


def case_of_file(path: Path) -> tuple[str, int] | None:
    """``(case, slice)`` when the file name ends in ``_<number>`` (LGG: ``TCGA_..._<n>.tif``), else None.

    The case is the folder plus the name without ``_<number>``, so slices of one
    patient in one folder form one case.
    """
    match = _CASE_SLICE.match(path.stem)
    if match is None:
        return None
    return f"{path.parent}/{match['case']}", int(match["slice"])
