"""Boundary metrics per case, for ``segkit evaluate``: HD95, ASSD and surface Dice of each case's volume.

:func:`segkit.evaluation.evaluate.evaluate_predictor` hands every case's predicted and true masks,
slice by slice in slice order, to :class:`SurfaceScores`, which stacks them into one
volume per case and scores each foreground label with :func:`segkit.evaluation.surface.surface_scores`
(a case of one image is scored in 2D). Distances are in pixels unless the dataset has a
``spacing`` attribute (the physical size along (slice, row, column), or (row, column)).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from segkit.evaluation.surface import SURFACE_METRICS, surface_scores

__all__ = ["SurfaceScores", "dataset_spacing"]


def dataset_spacing(dataset: Any) -> tuple[float, ...] | None:
    """The dataset's ``spacing`` attribute as floats, or None (distances in pixels)."""
    spacing = getattr(dataset, "spacing", None)
    return None if spacing is None else tuple(float(s) for s in spacing)


class SurfaceScores:
    """Collects one row of boundary metrics per case and label.

    Args:
        labels: the names of the foreground labels, in label order.
        tolerance: the distance within which a border pixel counts as matched for surface Dice.
        spacing: (slice, row, column) or (row, column) sizes; None for pixels.
    """

    def __init__(self, labels: Sequence[str], tolerance: float = 1.0, spacing: Sequence[float] | None = None) -> None:
        self.labels = list(labels)
        self.tolerance = float(tolerance)
        self.spacing = None if spacing is None else tuple(float(s) for s in spacing)
        self.rows: list[dict[str, Any]] = []

    def _spacing(self, ndim: int) -> tuple[float, ...] | None:
        if self.spacing is None:
            return None
        return self.spacing[-ndim:] if len(self.spacing) >= ndim else (1.0,) * (ndim - len(self.spacing)) + self.spacing

    def add(self, case: str, slices: Sequence[tuple[np.ndarray, np.ndarray]]) -> None:
        """Score one case from its ``(predicted, truth)`` masks, each ``(K, H, W)`` bool, in slice order.

        Slices of different sizes cannot form a volume: that case's scores are NaN.
        """
        row: dict[str, Any] = {"case": case}
        shapes = {predicted.shape for predicted, _ in slices}
        for k, label in enumerate(self.labels):
            if len(shapes) != 1:
                scores = dict.fromkeys(SURFACE_METRICS, math.nan)
            else:
                predicted = np.stack([p[k] for p, _ in slices])
                truth = np.stack([t[k] for _, t in slices])
                if predicted.shape[0] == 1:  # one image: a 2D outline, not a one-slice-thick volume
                    predicted, truth = predicted[0], truth[0]
                scores = surface_scores(predicted, truth, self.tolerance, self._spacing(predicted.ndim))
            for name, value in scores.items():
                row[f"{name}_{label}"] = value
        for name in SURFACE_METRICS:
            values = [row[f"{name}_{label}"] for label in self.labels]
            row[name] = float(np.mean(values))
        self.rows.append(row)

    def table(self) -> pd.DataFrame:
        """One row per case: each metric (the mean over the labels) and, with several labels, each label's."""
        columns = ["case", *SURFACE_METRICS]
        if len(self.labels) > 1:
            columns += [f"{name}_{label}" for label in self.labels for name in SURFACE_METRICS]
        return pd.DataFrame(self.rows, columns=columns)

    def summary(self) -> dict[str, Any]:
        """``{"tolerance", "units", "<metric>": {"mean", "median"}, "per_class": {label: {...}}}`` over cases."""
        table = pd.DataFrame(self.rows)

        def stats(column: str) -> dict[str, float]:
            values = table[column].dropna() if column in table else pd.Series(dtype=float)
            return {"mean": float(values.mean()) if len(values) else math.nan,
                    "median": float(values.median()) if len(values) else math.nan}

        result: dict[str, Any] = {"tolerance": self.tolerance,
                                  "units": "pixels" if self.spacing is None else "spacing"}
        for name in SURFACE_METRICS:
            result[name] = stats(name)
        if len(self.labels) > 1:
            result["per_class"] = {label: {name: stats(f"{name}_{label}") for name in SURFACE_METRICS}
                                   for label in self.labels}
        return result
