"""What predicting whole volumes with a 3D model needs, checked before the first volume is read.

Evaluate, predict and a 3D run's validation slide windows of the training patch over every volume
(:mod:`segkit.inference.sliding_window`). Before that work starts, this module checks that

- the volumes have the channels the model takes (not a convolution's channel error mid-way);
- the windows stay a reasonable number: an overlap near 1 places a window at almost every voxel,
  so a volume is predicted thousands of times over (:data:`MAX_WINDOW_REPEATS`);
- the largest volume's arrays fit in memory on the grid the model was trained on
  (``train.target_spacing``; :func:`segkit.memory.volume_inference_bytes`).

Each refusal is one line naming the case, what it would need and what would fit.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from segkit import memory
from segkit.data.preprocess import resampled_shape, smallest_target_spacing
from segkit.errors import ConfigError
from segkit.inference.sliding_window import axis_window_count, slab_axis
from segkit.inference.whole_volume import member_target_spacing

__all__ = ["MAX_WINDOW_REPEATS", "window_count", "window_repeats", "check_windows", "check_volume_channels",
           "check_volume_inference", "check_evaluation_data"]

MAX_WINDOW_REPEATS = 100
"""The most windows that may cover a voxel on average: overlap 0.5 gives at most 8 in 3D, 0.75 at most 64, 0.9 up
to 1000 (each voxel predicted that many times). Beyond it sliding windows are refused, with the largest overlap
that stays within it."""

_OVERLAPS = tuple(k / 20 for k in range(19, -1, -1))  # 0.95, 0.9, ..., 0: the overlaps a refusal may suggest


def window_count(shape: Sequence[int], patch: Sequence[int], overlap: float) -> int:
    """The windows sliding-window inference runs over a volume of ``shape`` (a smaller axis is padded to the patch)."""
    return math.prod(axis_window_count(int(s), int(p), float(overlap)) for s, p in zip(shape, patch, strict=True))


def window_repeats(shape: Sequence[int], patch: Sequence[int], overlap: float) -> float:
    """How many windows cover a voxel of the (padded) volume on average: windows x patch voxels / volume voxels."""
    padded = math.prod(max(int(s), int(p)) for s, p in zip(shape, patch, strict=True))
    return window_count(shape, patch, overlap) * math.prod(int(p) for p in patch) / padded


def _size(shape: Sequence[int]) -> str:
    return "x".join(str(int(n)) for n in shape)


def check_windows(shape: Sequence[int], patch: Sequence[int], overlap: float, *, what: str,
                  setting: str = "train.window_overlap") -> None:
    """A :class:`ConfigError` when windows of ``patch`` at ``overlap`` would cover a voxel of ``what`` (a volume of
    ``shape``) more than :data:`MAX_WINDOW_REPEATS` times on average; it names the window count and the largest
    overlap that stays within the limit."""
    repeats = window_repeats(shape, patch, overlap)
    if repeats <= MAX_WINDOW_REPEATS:
        return
    fits = next((o for o in _OVERLAPS if o < overlap and window_repeats(shape, patch, o) <= MAX_WINDOW_REPEATS), 0.0)
    raise ConfigError(f"{setting} = {overlap:g} slides {window_count(shape, patch, overlap):,} windows of "
                      f"{_size(patch)} over {what} ({_size(shape)} voxels), predicting each voxel about "
                      f"{repeats:,.0f} times (at most {MAX_WINDOW_REPEATS}); use {setting} = {fits:g} or less "
                      f"({window_count(shape, patch, fits):,} windows; 0.5 is nnU-Net's)")


def check_volume_channels(model_channels: int | None, volume_channels: int, where: str) -> None:
    """A :class:`ConfigError` when the model takes another number of channels than the volumes of ``where`` have."""
    if model_channels is not None and int(model_channels) != int(volume_channels):
        raise ConfigError(f"the model takes {model_channels}-channel volumes but {where} has {volume_channels} "
                          f"channel(s); use volumes with the channels (modalities) the model was trained on")


def _member_grids(predictor: Any) -> list[tuple[tuple[int, ...], float, tuple[float, ...] | None]]:
    """Each distinct ``(patch, overlap, target spacing or None)`` the 3D models of ``predictor`` slide over."""

    return list(dict.fromkeys((m.window.patch_size, m.window.overlap, member_target_spacing(m))
                              for m in predictor.members))


def check_volume_inference(predictor: Any, cases: Iterable[tuple[str, Sequence[int], Sequence[float] | None]],
                           channels: int, *, where: str, streamed: bool = False, kept_probabilities: int = 0,
                           postprocess: str = "none") -> None:
    """Refuse, before any volume is predicted, what cannot work for ``predictor`` (3D models) on ``cases``
    (``(name, shape, spacing in mm or None)`` each, ``channels`` channels, from ``where``): another channel
    count than the model's, windows beyond :data:`MAX_WINDOW_REPEATS`, or arrays that do not fit in memory.

    ``streamed``: the label maps are made slab by slab (``segkit predict``,
    :func:`~segkit.inference.volume_labels.predict_label_map`), keeping ``kept_probabilities`` probability maps
    and post-processing with ``postprocess``; otherwise whole probability maps are made (evaluate)."""
    streamed = streamed and len(predictor.members) == 1  # an ensemble averages whole maps

    def needed(shape: Sequence[int], grid: Sequence[int] | None, patch: Sequence[int]) -> float:
        if not streamed:
            return _inference_bytes(shape, grid, channels, classes, len(predictor.members))
        on_grid = grid or shape
        padded = [max(int(s), int(p)) for s, p in zip(on_grid, patch, strict=True)]
        axis = slab_axis(on_grid, patch)
        slab = int(patch[axis]) * math.prod(padded) / padded[axis]
        masks = len(predictor.labels.foreground) if postprocess == "lcc" and predictor.labels.mode == "multilabel" else 0
        return memory.volume_streamed_bytes(math.prod(shape), math.prod(grid) if grid else None, channels, classes,
                                            slab, kept_probabilities=kept_probabilities, label_masks=masks,
                                            largest_component=postprocess == "lcc")

    if not predictor.volumetric:
        return
    check_volume_channels(predictor.in_channels, channels, where)
    classes = int(predictor.labels.out_channels)
    worst: tuple[float, str, Sequence[int], Sequence[float] | None, tuple[float, ...] | None, Any] | None = None
    for name, shape, spacing in cases:
        shape = tuple(int(n) for n in shape)
        for patch, overlap, target in _member_grids(predictor):
            grid = resampled_shape(shape, spacing, target) if target is not None and spacing is not None else shape
            check_windows(grid, patch, overlap, what=_case(name, where)
                          + (f" resampled to the model's {_mm(target)}" if grid != shape else ""),
                          setting="the model's window overlap")
            need = needed(shape, grid if grid != shape else None, patch)
            if worst is None or need > worst[0]:
                worst = (need, name, shape, spacing, target if grid != shape else None, patch)
    if worst is None:
        return
    need, name, shape, spacing, target, patch = worst
    if need <= memory.available_bytes():
        return
    fits = "predict smaller volumes, or on a machine with more memory"
    if target is not None:
        coarser = smallest_target_spacing(target, lambda t: needed(shape, resampled_shape(shape, spacing, t), patch))
        grid = _size(resampled_shape(shape, spacing, target))
        what = (f"predicting {_case(name, where)} ({_size(shape)} voxels) on the model's grid of {_mm(target)} "
                f"(its train.target_spacing: {grid} voxels)")
        if coarser is not None:
            fits = f"a model trained with train.target_spacing = {_mm(coarser)} or coarser would fit"
    else:
        what = f"predicting {_case(name, where)} ({_size(shape)} voxels, {channels} channel(s))"
        fits = _fitting_volume(shape, lambda smaller: needed(smaller, None, patch)) or fits
    memory.require_memory(need, what, fits)


def _fitting_volume(shape: Sequence[int], needed: Any) -> str | None:
    """What would fit: the volume cut along its longest axis to the most positions whose prediction fits."""
    axis = max(range(len(shape)), key=lambda k: shape[k])
    free = memory.available_bytes()

    def cut(n: int) -> tuple[int, ...]:
        return tuple(n if k == axis else int(s) for k, s in enumerate(shape))

    low, high = 0, int(shape[axis])  # needed(cut(low)) fits, needed(cut(high)) does not
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if needed(cut(middle)) <= free else (low, middle)
    if low < 1:
        return None
    return (f"a volume of at most {_size(cut(low))} voxels fits ({low} of its {shape[axis]} positions along axis "
            f"{axis}): crop it, or predict on a machine with more memory")


def _inference_bytes(shape: Sequence[int], grid: Sequence[int] | None, channels: int, classes: int,
                     members: int) -> float:
    """The arrays of one volume's prediction (:func:`segkit.memory.volume_inference_bytes`), with an ensemble's sum
    of probabilities on the volume's grid."""
    source = int(np.prod(shape, dtype=np.float64))
    target = int(np.prod(grid, dtype=np.float64)) if grid is not None else None
    ensemble = memory.FLOAT32 * classes * source if members > 1 else 0
    return memory.volume_inference_bytes(source, target, channels, classes) + ensemble


def _case(name: str, where: str) -> str:
    return f"case {name!r} of {where}" if name else where


def _mm(spacing: Sequence[float]) -> str:
    return "[" + ", ".join(f"{float(s):.4g}" for s in spacing) + "] mm"


def check_evaluation_data(predictor: Any, data: Any) -> None:
    """:func:`check_volume_inference` for the cases of an :class:`~segkit.evaluation.evaluate.EvaluationData` of
    a volume dataset, from the shapes and spacings its headers gave (``cases_table``), before its cache is built."""
    dataset = data.dataset
    table = getattr(dataset, "cases_table", None)
    if table is None:
        return
    wanted = set(dataset.index["case"].astype(str).iloc[list(data.positions)])
    rows = [(str(r.case), r.shape, r.spacing) for r in table.itertuples(index=False) if str(r.case) in wanted]
    root = getattr(dataset, "root", None)
    where = f"dataset {data.dataset_name!r}" + (f" at {root}" if root else "")
    check_volume_inference(predictor, rows, len(getattr(dataset, "channel_names", ())) or 1, where=where)
