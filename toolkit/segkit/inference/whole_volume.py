"""A 3D patch model over whole volumes: resampled as in training, slid, probabilities back on the volume's grid.

Each model of a predictor slides its own training window (:class:`~segkit.runs.window.WindowSettings`)
over the volume with the one sliding-window implementation (:class:`~segkit.inference.sliding_window.SlidingWindowInferer`),
mirrored along the three axes with test-time augmentation. A model trained on volumes resampled to
``train.target_spacing`` sees the volume resampled to it and its probabilities are interpolated back,
so the output always lies on the input's voxels. ``segkit predict`` and ``segkit evaluate`` of 3D runs
both come through here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from segkit.data.preprocess import resample_image, resize_probabilities
from segkit.errors import CheckpointError
from segkit.inference.postprocess import largest_component_3d
from segkit.inference.sliding_window import SlidingWindowInferer

__all__ = ["MIRROR_AXES", "volume_probabilities", "keep_largest_components", "member_target_spacing"]

#: Mirroring test-time augmentation of a volume: every combination of flips of its three axes.
MIRROR_AXES: tuple[int, ...] = (0, 1, 2)


def member_target_spacing(member: Any) -> tuple[float, ...] | None:
    """The spacing (mm) a 3D model's training volumes were resampled to (``train.target_spacing``); None: their own."""
    record = ((member.info.get("preprocessing") or {}).get("volume") or {}).get("target_spacing")
    return tuple(float(t) for t in record) if record else None


def volume_probabilities(predictor: Any, image: torch.Tensor, *, spacing: Any = None, batch_size: int = 4,
                         progress: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """Probabilities ``(out_channels, X, Y, Z)`` of one preprocessed volume ``(C, X, Y, Z)``, averaged over members.

    A model trained on volumes resampled to a target spacing sees the volume resampled to it (trilinear,
    from ``spacing``, the volume's own voxel size in mm), and its probabilities are interpolated back to
    the volume's grid (:func:`~segkit.data.preprocess.resize_probabilities`).
    """

    if not predictor.volumetric:
        raise CheckpointError("volume_probabilities needs 3D models (runs trained with a 3D train.patch_size).")
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
        inferer = SlidingWindowInferer(member.window, batch_size=batch_size, device=member.device,
                                       mirror_axes=MIRROR_AXES if predictor.tta else ())
        with torch.inference_mode():
            logits = inferer(model, resampled[target], progress=progress)
            probability = member.labels.probabilities(logits[None].float())[0].cpu()
        probability = resize_probabilities(probability, image.shape[1:])
        total = probability if total is None else total + probability
    return total / len(predictor.members)


def keep_largest_components(masks: torch.Tensor) -> torch.Tensor:
    """``masks`` ``(K, X, Y, Z)`` bool with each label reduced to its largest 3D connected component."""

    return torch.stack([torch.from_numpy(largest_component_3d(mask.numpy().astype(np.uint8)).astype(bool))
                        for mask in masks])
