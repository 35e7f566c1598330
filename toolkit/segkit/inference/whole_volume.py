"""A 3D patch model over whole volumes: resampled as in training, slid, probabilities back on the volume's grid.

Each model of a predictor slides its own training window (:class:`~segkit.runs.window.WindowSettings`)
over the volume with the one sliding-window implementation (:class:`~segkit.inference.sliding_window.SlidingWindowInferer`),
mirrored along the three axes with test-time augmentation. A model trained on volumes resampled to
``train.target_spacing`` sees the volume resampled to it and its probabilities are interpolated back,
so the output always lies on the input's voxels. ``segkit predict`` and ``segkit evaluate`` of 3D runs
both come through here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch

from segkit.data.preprocess import resample_image, resize_slabs
from segkit.errors import CheckpointError
from segkit.inference.postprocess import largest_component_3d
from segkit.inference.sliding_window import Slab, SlidingWindowInferer, slab_axis

__all__ = ["MIRROR_AXES", "volume_probabilities", "volume_slabs", "windows_per_call", "keep_largest_components",
           "member_target_spacing"]

#: Mirroring test-time augmentation of a volume: every combination of flips of its three axes.
MIRROR_AXES: tuple[int, ...] = (0, 1, 2)


def member_target_spacing(member: Any) -> tuple[float, ...] | None:
    """The spacing (mm) a 3D model's training volumes were resampled to (``train.target_spacing``); None: their own."""
    record = ((member.info.get("preprocessing") or {}).get("volume") or {}).get("target_spacing")
    return tuple(float(t) for t in record) if record else None


def windows_per_call(member: Any, batch_size: int) -> int:
    """Windows per model call: ``batch_size``, at most the run's training batch (``train.batch_size``), the patches
    its plan sized a training step to hold, so that predicting never asks the device for more than training did
    (``--batch-size 8``, the default for images, would hold four times a 3D run's batch of 2)."""
    trained = ((member.info.get("config") or {}).get("train") or {}).get("batch_size")
    if isinstance(trained, int) and not isinstance(trained, bool) and trained >= 1:
        return max(1, min(int(batch_size), trained))
    return max(1, int(batch_size))


def _member_slabs(predictor: Any, member: Any, image: torch.Tensor, spacing: Any, batch_size: int,
                  progress: Callable[[int, int], None] | None) -> tuple[int, Iterator[Slab]]:
    """One model's probabilities of ``image`` on the volume's grid, slab by slab: ``(axis, slabs)``.

    A model trained at a target spacing slides over the volume resampled to it, and each slab of its
    probabilities is brought back to the volume's grid as it comes (:func:`~segkit.data.preprocess.resize_slabs`).
    """
    if "model" not in member.info:
        raise CheckpointError(f"{member.source} holds no 3D patch model to slide over the volume; predict with the "
                              "run directory, its checkpoint or its ONNX export ('segkit export').")
    target = member_target_spacing(member)
    grid = image
    if target is not None:
        if spacing is None:
            raise CheckpointError(f"{member.source} was trained on volumes resampled to {target} mm, so it needs "
                                  "the voxel spacing of the volume it predicts; this volume came without one.")
        grid = torch.from_numpy(resample_image(image.numpy(), spacing, target))
    model = member.info["model"]  # a torch module, or an ONNX export's session as a function
    if isinstance(model, torch.nn.Module):
        model.eval()
    inferer = SlidingWindowInferer(member.window, batch_size=windows_per_call(member, batch_size), device=member.device,
                                   mirror_axes=MIRROR_AXES if predictor.tta else ())
    axis = slab_axis(grid.shape[1:], member.window.patch_size)

    def probabilities() -> Iterator[Slab]:
        with torch.inference_mode():
            for first, last, logits in inferer.slabs(model, grid, progress=progress):
                yield first, last, member.labels.probabilities(logits[None].float())[0].cpu()

    if tuple(grid.shape[1:]) == tuple(image.shape[1:]):
        return axis, probabilities()
    return axis, resize_slabs(probabilities(), axis, grid.shape[1:], image.shape[1:])


def volume_slabs(predictor: Any, image: torch.Tensor, *, spacing: Any = None, batch_size: int = 4,
                 progress: Callable[[int, int], None] | None = None) -> tuple[int, Iterator[Slab]]:
    """The probabilities ``(out_channels, ...)`` of one preprocessed volume ``(C, X, Y, Z)`` slab by slab along one
    axis, on the volume's grid: ``(axis, slabs of (first, last, probabilities))``.

    One model streams: its logits exist one slab at a time (:meth:`SlidingWindowInferer.slabs`), so memory holds
    the volume, a slab and what the caller keeps of each slab. An ensemble averages whole probability maps
    (:func:`volume_probabilities`) and yields them as one slab.
    """
    if not predictor.volumetric:
        raise CheckpointError("volume probabilities need 3D models (runs trained with a 3D train.patch_size).")
    if len(predictor.members) == 1:
        return _member_slabs(predictor, predictor.members[0], image, spacing, batch_size, progress)
    whole = volume_probabilities(predictor, image, spacing=spacing, batch_size=batch_size, progress=progress)
    return 0, iter([(0, int(image.shape[1]), whole)])


def volume_probabilities(predictor: Any, image: torch.Tensor, *, spacing: Any = None, batch_size: int = 4,
                         progress: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """Probabilities ``(out_channels, X, Y, Z)`` of one preprocessed volume ``(C, X, Y, Z)``, averaged over members.

    A model trained on volumes resampled to a target spacing sees the volume resampled to it (trilinear,
    from ``spacing``, the volume's own voxel size in mm), and its probabilities are interpolated back to
    the volume's grid (:func:`~segkit.data.preprocess.resize_slabs`).
    """

    if not predictor.volumetric:
        raise CheckpointError("volume_probabilities needs 3D models (runs trained with a 3D train.patch_size).")
    total: torch.Tensor | None = None
    for member in predictor.members:
        axis, slabs = _member_slabs(predictor, member, image, spacing, batch_size, progress)
        for first, last, probability in slabs:
            if total is None:
                total = torch.zeros((probability.shape[0], *image.shape[1:]), dtype=torch.float32)
            total.narrow(axis + 1, first, last - first).add_(probability)
    assert total is not None
    return total / len(predictor.members) if len(predictor.members) > 1 else total


def keep_largest_components(masks: torch.Tensor) -> torch.Tensor:
    """``masks`` ``(K, X, Y, Z)`` bool with each label reduced to its largest 3D connected component."""

    return torch.stack([torch.from_numpy(largest_component_3d(mask.numpy().astype(np.uint8)).astype(bool))
                        for mask in masks])
