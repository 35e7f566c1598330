"""What ``segkit predict`` is given: model sources and image inputs, expanded to files, and their case ids.

The command line mixes models (run directories, ``.pt`` checkpoints, ``.onnx`` exports) with
inputs (image files, folders, glob patterns); :func:`split_arguments` tells them apart,
:func:`expand_all` turns the inputs into sorted lists of image files and NIfTI volume files (one
kind per call), and :func:`case_of_file` reads the case
and slice number of a file named like LGG's ``CASE_<n>.tif``.
"""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Sequence
from pathlib import Path

from segkit.data import IMAGE_SUFFIXES
from segkit.data.volume_formats import check_formats_available, is_volume_file, volume_suffixes
from segkit.errors import ConfigError
from segkit.inference.sources import SOURCE_SUFFIXES, is_source

__all__ = ["case_of_file", "expand_all", "expand_inputs", "split_arguments"]

_GLOB_CHARS = re.compile(r"[*?\[]")
_CASE_SLICE = re.compile(r"^(?P<case>.+)_(?P<slice>\d+)$")


def split_arguments(arguments: Sequence[str]) -> tuple[list[str], list[str]]:
    """Split ``SOURCE... INPUT...``: leading sources (run directories, ``.pt``, ``.onnx``), then inputs."""

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


def _kinds() -> str:
    return f"images (png, jpg, jpeg, tif, tiff) or volumes ({', '.join(volume_suffixes())})"


def _candidates(paths: Sequence[Path]) -> list[Path]:
    """The images (not ``*_mask.*``) and volumes among ``paths``."""

    return [p for p in paths if p.is_file() and not p.name.startswith("._")
            and (is_volume_file(p) or (p.suffix.lower() in IMAGE_SUFFIXES and not p.stem.lower().endswith("_mask")))]


def _folder_files(path: Path, text: str) -> list[Path]:
    """A folder's images or volumes; a Decathlon folder (``dataset.json``) gives its ``imagesTs/``, else ``imagesTr/``."""
    if (path / "dataset.json").is_file():
        for part in ("imagesTs", "imagesTr"):
            found = _candidates(sorted((path / part).iterdir())) if (path / part).is_dir() else []
            if found:
                return found
        raise ConfigError(f"{text!r} is a Decathlon folder (it holds dataset.json) but neither its imagesTs/ nor "
                          "its imagesTr/ holds volumes (.nii.gz, .nii, .nrrd, .mha, ...).")
    found = _candidates(sorted(path.iterdir()))
    if not found:
        raise ConfigError(f"folder {text!r} holds no {_kinds()}.")
    return found


def expand_all(inputs: Sequence[str]) -> tuple[list[Path], list[Path]]:
    """``(images, volumes)``: the files that files, folders (not recursive) and globs (``**`` recurses) name.

    Folders and globs pick images and volumes and skip ``*_mask.*`` images (the label files of
    the LGG layout); a Decathlon folder gives its ``imagesTs/`` (else ``imagesTr/``); a file named
    explicitly is always taken. Both kinds in one call, a missing path
    or a glob that matches nothing is a :class:`ConfigError`; so is a NRRD/MetaImage volume without
    SimpleITK installed (any format whose library is missing).
    """
    files: list[Path] = []
    for text in inputs:
        path = Path(text).expanduser()
        if path.is_dir():
            files.extend(_folder_files(path, text))
        elif path.is_file():
            files.append(path)
        elif _GLOB_CHARS.search(text):
            found = _candidates([Path(p) for p in sorted(glob.glob(os.path.expanduser(text), recursive=True))])
            if not found:
                raise ConfigError(f"the pattern {text!r} matches no {_kinds()}.")
            files.extend(found)
        else:
            raise ConfigError(f"input {text!r} does not exist.")
    unique: dict[Path, None] = {}
    for f in files:
        unique.setdefault(f.resolve(), None)
    images = [Path(p) for p in unique if not is_volume_file(Path(p))]
    volumes = [Path(p) for p in unique if is_volume_file(Path(p))]
    check_formats_available(volumes)  # e.g. a NRRD input without SimpleITK stops here, before any work
    if images and volumes:
        raise ConfigError(f"the inputs mix {len(images)} 2D image(s) (e.g. {images[0].name!r}) and {len(volumes)} "
                          f"volume(s) (e.g. {volumes[0].name!r}); a model predicts one kind: predict them in "
                          "separate calls.")
    return images, volumes


def expand_inputs(inputs: Sequence[str]) -> list[Path]:
    """The image files of :func:`expand_all`; volumes among the inputs are a :class:`ConfigError`."""
    images, volumes = expand_all(inputs)
    if volumes:
        raise ConfigError(f"{str(volumes[0])!r} is a volume; predict volumes with segkit predict, which writes "
                          "NIfTI label maps (see docs/predict.md, Volumes).")
    return images


def case_of_file(path: Path) -> tuple[str, int] | None:
    """``(case, slice)`` when the file name ends in ``_<number>`` (LGG: ``TCGA_..._<n>.tif``), else None.

    The case is the folder plus the name without ``_<number>``, so slices of one
    patient in one folder form one case.
    """
    match = _CASE_SLICE.match(path.stem)
    if match is None:
        return None
    return f"{path.parent}/{match['case']}", int(match["slice"])
