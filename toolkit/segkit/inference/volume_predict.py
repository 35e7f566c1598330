"""Predicting one volume with a run's 2D model: the run's slicing and scaling, probabilities per voxel.

A 2D run trained on a volume dataset (``segkit run --dataset msd``) saw each case as
:class:`segkit.data.volume.VolumeDataset` serves it: the channels scaled to 0..255 by the case's
own 0.5th and 99.5th percentiles (:func:`~segkit.data.volume.scale_to_uint8`), cut into slices
along the run's ``slice_axis``, each slice padded with zeros to the dataset's ``slice_shape``.
:func:`volume_settings` recovers those settings from the run, :func:`read_case` reads a case's
image files, and :func:`predict_volume` predicts every slice in batches with the existing
:class:`~segkit.inference.predictor.Predictor` (2.5D context stacked as in training) and stacks
the probabilities into a volume ``(channels, X, Y, Z)`` with the padding cropped away.
:func:`label_volume` turns that into a label map with the run's threshold or argmax rule and,
on request, the largest connected component of each label in 3D.

``predict_volume(predictor, image, settings)`` is the one place that knows how a model sees a
volume: a 3D model with sliding-window inference slots in behind the same signature.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from segkit.data.preprocess import ChannelStats, normalize_case
from segkit.data.volume import VolumeDataset, scale_to_uint8
from segkit.data.volume_io import check_finite, read_volume
from segkit.errors import CheckpointError, ConfigError, DataError, unknown_name
from segkit.inference.postprocess import POSTPROCESS_MODES, largest_component_3d
from segkit.inference.volume_limits import check_volume_inference
from segkit.inference.whole_volume import volume_probabilities

__all__ = ["VolumeSettings", "label_volume", "predict_volume", "read_case", "volume_settings"]


@dataclass(frozen=True)
class VolumeSettings:
    """How a run's 2D model saw volumes in training.

    ``slice_axis``: the volume axis sliced along (0, 1, 2). ``slice_shape``: the in-plane size
    every training slice was padded to (a larger slice is padded to the next multiple of
    ``pad_multiple`` instead). ``channels``: image channels of one case. ``dataset``: the run's
    dataset name, for messages.
    """

    slice_axis: int
    slice_shape: tuple[int, int]
    pad_multiple: int
    channels: int
    dataset: str

    def padded(self, plane: tuple[int, int]) -> tuple[int, int]:
        """The size a slice of in-plane size ``plane`` is padded to."""
        step = self.pad_multiple
        return tuple(max(want, int(math.ceil(have / step) * step))  # type: ignore[return-value]
                     for want, have in zip(self.slice_shape, plane, strict=True))


def _member_config(member: Any) -> dict[str, Any] | None:
    return (getattr(member, "info", None) or {}).get("config")


def _slice_channels(member: Any) -> int:
    """Image channels of one slice: the model's input channels over its ``2k + 1`` stacked slices."""
    return int(member.in_channels or 1) // (2 * int(member.context or 0) + 1)


def _settings_of(config: dict[str, Any], member: Any, registry: Any) -> VolumeSettings:
    """The run's volume settings, from its training dataset (built as training built it)."""

    spec = dict(config.get("dataset") or {})
    name = str(spec.pop("name", "?"))
    component = registry.get("dataset", name)
    target = component.load()
    if not (isinstance(target, type) and issubclass(target, VolumeDataset)):
        raise ConfigError(f"{member.source} was trained on the {name!r} dataset of 2D images, so it predicts 2D images, not "
                          "volumes; predict volumes with a run trained on a volume dataset (segkit run --dataset msd).")
    try:
        dataset = registry.build("dataset", name, **spec)
    except (DataError, ConfigError) as error:
        # Without its training data the slice axis is known only when the run chose it explicitly.
        if isinstance(spec.get("slice_axis"), int):
            return VolumeSettings(int(spec["slice_axis"]), (0, 0), int(spec.get("pad_multiple", 16)),
                                  _slice_channels(member), name)
        raise ConfigError(f"{member.source} records no slice axis (its dataset chose one from the training volumes' "
                          f"spacing) and its training data cannot be read to recover it ({str(error).rstrip('.')}). Restore the "
                          f"training data at {spec.get('root', '?')}, or retrain with --set dataset.slice_axis=N."
                          ) from None
    return VolumeSettings(int(dataset.slice_axis), tuple(int(s) for s in dataset.slice_shape),  # type: ignore[arg-type]
                          int(spec.get("pad_multiple", 16)), len(dataset.channel_names), name)


