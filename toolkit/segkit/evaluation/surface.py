"""Boundary (surface distance) metrics of binary masks: HD95, ASSD and surface Dice.

The overlap metrics in :mod:`segkit.scoring.metrics` count pixels; these measure how far the
outline of a prediction lies from the outline of the truth. Inputs are boolean masks of
one image ``(H, W)`` or one volume ``(S, H, W)`` (for a case, its slices stacked in slice
order). Distances are Euclidean, in units of ``spacing`` (the physical size of a pixel or
voxel along each axis; ``None`` means 1 per axis, i.e. pixels).

Definitions (see docs/metrics.md, "Boundary metrics"):

- **border** of a mask: ``mask XOR binary_erosion(mask)`` with scipy's default,
  face-connected structuring element and ``border_value=0``, so a mask that touches the
  edge of the array has its edge pixels on its border.
- **directed distances** P->T: for every border pixel of the prediction, the distance to
  the nearest border pixel of the truth; T->P the other way round.
- ``hd95``: the larger of the 95th percentiles (numpy's linear interpolation) of P->T
  and T->P. Lower is better.
- ``assd``: the mean of P->T and T->P pooled into one set. Lower is better.
- ``surface_dice`` at ``tolerance``: the fraction of all border pixels of both masks that
  lie within ``tolerance`` (``<=``) of the other mask's border. Higher is better, in [0, 1].

Empty masks (where the distances are undefined), applied by every function except
:func:`surface_distances`, which raises instead:

==========================  ================  ================  ==============
case                        ``hd95``          ``assd``          ``surface_dice``
==========================  ================  ================  ==============
both empty                  0.0               0.0               1.0
exactly one empty           diagonal          diagonal          0.0
==========================  ================  ================  ==============

where *diagonal* is ``sqrt(sum((n_i * s_i) ** 2))`` for an array of shape ``n`` and
spacing ``s``: the diagonal of the image or volume, a finite stand-in for "as far off as
it gets" that keeps means over images or cases defined (as BraTS-style evaluations do).

The results agree with MONAI's ``compute_hausdorff_distance(percentile=95)``,
``compute_average_surface_distance(symmetric=True)`` and ``compute_surface_dice`` on
non-empty masks (tests/test_surface.py). For empty masks MONAI 1.6 gives nan or inf
(nan for all three when both are empty; nan HD95, inf ASSD, 0 surface Dice when one is).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import ndimage

__all__ = [
    "SURFACE_METRICS",
    "HIGHER_IS_BETTER",
    "surface_distances",
    "hd95",
    "assd",
    "surface_dice",
    "surface_scores",
]

#: The names of the boundary metrics, in the order :func:`surface_scores` returns them.
SURFACE_METRICS: tuple[str, str, str] = ("hd95", "assd", "surface_dice")

#: Which way is better for each boundary metric: distances (hd95, assd) are better lower,
#: surface_dice (a fraction in [0, 1]) is better higher.
HIGHER_IS_BETTER: dict[str, bool] = {"hd95": False, "assd": False, "surface_dice": True}


# --- input checks ---------------------------------------------------------------------


def _as_mask(array: Any, name: str) -> np.ndarray:
    """``array`` as a boolean numpy array; 0/1 integers or floats are accepted."""
    mask = np.asarray(array)
    if mask.dtype == bool:
        return mask
    if mask.dtype.kind not in "biuf":
        raise ValueError(f"{name} must be a boolean mask, got an array of dtype {mask.dtype}")
    if mask.size and not np.isin(mask, (0, 1)).all():
        raise ValueError(
            f"{name} must be a boolean mask (values 0 and 1 only), got values in "
            f"[{mask.min()}, {mask.max()}]: threshold it first, e.g. pass probabilities >= 0.5"
        )
    return mask.astype(bool)


def _check_masks(prediction: Any, truth: Any) -> tuple[np.ndarray, np.ndarray]:
    prediction = _as_mask(prediction, "prediction")
    truth = _as_mask(truth, "truth")
    if prediction.shape != truth.shape:
        raise ValueError(
            f"prediction {prediction.shape} and truth {truth.shape} differ in shape: "
            "pass two masks of the same image or volume"
        )
    if prediction.ndim not in (2, 3):
        raise ValueError(
            f"masks must be 2-D (H, W) or 3-D (S, H, W), got {prediction.ndim}-D shape {prediction.shape}: "
            "drop batch and channel axes (e.g. mask[0, 0]) and score one image or volume at a time"
        )
    return prediction, truth


def _check_spacing(spacing: Sequence[float] | None, ndim: int) -> tuple[float, ...]:
    if spacing is None:
        return (1.0,) * ndim
    example = ", ".join(["1.0"] * ndim)
    if isinstance(spacing, (str, bytes)) or not isinstance(spacing, (Sequence, np.ndarray)):
        raise ValueError(
            f"spacing must be a sequence of {ndim} per-axis sizes (one per mask axis), got {spacing!r}: "
            f"pass e.g. ({example}), or None for pixel units"
        )
    try:
        array = np.asarray(spacing, dtype=float)
    except (TypeError, ValueError):
        raise ValueError(
            f"spacing must be a sequence of {ndim} numbers, got {spacing!r}: pass e.g. ({example})"
        ) from None
    values = tuple(float(s) for s in array.ravel())
    if array.ndim != 1 or len(values) != ndim:
        raise ValueError(
            f"spacing must have one size per mask axis ({ndim}), got {spacing!r}: "
            f"pass e.g. ({example}), or None for pixel units"
        )
    if not all(math.isfinite(s) and s > 0 for s in values):
        raise ValueError(
            f"spacing sizes must be finite and positive, got {spacing!r}: "
            "pass the physical size of a pixel (voxel) along each axis, e.g. in mm"
        )
    return values


def _check_tolerance(tolerance: float) -> float:
    value = float(tolerance)
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(
            f"tolerance must be a finite distance >= 0 in spacing units, got {tolerance!r}: "
            "pass e.g. 1.0 (one pixel when spacing is None)"
        )
    return value


# --- distances ------------------------------------------------------------------------


def _border(mask: np.ndarray) -> np.ndarray:
    """Pixels of ``mask`` that have a face-neighbour outside it (or outside the array)."""
    return mask ^ ndimage.binary_erosion(mask, border_value=0)


def _directed(
    prediction: np.ndarray, truth: np.ndarray, spacing: tuple[float, ...]
) -> tuple[np.ndarray, np.ndarray]:
    """Both directed distance sets of two non-empty, checked masks."""
    # Work in the bounding box of the union, grown by one pixel (clipped to the array).
    # The result is the same as on the whole array: outside the box both masks are empty,
    # so the extra row of zeros erodes exactly like the array edge (border_value=0), and
    # every border pixel, the only zeros of ~border, lies inside the box.
    union = prediction | truth
    box = tuple(
        slice(max(int(idx.min()) - 1, 0), min(int(idx.max()) + 2, n))
        for idx, n in zip(np.nonzero(union), union.shape)
    )
    border_p, border_t = _border(prediction[box]), _border(truth[box])
    to_truth = ndimage.distance_transform_edt(~border_t, sampling=spacing)
    to_prediction = ndimage.distance_transform_edt(~border_p, sampling=spacing)
    return to_truth[border_p], to_prediction[border_t]


def surface_distances(
    prediction: Any, truth: Any, spacing: Sequence[float] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The directed surface distances between two non-empty boolean masks.

    Args:
        prediction, truth: boolean masks of the same shape, ``(H, W)`` or ``(S, H, W)``
            (0/1 integer or float arrays are accepted too).
        spacing: the physical size of a pixel (voxel) along each axis, one per axis, or
            ``None`` for 1 per axis (pixel units).

    Returns:
        ``(pred_to_truth, truth_to_pred)``: 1-D float64 arrays holding, for every border
        pixel of the prediction, the Euclidean distance (in spacing units) to the nearest
        border pixel of the truth, and the same from the truth's border to the
        prediction's. Border pixels are taken in C (row-major) order.

    Raises:
        ValueError: if either mask is empty (the distances are undefined: the scoring
            functions apply the empty-mask conventions instead), or the inputs are invalid.
    """
    prediction, truth = _check_masks(prediction, truth)
    sampling = _check_spacing(spacing, prediction.ndim)
    empty = [name for name, mask in (("prediction", prediction), ("truth", truth)) if not mask.any()]
    if empty:
        raise ValueError(
            f"{' and '.join(empty)} {'is' if len(empty) == 1 else 'are'} empty, so surface distances are "
            "undefined: use surface_scores (or hd95, assd, surface_dice), which apply the empty-mask conventions"
        )
    return _directed(prediction, truth, sampling)


