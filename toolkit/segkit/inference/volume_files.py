"""Predicting volumes into label maps: cases, output files, headers, the loop over cases.

See docs/predict.md (Volumes). Outputs for a case ``CASE`` (``CASE.nii.gz``, or the channel files
``CASE_0000.nii.gz``, ``CASE_0001.nii.gz``, ...), in the output folder (NRRD and MetaImage inputs,
read with SimpleITK, get outputs of their own format: ``.nrrd`` for ``.nrrd``/``.nhdr``, ``.mha``
for ``.mha``/``.mhd``, with the input's spacing, origin and direction):

- ``CASE.nii.gz``: the label map, uint8 values ``0 .. C-1``, on the input's voxel grid with its
  affine and header (qform/sform and their codes, pixdim, units; a 4D input's spatial part);
- ``CASE_prob.nii.gz`` (``save_probs``, one foreground label) or ``CASE_prob_<label>.nii.gz`` (one
  per foreground label): the label's probability, float32, on the same grid. One 3D file per label
  overlays in every viewer (ITK-SNAP, 3D Slicer, FSLeyes, MRIcroGL), where a 4D file of classes
  opens as a time series in some of them.

Every file is written atomically (a temporary file in the output folder, then a rename).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from segkit.data.nifti import write_nifti
from segkit.data.volume_formats import format_of
from segkit.data.volume_io import header_shape, header_spacing, volume_stem
from segkit.errors import ConfigError, DataError
from segkit.inference.output_names import claim_outputs, file_safe, refuse_label_folder
from segkit.inference.volume_labels import predict_label_map
from segkit.inference.volume_limits import check_volume_inference
from segkit.inference.volume_predict import (
    label_volume,
    predict_volume,
    read_case,
    volume_settings,
)
from segkit.progress import track

__all__ = ["VolumeCase", "VolumeSummary", "group_cases", "predict_volumes", "volume_outputs", "write_nifti",
           "write_volume_like"]

_CHANNEL_FILE = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")


@dataclass(frozen=True)
class VolumeCase:
    """One case to predict: its name and its image file(s), in channel order."""

    name: str
    paths: tuple[Path, ...]


def _output_suffix(path: Path) -> str:
    """The suffix its format writes outputs for input ``path`` with (``.nii.gz`` for NIfTI, ``.nrrd`` for ``.nhdr``)."""
    return format_of(path).output_suffix(path)


def group_cases(files: Sequence[Path]) -> list[VolumeCase]:
    """Volume files as cases: ``CASE_0000``, ``CASE_0001``, ... of one folder are one case's channels.

    A file whose name does not end in ``_`` and four digits is a case of its own. The channel
    numbers of a case must run 0, 1, ... without gaps; otherwise a :class:`ConfigError`.
    """
    groups: dict[tuple[Path, str], dict[int, Path]] = {}
    singles: list[VolumeCase] = []
    for path in files:
        match = _CHANNEL_FILE.match(volume_stem(path))
        if match is None:
            singles.append(VolumeCase(volume_stem(path), (path,)))
        else:
            groups.setdefault((path.parent, match["case"]), {})[int(match["channel"])] = path
    cases = list(singles)
    for (folder, name), channels in groups.items():
        numbers = sorted(channels)
        if numbers != list(range(len(numbers))):
            raise ConfigError(f"case {name!r} in {folder} has the channel files {', '.join(channels[n].name for n in numbers)}"
                              f"; channel files are numbered {name}_0000, {name}_0001, ... without gaps.")
        cases.append(VolumeCase(name, tuple(channels[n] for n in numbers)))
    return sorted(cases, key=lambda c: (str(c.paths[0].parent), c.name))


def volume_outputs(cases: Sequence[VolumeCase], out: Path, save_probs: bool,
                   foreground: Sequence[str]) -> list[dict[str, Path]]:
    """The output files of each case; ConfigError when two cases would write the same file or one an input."""
    inputs = {p.resolve() for case in cases for p in case.paths}
    outputs, owner = [], {}
    for case in cases:
        suffix = _output_suffix(case.paths[0])
        names = {"labels": out / f"{case.name}{suffix}"}
        if save_probs and len(foreground) > 1:
            for label in foreground:
                names[f"prob_{label}"] = out / f"{case.name}_prob_{file_safe(label)}{suffix}"
        elif save_probs:
            names[f"prob_{foreground[0]}"] = out / f"{case.name}_prob{suffix}"
        claim_outputs(names.values(), case.paths[0], inputs, owner, kind="volume")
        outputs.append(names)
    return outputs


def _spatial_shape(case: VolumeCase) -> tuple[int, ...]:
    """A case's spatial shape from its first file's header (a 4D file's channels are its last axis)."""
    return tuple(int(n) for n in header_shape(case.paths[0])[:3])


def write_volume_like(path: Path, array: np.ndarray, reference: Path, intent: str = "none") -> None:
    """Write ``array`` (3D) at ``path`` on the grid of the input file ``reference``, by its format's writer, atomically."""
    format_of(reference).write_like(path, array, reference, intent=intent)


@dataclass
class VolumeSummary:
    """What predicting volumes did."""

    written: int = 0
    foreground_voxels: int = 0
    foreground_cases: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)
    out: str = ""