def _recorded_settings(member: Any, config: dict[str, Any]) -> VolumeSettings | None:
    """The settings a checkpoint records in its preprocessing (``slice_axis`` and ``slice_shape``), if it does.

    Runs record them so that predicting needs no access to the training data; a run without
    them has its training dataset rebuilt (:func:`_settings_of`).
    """
    preprocessing = (getattr(member, "info", None) or {}).get("preprocessing") or {}
    axis, shape = preprocessing.get("slice_axis"), preprocessing.get("slice_shape")
    if axis is None or shape is None:
        return None
    if axis not in (0, 1, 2) or len(shape) != 2 or any(not isinstance(n, int) or n < 1 for n in shape):

        raise CheckpointError(f"{member.source} records the slice axis {axis!r} and slice shape {shape!r}; expected "
                              "an axis 0, 1 or 2 and two positive sizes.")
    spec = config.get("dataset") or {}
    return VolumeSettings(int(axis), (int(shape[0]), int(shape[1])), int(spec.get("pad_multiple", 16)),
                          _slice_channels(member), str(spec.get("name", "?")))


def volume_settings(predictor: Any, registry: Any) -> VolumeSettings:
    """The volume settings every model of ``predictor`` was trained with; a ConfigError when there are none.

    A checkpoint that records ``slice_axis`` and ``slice_shape`` in its preprocessing gives them;
    otherwise the run's training dataset is rebuilt from its configuration to learn them.
    Models without a training configuration (ONNX exports) cannot say how they sliced volumes.
    Models of an ensemble must agree on the slice axis and the padded slice size.
    """
    found: dict[str, VolumeSettings] = {}
    cache: dict[str, VolumeSettings] = {}
    for member in predictor.members:
        config = _member_config(member)
        if config is None:
            raise ConfigError(f"{member.source} holds no training configuration (an ONNX export), so it cannot say how "
                              "its run sliced and scaled volumes; predict volumes with the run directory or its .pt "
                              "checkpoint.")
        recorded = _recorded_settings(member, config)
        if recorded is not None:
            found[member.source] = recorded
            continue
        key = repr(sorted((config.get("dataset") or {}).items()))
        if key not in cache:
            cache[key] = _settings_of(config, member, registry)
        found[member.source] = cache[key]
    distinct = {(s.slice_axis, s.slice_shape, s.pad_multiple) for s in found.values()}
    if len(distinct) > 1:
        listing = ", ".join(f"{source} (axis {s.slice_axis}, slices {s.slice_shape[0]}x{s.slice_shape[1]})"
                            for source, s in found.items())
        raise ConfigError(f"the models of an ensemble must slice volumes the same way, since they share one input: "
                          f"{listing}.")
    return next(iter(found.values()))


def read_case(paths: Sequence[str | Path], channels: int) -> tuple[np.ndarray, Path, tuple[float, ...]]:
    """A case's image as float32 ``(C, X, Y, Z)``, the file whose header (grid) the outputs take, and its
    voxel spacing (mm per spatial axis, from that header).

    ``paths``: one 3D or 4D (channels last) file, or one 3D file per channel. A channel count
    other than ``channels``, a file that is not a 3D/4D volume, or NaN/infinite voxels are a
    :class:`DataError` naming the file.
    """

    volumes = []
    for path in paths:
        volume = read_volume(path)
        if volume.array.ndim > 4:
            raise DataError(f"{path} has shape {volume.array.shape}; a case is one 3D volume, or 4D with channels last")
        check_finite(volume)
        volumes.append(volume)
    if len(volumes) == 1:
        array = volumes[0].array
        image = np.moveaxis(array, 3, 0) if array.ndim == 4 else array[None]
    else:
        shapes = {v.array.shape for v in volumes}
        if len(shapes) > 1 or any(v.array.ndim != 3 for v in volumes):
            raise DataError(f"the channel files {', '.join(map(str, paths))} differ in shape ({sorted(shapes)}); each "
                            "must be one 3D volume of the same size")
        image = np.stack([v.array for v in volumes])
    if image.shape[0] != channels:
        raise DataError(f"{paths[0]} gives {image.shape[0]} channel(s) but the model takes {channels}; pass a case with "
                        f"{channels} channel(s) (one 4D file, or {channels} files CASE_0000, CASE_0001, ...).")
    return image, Path(paths[0]), tuple(float(s) for s in volumes[0].spacing[:3])


def _stacked_slice(image: np.ndarray, axis: int, number: int, context: int) -> np.ndarray:
    """Slice ``number`` along ``axis`` of ``image`` (C, X, Y, Z) as ``(a, b, C * (2k + 1))``, neighbours stacked."""
    last = image.shape[axis + 1] - 1
    planes = [np.take(image, min(max(number + step, 0), last), axis=axis + 1) for step in range(-context, context + 1)]
    return np.concatenate([np.moveaxis(p, 0, -1) for p in planes], axis=2)


