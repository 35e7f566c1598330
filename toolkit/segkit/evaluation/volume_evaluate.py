"""Scoring 3D models (runs trained with ``train.patch_size``) on whole volumes.

Each case is read from a volume cache with the normalisation the run was trained with, on the case's
own grid, and predicted whole by Gaussian-weighted sliding windows of the training patch size (with
mirroring along the three axes when ``tta``). A run trained on volumes resampled to
``train.target_spacing`` predicts each case resampled to it and its probabilities are interpolated
back, so every run is scored against the labels as stored, as nnU-Net scores. Each case is scored
as one item: its Dice per label is the 3D Dice of the volume, and the boundary metrics (HD95, ASSD,
surface Dice) are computed in millimetres from the dataset's spacing. An ensemble averages its
models' probabilities, as for 2D models.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from segkit.errors import CheckpointError

__all__ = ["volume_window", "volume_probabilities", "evaluate_volumes", "keep_largest_components",
           "member_target_spacing"]

#: Mirroring test-time augmentation of a volume: every combination of flips of its three axes.
MIRROR_AXES: tuple[int, ...] = (0, 1, 2)


def volume_window(predictor: Any) -> tuple[tuple[int, ...], float] | None:
    """``(patch size, window overlap)`` of a predictor of 3D models; None for 2D models; an ensemble must agree."""
    windows = set()
    for member in predictor.members:
        config = member.info.get("config") or {}
        patch = (config.get("train") or {}).get("patch_size") or []
        overlap = float((config.get("train") or {}).get("window_overlap", 0.5))
        windows.add((tuple(int(p) for p in patch), overlap) if patch else None)
    if len(windows) > 1:
        raise CheckpointError("an ensemble must not mix 2D models with 3D (patch-trained) ones: "
                              + ", ".join(f"{m.source}" for m in predictor.members))
    return windows.pop()


def member_target_spacing(member: Any) -> tuple[float, ...] | None:
    """The spacing (mm) a 3D model's training volumes were resampled to (``train.target_spacing``); None: their own."""
    record = ((member.info.get("preprocessing") or {}).get("volume") or {}).get("target_spacing")
    return tuple(float(t) for t in record) if record else None


def volume_probabilities(predictor: Any, image: torch.Tensor, *, spacing: Any = None, batch_size: int = 4,
                         progress: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """Probabilities ``(out_channels, X, Y, Z)`` of one preprocessed volume ``(C, X, Y, Z)``, averaged over members.

    A model trained on volumes resampled to a target spacing sees the volume resampled to it (trilinear,
    from ``spacing``, the volume's own voxel size in mm), and its probabilities are interpolated back to
    the volume's grid (:func:`~segkit.data.preprocess.resize_probabilities`), so the output always lies
    on the input's voxels.
    """
    from segkit.data.preprocess import resample_image, resize_probabilities
    from segkit.inference.sliding_window import sliding_window_logits

    window = volume_window(predictor)
    if window is None:
        raise CheckpointError("volume_probabilities needs 3D models (runs trained with train.patch_size).")
    patch, overlap = window
    total = None
    resampled: dict[Any, torch.Tensor] = {None: image}
    for member in predictor.members:
        if "model" not in member.info:
            raise CheckpointError(f"{member.source} holds no 3D patch model to slide over the volume; predict with the "
                                  "run directory, its checkpoint or its ONNX export ('segkit export').")
        target = member_target_spacing(member)
        if target is not None and target not in resampled:
            if spacing is None:
                raise CheckpointError(f"{member.source} was trained on volumes resampled to {target} mm, so it needs "
                                      "the voxel spacing of the volume it predicts; this volume came without one.")
            resampled[target] = torch.from_numpy(resample_image(image.numpy(), spacing, target))
        model = member.info["model"]  # a torch module, or an ONNX export's session as a function
        if isinstance(model, torch.nn.Module):
            model.eval()
        with torch.inference_mode():
            logits = sliding_window_logits(model, resampled[target], patch, overlap=overlap, batch_size=batch_size,
                                           mirror_axes=MIRROR_AXES if predictor.tta else (), device=member.device,
                                           progress=progress)
            probability = member.labels.probabilities(logits[None].float())[0].cpu()
        probability = resize_probabilities(probability, image.shape[1:])
        total = probability if total is None else total + probability
    return total / len(predictor.members)


def keep_largest_components(masks: torch.Tensor) -> torch.Tensor:
    """``masks`` ``(K, X, Y, Z)`` bool with each label reduced to its largest 3D connected component."""
    from segkit.inference.postprocess import largest_component_3d

    return torch.stack([torch.from_numpy(largest_component_3d(mask.numpy().astype(np.uint8)).astype(bool))
                        for mask in masks])


def evaluate_volumes(predictor: Any, data: Any, metrics: dict[str, Any], *, threshold: float, surface: Any = None,
                     postprocess: str = "none", batch_size: int = 4, progress: bool = False,
                     description: str = "evaluate") -> Any:
    """Predict every case of ``data`` (an :class:`~segkit.evaluation.evaluate.EvaluationData` of a volume dataset)
    whole and accumulate one row of confusion counts per case; returns a ``MetricAccumulator``.

    ``postprocess = "lcc"`` keeps each label's largest connected component in 3D.
    """
    from segkit.evaluation.metrics import MetricAccumulator, label_counts
    from segkit.inference.volume_limits import check_evaluation_data
    from segkit.progress import track
    from segkit.train.volume_data import volume_cache_of

    labels = predictor.labels
    accumulator = MetricAccumulator(metrics, threshold, labels=labels)
    check_evaluation_data(predictor, data)  # channels, window count and memory, before the cache is built
    cache = volume_cache_of(data.dataset, quiet=not progress)
    index = data.dataset.index
    cases: list[str] = list(dict.fromkeys(index["case"].astype(str).iloc[list(data.positions)].tolist()))
    axis = int(getattr(data.dataset, "slice_axis", 2))
    counts, names = [], []
    for case in track(cases, total=len(cases), desc=description, enabled=progress):
        image = torch.from_numpy(np.array(cache.image(case), dtype=np.float32))
        truth_values = torch.from_numpy(np.array(cache.label(case), dtype=np.float32))
        probability = volume_probabilities(predictor, image, spacing=cache.spacing(case), batch_size=batch_size)
        predicted = labels.masks_from_probabilities(probability[None], threshold)[0]  # (K, X, Y, Z)
        if postprocess == "lcc":
            predicted = keep_largest_components(predicted)
        truth = labels.truth_masks(truth_values[None, None])[0]
        counts.append(label_counts(predicted[None], truth[None])[0])
        names.append(case)
        if surface is not None:
            planes = [(np.take(predicted.numpy(), n, axis=axis + 1), np.take(truth.numpy(), n, axis=axis + 1))
                      for n in range(predicted.shape[axis + 1])]
            surface.add(case, planes)
    stacked = torch.stack(counts) if counts else torch.zeros((0, len(labels.foreground), 4), dtype=torch.int64)
    accumulator.update_counts(stacked if accumulator.per_label else stacked[:, 0], names)
    return accumulator

