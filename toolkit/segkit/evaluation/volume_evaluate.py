"""Scoring 3D models (runs trained with a 3D ``train.patch_size``) on whole volumes.

Each case is read from a volume cache with the normalisation the run was trained with, on the case's
own grid, and predicted whole by :func:`~segkit.inference.whole_volume.volume_probabilities` (Gaussian-weighted
sliding windows of the training patch size, mirrored along the three axes when ``tta``; a run trained on
volumes resampled to ``train.target_spacing`` predicts each case resampled to it and its probabilities are
interpolated back), so every run is scored against the labels as stored, as nnU-Net scores. Each case is scored
as one item: its Dice per label is the 3D Dice of the volume, and the boundary metrics (HD95, ASSD,
surface Dice) are computed in millimetres from the dataset's spacing. An ensemble averages its
models' probabilities, as for 2D models.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from segkit.inference.volume_limits import check_evaluation_data
from segkit.inference.whole_volume import keep_largest_components, volume_probabilities
from segkit.progress import track
from segkit.scoring.metrics import MetricAccumulator, label_counts
from segkit.train.volume_data import volume_cache_of

__all__ = ["evaluate_volumes"]


def _case_counts(predictor: Any, cache: Any, case: str, *, threshold: float, postprocess: str, batch_size: int,
                 surface: Any, axis: int) -> torch.Tensor:
    """One case predicted whole: its confusion counts per label (and its planes added to ``surface``)."""
    labels = predictor.labels
    image = torch.from_numpy(np.array(cache.image(case), dtype=np.float32))
    truth_values = torch.from_numpy(np.array(cache.label(case), dtype=np.float32))
    probability = volume_probabilities(predictor, image, spacing=cache.spacing(case), batch_size=batch_size)
    del image
    predicted = labels.masks_from_probabilities(probability[None], threshold)[0]  # (K, X, Y, Z)
    del probability
    if postprocess == "lcc":
        predicted = keep_largest_components(predicted)
    truth = labels.truth_masks(truth_values[None, None])[0]
    del truth_values
    if surface is not None:
        planes = [(np.take(predicted.numpy(), n, axis=axis + 1), np.take(truth.numpy(), n, axis=axis + 1))
                  for n in range(predicted.shape[axis + 1])]
        surface.add(case, planes)
    return label_counts(predicted[None], truth[None])[0]


def evaluate_volumes(predictor: Any, data: Any, metrics: dict[str, Any], *, threshold: float, surface: Any = None,
                     postprocess: str = "none", batch_size: int = 4, progress: bool = False,
                     description: str = "evaluate") -> Any:
    """Predict every case of ``data`` (an :class:`~segkit.evaluation.evaluate.EvaluationData` of a volume dataset)
    whole and accumulate one row of confusion counts per case; returns a ``MetricAccumulator``.

    ``postprocess = "lcc"`` keeps each label's largest connected component in 3D.
    """

    labels = predictor.labels
    accumulator = MetricAccumulator(metrics, threshold, labels=labels)
    check_evaluation_data(predictor, data)  # channels, window count and memory, before the cache is built
    cache = volume_cache_of(data.dataset, quiet=not progress)
    index = data.dataset.index
    cases: list[str] = list(dict.fromkeys(index["case"].astype(str).iloc[list(data.positions)].tolist()))
    axis = int(getattr(data.dataset, "slice_axis", 2))
    counts, names = [], []
    for case in track(cases, total=len(cases), desc=description, enabled=progress):
        # one function call per case: its volume, probabilities and masks are freed before the next is read
        counts.append(_case_counts(predictor, cache, case, threshold=threshold, postprocess=postprocess,
                                   batch_size=batch_size, surface=surface, axis=axis))
        names.append(case)
    stacked = torch.stack(counts) if counts else torch.zeros((0, len(labels.foreground), 4), dtype=torch.int64)
    accumulator.update_counts(stacked if accumulator.per_label else stacked[:, 0], names)
    return accumulator