def normalized_volume(predictor: Any, image: np.ndarray, *, in_place: bool = False) -> np.ndarray:
    """``image`` (C, X, Y, Z) normalised as a 3D run's training volumes were (its checkpoint's ``volume`` record);
    ``in_place`` overwrites a float32 ``image`` rather than copying it."""

    records = {repr((m.info.get("preprocessing") or {}).get("volume")) for m in predictor.members}
    if len(records) > 1:
        raise ConfigError("the 3D models of an ensemble must normalise volumes the same way: "
                          + ", ".join(m.source for m in predictor.members))
    record = (predictor.members[0].info.get("preprocessing") or {}).get("volume") or {}
    schemes = record.get("schemes") or ["zscore"] * image.shape[0]
    stats = [ChannelStats(**s) for s in record["stats"]] if record.get("stats") else None
    return normalize_case(image, schemes, stats, in_place=in_place)


def predict_volume(predictor: Any, image: np.ndarray, settings: VolumeSettings, batch_size: int = 8,
                   spacing: Sequence[float] | None = None) -> np.ndarray:
    """Probabilities of every voxel of a case: float32 ``(channels, X, Y, Z)``, the model's output channels.

    ``image`` is the case as :func:`read_case` gives it (float, ``(C, X, Y, Z)``); it is scaled
    and sliced as the run's training data was (a 3D model trained on resampled volumes sees it
    resampled from ``spacing``, its voxel size in mm, and the probabilities come back on its grid).
    The channels are :attr:`Labels.out_channels`: one (binary), background and each label
    (multiclass), or each label (multilabel).
    """
    import torch

    if predictor.volumetric:  # a 3D model: the whole volume, normalised as in training
        check_volume_inference(predictor, [("", image.shape[1:], spacing)], image.shape[0], where="the input volume")
        return volume_probabilities(predictor, torch.from_numpy(normalized_volume(predictor, image)),
                                    spacing=spacing, batch_size=batch_size).numpy()
    axis = settings.slice_axis
    scaled = scale_to_uint8(image)
    spatial = scaled.shape[1:]
    plane = tuple(n for k, n in enumerate(spatial) if k != axis)
    height, width = settings.padded(plane)  # type: ignore[arg-type]
    context = int(getattr(predictor, "context", 0) or 0)
    out = np.zeros((predictor.labels.out_channels, *spatial), dtype=np.float32)
    moved = np.moveaxis(out, axis + 1, 1)  # a view: (channels, slices, a, b)
    count = spatial[axis]
    for start in range(0, count, max(batch_size, 1)):
        numbers = range(start, min(start + batch_size, count))
        stack = np.stack([_stacked_slice(scaled, axis, n, context) for n in numbers])  # (N, a, b, C')
        padded = np.zeros((len(stack), height, width, stack.shape[3]), dtype=np.uint8)
        padded[:, :plane[0], :plane[1]] = stack
        tensor = torch.from_numpy(padded).permute(0, 3, 1, 2).float() / 255.0
        probabilities = predictor.probabilities(tensor).numpy()[:, :, :plane[0], :plane[1]]
        moved[:, start:start + len(stack)] = np.moveaxis(probabilities, 0, 1)
    return out


def label_volume(probabilities: np.ndarray, labels: Any, threshold: float, slice_axis: int,
                 postprocess: str = "none") -> np.ndarray:
    """A uint8 label map ``(X, Y, Z)`` of values ``0 .. C-1`` from :func:`predict_volume`'s probabilities.

    Binary and multilabel models threshold each label at ``threshold``; multiclass models take
    the most probable label. ``postprocess = "lcc"`` keeps each label's largest connected
    component in 3D (8-connected within a slice, face-connected across slices, as predict does
    for the slices of a 2D case). Where labels overlap (multilabel), the higher label wins.
    """
    import torch

    if postprocess not in POSTPROCESS_MODES:
        raise unknown_name("postprocess mode", postprocess, POSTPROCESS_MODES)
    shape = probabilities.shape[1:]
    flat = torch.from_numpy(probabilities).reshape(1, len(probabilities), shape[0], -1)  # the rules want (N, C, H, W)
    if labels.mode == "binary":
        masks = (flat >= threshold)[0].numpy()
    else:
        masks = labels.masks_from_probabilities(flat, threshold)[0].numpy()
    masks = masks.reshape(len(masks), *shape)  # (K, X, Y, Z)
    if postprocess == "lcc":
        masks = np.stack([np.moveaxis(largest_component_3d(np.moveaxis(m, slice_axis, 0)), 0, slice_axis)
                          for m in masks])
    label_map = labels.label_map(torch.from_numpy(masks).reshape(1, len(masks), shape[0], -1))
    return label_map.reshape(shape).numpy().astype(np.uint8)