def _diagonal(shape: tuple[int, ...], spacing: tuple[float, ...]) -> float:
    return float(math.sqrt(sum((n * s) ** 2 for n, s in zip(shape, spacing))))


def _empty_scores(
    prediction: np.ndarray, truth: np.ndarray, spacing: tuple[float, ...]
) -> dict[str, float] | None:
    """The conventional scores when a mask is empty; ``None`` when both have pixels."""
    has_p, has_t = bool(prediction.any()), bool(truth.any())
    if has_p and has_t:
        return None
    if not has_p and not has_t:
        return {"hd95": 0.0, "assd": 0.0, "surface_dice": 1.0}
    diagonal = _diagonal(prediction.shape, spacing)
    return {"hd95": diagonal, "assd": diagonal, "surface_dice": 0.0}


def _hd95(d_pt: np.ndarray, d_tp: np.ndarray) -> float:
    return float(max(np.percentile(d_pt, 95), np.percentile(d_tp, 95)))


def _assd(d_pt: np.ndarray, d_tp: np.ndarray) -> float:
    return float(np.concatenate([d_pt, d_tp]).mean())


def _surface_dice(d_pt: np.ndarray, d_tp: np.ndarray, tolerance: float) -> float:
    within = np.count_nonzero(d_pt <= tolerance) + np.count_nonzero(d_tp <= tolerance)
    return float(within / (d_pt.size + d_tp.size))