def predict_volumes(
    predictor: Any,
    files: Sequence[Path],
    out: str | os.PathLike[str],
    *,
    registry: Any,
    threshold: float | None = None,
    save_probs: bool = False,
    postprocess: str = "none",
    batch_size: int = 8,
    overwrite: bool = False,
    progress: bool = False,
) -> VolumeSummary:
    """Predict every case of the volume ``files`` and write its label map (and probabilities).

    Problems found from the headers alone (a run not trained on volumes, a channel count the
    model does not take, an output that exists) are a :class:`SegkitError` before anything is
    written; a case whose voxels cannot be used (NaN, unreadable) is a failure in the summary.
    """

    out = Path(out)
    refuse_label_folder(out)
    settings = volume_settings(predictor, registry)
    cases = group_cases(files)
    for case in cases:
        shapes = [header_shape(p) for p in case.paths]
        for path, shape in zip(case.paths, shapes, strict=True):
            if len(shape) not in (3, 4) or (len(shapes) > 1 and len(shape) != 3):
                raise DataError(f"{path} has shape {shape}; a case is one 3D volume, one 4D volume with channels last, "
                                "or one 3D file per channel (CASE_0000, CASE_0001, ...).")
        found = sum(s[3] if len(s) == 4 else 1 for s in shapes)
        if found != settings.channels:
            raise DataError(f"{case.paths[0]} gives {found} channel(s) but the run (trained on {settings.dataset!r}) "
                            f"takes {settings.channels}; pass cases with {settings.channels} channel(s).")
    labels = predictor.labels
    outputs = volume_outputs(cases, out, save_probs, labels.foreground)
    offset = 1 if labels.mode == "multiclass" else 0  # multiclass probabilities start with the background
    keep = [k + offset for k, label in enumerate(labels.foreground) if save_probs]
    if predictor.volumetric:  # every case's memory, from its header, before the first is read
        check_volume_inference(predictor, [(c.name, _spatial_shape(c), header_spacing(c.paths[0])[:3]) for c in cases],
                               settings.channels, where="the input", streamed=True, kept_probabilities=len(keep),
                               postprocess=postprocess)
    if not overwrite:
        existing = [str(p) for names in outputs for p in names.values() if p.exists()]
        if existing:
            shown = ", ".join(existing[:3]) + (f" and {len(existing) - 3} more" if len(existing) > 3 else "")
            raise ConfigError(f"{len(existing)} output file(s) already exist: {shown}. "
                              "Pass --overwrite to replace them, or choose another --out.")
    out.mkdir(parents=True, exist_ok=True)
    threshold = predictor.threshold if threshold is None else threshold
    summary = VolumeSummary(out=str(out))
    for case, names in track(list(zip(cases, outputs, strict=True)), total=len(cases), desc="predict",
                             unit="volumes", enabled=progress):
        try:
            image, reference, spacing = read_case(case.paths, settings.channels)
        except DataError as error:
            summary.failures.append((str(case.paths[0]), str(error)))
            continue
        if predictor.volumetric:  # a 3D model: slab by slab, in bounded memory
            label_map, kept = predict_label_map(predictor, image, spacing=spacing, threshold=threshold,
                                                slice_axis=settings.slice_axis, postprocess=postprocess, keep=keep,
                                                batch_size=batch_size)
        else:
            probabilities = predict_volume(predictor, image, settings, batch_size=batch_size, spacing=spacing)
            label_map = label_volume(probabilities, labels, threshold, settings.slice_axis, postprocess)
            kept = {k: probabilities[k].astype(np.float32) for k in keep}
        del image
        write_volume_like(names["labels"], label_map, reference, intent="label")
        for k, label in enumerate(labels.foreground):
            if f"prob_{label}" in names:
                write_volume_like(names[f"prob_{label}"], kept.pop(k + offset), reference)
        summary.written += 1
        voxels = int(np.count_nonzero(label_map))
        summary.foreground_voxels += voxels
        summary.foreground_cases += voxels > 0
    return summary

