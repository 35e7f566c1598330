"""A 3D model's label map of a whole volume, made slab by slab so that a CT-sized volume fits in memory.

``segkit predict`` of a 3D run comes through :func:`predict_label_map`: the volume is normalised in
place, the model's probabilities arrive one slab at a time along one axis
(:func:`~segkit.inference.whole_volume.volume_slabs`: sliding windows stitched in a ring buffer one
patch deep, brought back from the model's grid slab by slab), and each slab becomes labels (the run's
threshold or argmax rule) in a uint8 map as it comes. What is held is the volume, one slab of
probabilities and the label map, plus the probability maps asked for (``--save-probs``) and, for
``--postprocess lcc``, the work of keeping each label's largest component; never the volume's ``K``
channels of logits or probabilities (:func:`segkit.memory.volume_streamed_bytes` counts it, and
:func:`~segkit.inference.volume_limits.check_volume_inference` checks it before the first case is read).

An ensemble averages whole probability maps (its models may slide along different axes), so it
holds them: the memory check counts them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from segkit.errors import unknown_name
from segkit.inference.postprocess import POSTPROCESS_MODES, largest_component_3d
from segkit.inference.volume_predict import normalized_volume
from segkit.inference.whole_volume import volume_slabs

__all__ = ["predict_label_map", "slab_masks"]


def slab_masks(probabilities: torch.Tensor, labels: Any, threshold: float) -> torch.Tensor:
    """Each predicted label's mask ``(L, ...)`` bool from probabilities ``(K, ...)`` of any spatial shape: the
    threshold for binary and multilabel models, the most probable label for multiclass ones."""
    shape = tuple(probabilities.shape[1:])
    flat = probabilities.reshape(1, probabilities.shape[0], shape[0], -1)  # the rules want (N, C, H, W)
    if labels.mode == "binary":
        masks = (flat >= threshold)[0]
    else:
        masks = labels.masks_from_probabilities(flat, threshold)[0]
    return masks.reshape(masks.shape[0], *shape)


def _label_values(masks: torch.Tensor, labels: Any) -> torch.Tensor:
    """uint8 label values ``(...)`` from masks ``(L, ...)``: where labels overlap (multilabel), the highest wins."""
    shape = tuple(masks.shape[1:])
    values = labels.label_map(masks.reshape(1, masks.shape[0], shape[0], -1))
    return values.reshape(shape).to(torch.uint8)


def _largest_only(mask: np.ndarray, slice_axis: int) -> np.ndarray:
    """``mask`` (bool) reduced to its largest 3D component, connected as :func:`largest_component_3d` connects."""
    kept = largest_component_3d(np.moveaxis(mask, slice_axis, 0).view(np.uint8))
    return np.moveaxis(kept, 0, slice_axis).astype(bool)


def predict_label_map(predictor: Any, image: np.ndarray, *, spacing: Sequence[float] | None, threshold: float,
                      slice_axis: int, postprocess: str = "none", keep: Sequence[int] = (), batch_size: int = 4,
                      progress: Callable[[int, int], None] | None = None) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    """The uint8 label map ``(X, Y, Z)`` of a case read by :func:`~segkit.inference.volume_predict.read_case`, and
    the probability maps (float32 ``(X, Y, Z)``) of the output channels ``keep``.

    ``image`` (float32 ``(C, X, Y, Z)``) is normalised in place as the run's training volumes were. ``postprocess
    = "lcc"`` keeps each label's largest connected component (8-connected within a slice along ``slice_axis``,
    face-connected across slices, as for every volume segkit predicts).
    """
    if postprocess not in POSTPROCESS_MODES:
        raise unknown_name("postprocess mode", postprocess, POSTPROCESS_MODES)
    labels = predictor.labels
    volume = torch.from_numpy(normalized_volume(predictor, image, in_place=True))
    shape = tuple(int(n) for n in volume.shape[1:])
    label_map = np.zeros(shape, dtype=np.uint8)
    kept = {k: np.zeros(shape, dtype=np.float32) for k in keep}
    overlapping = postprocess == "lcc" and labels.mode == "multilabel"  # the masks themselves are post-processed
    masks_whole = np.zeros((len(labels.foreground), *shape), dtype=bool) if overlapping else None
    axis, slabs = volume_slabs(predictor, volume, spacing=spacing, batch_size=batch_size, progress=progress)
    for first, last, probabilities in slabs:
        where = [slice(None)] * 3
        where[axis] = slice(first, last)
        masks = slab_masks(probabilities, labels, threshold)
        label_map[tuple(where)] = _label_values(masks, labels).numpy()
        if masks_whole is not None:
            masks_whole[(slice(None), *where)] = masks.numpy()
        for k, array in kept.items():
            array[tuple(where)] = probabilities[k].numpy()
    if postprocess == "lcc":
        if masks_whole is not None:
            for mask in masks_whole:
                mask &= _largest_only(mask, slice_axis)
            for row in range(shape[0]):  # the label values row by row: torch's label map is int64
                label_map[row] = _label_values(torch.from_numpy(masks_whole[:, row]), labels).numpy()
        else:  # one label per voxel: each label's region is its mask
            for value in range(1, len(labels.foreground) + 1):
                region = label_map == value
                if region.any():
                    label_map[region & ~_largest_only(region, slice_axis)] = 0
    return label_map, kept