# --- the metrics ----------------------------------------------------------------------


def surface_scores(
    prediction: Any, truth: Any, tolerance: float = 1.0, spacing: Sequence[float] | None = None
) -> dict[str, float]:
    """All three boundary metrics of two masks, from one distance computation.

    Args:
        prediction, truth: boolean masks of the same shape, ``(H, W)`` or ``(S, H, W)``.
        tolerance: the distance (spacing units, ``>= 0``) within which a border pixel
            counts as matched for ``surface_dice``.
        spacing: per-axis pixel (voxel) size, or ``None`` for pixel units.

    Returns:
        ``{"hd95": ..., "assd": ..., "surface_dice": ...}`` as Python floats. With both
        masks empty: 0.0, 0.0, 1.0. With exactly one empty: hd95 and assd are the
        diagonal of the array, ``sqrt(sum((n_i * s_i) ** 2))``, and surface_dice is 0.0.
    """
    prediction, truth = _check_masks(prediction, truth)
    sampling = _check_spacing(spacing, prediction.ndim)
    tolerance = _check_tolerance(tolerance)
    empty = _empty_scores(prediction, truth, sampling)
    if empty is not None:
        return empty
    d_pt, d_tp = _directed(prediction, truth, sampling)
    return {"hd95": _hd95(d_pt, d_tp), "assd": _assd(d_pt, d_tp), "surface_dice": _surface_dice(d_pt, d_tp, tolerance)}


def hd95(prediction: Any, truth: Any, spacing: Sequence[float] | None = None) -> float:
    """The 95th-percentile Hausdorff distance (spacing units, lower is better).

    Returns:
        ``max(percentile(pred_to_truth, 95), percentile(truth_to_pred, 95))`` with numpy's
        linear interpolation; 0.0 when both masks are empty, the array diagonal
        ``sqrt(sum((n_i * s_i) ** 2))`` when exactly one is.
    """
    return surface_scores(prediction, truth, 0.0, spacing)["hd95"]


def assd(prediction: Any, truth: Any, spacing: Sequence[float] | None = None) -> float:
    """The average symmetric surface distance (spacing units, lower is better).

    Returns:
        The mean of ``pred_to_truth`` and ``truth_to_pred`` pooled into one set (each
        border pixel of either mask weighs the same); 0.0 when both masks are empty, the
        array diagonal ``sqrt(sum((n_i * s_i) ** 2))`` when exactly one is.
    """
    return surface_scores(prediction, truth, 0.0, spacing)["assd"]


def surface_dice(prediction: Any, truth: Any, tolerance: float, spacing: Sequence[float] | None = None) -> float:
    """The normalised surface Dice at ``tolerance`` (in [0, 1], higher is better).

    Returns:
        ``(#(pred_to_truth <= tolerance) + #(truth_to_pred <= tolerance))`` divided by the
        number of border pixels of both masks; 1.0 when both masks are empty, 0.0 when
        exactly one is. ``tolerance`` is in spacing units and must be ``>= 0``.
    """
    prediction, truth = _check_masks(prediction, truth)
    sampling = _check_spacing(spacing, prediction.ndim)
    tolerance = _check_tolerance(tolerance)
    empty = _empty_scores(prediction, truth, sampling)
    if empty is not None:
        return empty["surface_dice"]
    return _surface_dice(*_directed(prediction, truth, sampling), tolerance)
