"""The memory one training step needs, estimated without allocating it, and a refusal when it cannot fit.

The model is built on PyTorch's ``meta`` device (shapes without storage) and run on one
batch of that device, so any model's weights and activations are counted from its own
code: a ``model.width``, ``--image-size``, ``--batch-size`` or 2.5D ``context`` that no
machine here could hold is refused before the run directory is written.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from segkit.errors import ConfigError
from segkit.memory import available_bytes, format_bytes

__all__ = ["Footprint", "training_footprint", "check_training_fits"]

#: Copies of every weight during training: the weights, their gradients and Adam's two moments.
STATE_COPIES = 4
#: The side of the image (or volume) a model's activations are measured on when its own size is too large for the
#: meta device to describe (more elements than an int64 counts): measured there, scaled by area.
REFERENCE_SIZE = 256


@dataclass(frozen=True)
class Footprint:
    """A lower bound of one training step's memory, in bytes."""

    parameters: int
    state_bytes: int
    """Weights, gradients and optimizer state."""
    activation_bytes_per_image: int | None
    """Every module's output for one image (kept for the backward pass); None when the model cannot run on meta."""
    input_bytes_per_image: int = 0
    """The float32 image itself: what is known of a step whose activations could not be counted."""

    @property
    def per_image(self) -> int:
        """Bytes each image of a batch adds: its activations, or at least the image where they are unknown."""
        return self.activation_bytes_per_image or self.input_bytes_per_image

    def total(self, batch_size: int) -> int:
        return self.state_bytes + batch_size * self.per_image


def _tensor_bytes(value: Any) -> int:
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, (list, tuple)):
        return sum(_tensor_bytes(v) for v in value)
    if isinstance(value, dict):
        return sum(_tensor_bytes(v) for v in value.values())
    return 0


def training_footprint(build: Callable[[], torch.nn.Module], channels: int, height: int,
                       width: int, depth: int | None = None) -> Footprint | None:
    """The footprint of the model ``build`` returns on images of ``channels x height x width``.

    With ``depth``, on volumes of ``channels x depth x height x width`` (a 3D model).

    None when the model cannot be built on the meta device (then nothing is checked).
    """
    try:
        with torch.device("meta"):
            model = build()
    except Exception:  # a model that needs real storage to build: leave the check to the allocation
        return None
    parameters = sum(p.numel() for p in model.parameters())
    state = STATE_COPIES * sum(p.numel() * p.element_size() for p in model.parameters())
    total = [0]

    def count(_module: torch.nn.Module, _inputs: Any, output: Any) -> None:
        total[0] += _tensor_bytes(output)

    leaves = [m for m in model.modules() if not list(m.children())]
    handles = [m.register_forward_hook(count) for m in leaves]
    spatial = (height, width) if depth is None else (depth, height, width)

    def measure(size: tuple[int, ...]) -> int:
        total[0] = 0
        image = torch.empty((1, channels, *size), device="meta")
        model(image)
        return total[0] + image.numel() * image.element_size()

    try:
        per_image: int | None = measure(spatial)
    except Exception:  # no meta kernel, a size the model rejects (it says so later), or too large to describe
        per_image = None
        reference = tuple(min(n, REFERENCE_SIZE) for n in spatial)
        if reference != spatial:  # activations grow with the image's area (volume): measured small, scaled up
            try:
                per_image = math.ceil(measure(reference) * math.prod(spatial) / math.prod(reference))
            except Exception:
                per_image = None
    finally:
        for handle in handles:
            handle.remove()
    return Footprint(parameters, state, per_image, channels * math.prod(spatial) * 4)


def check_training_fits(footprint: Footprint | None, batch_size: int, size: tuple[int, ...], device: Any,
                        model_name: str) -> None:
    """A :class:`ConfigError` saying what would fit when one training step clearly needs more than ``device`` has.

    ``size``: the image's height and width, or a 3D patch's three sizes.
    """
    if footprint is None:
        return
    free = available_bytes(device)
    needed = footprint.total(batch_size)
    if needed <= free:
        return
    where = "GPU" if getattr(device, "type", "cpu") == "cuda" else "host"
    shape = "x".join(str(n) for n in size)
    item = "patch" if len(size) == 3 else "image"
    parts = [f"one training step of model {model_name!r} needs at least {format_bytes(needed)}: "
             f"{format_bytes(footprint.state_bytes)} for {footprint.parameters:,} weights with their gradients and "
             "optimizer state"]
    if footprint.per_image:
        kind = "of activations" if footprint.activation_bytes_per_image else "for the float32 image alone"
        parts.append(f" and {format_bytes(footprint.per_image)} {kind} per {shape} {item} "
                     f"times a batch of {batch_size}")
    parts.append(f"; this machine has {format_bytes(free)} of {where} memory free.")
    room = free - footprint.state_bytes
    if room <= 0:
        parts.append(" The model alone does not fit: make it smaller (model.width, in_channels, dataset.context).")
    elif footprint.per_image:
        fits = room // footprint.per_image
        if fits >= 1:
            parts.append(f" At {shape}, --batch-size {int(fits)} or less would fit.")
        elif len(size) == 3:
            parts.append(f" Not even one {shape} patch fits; use a smaller train.patch_size or model.width.")
        else:
            side = int(math.sqrt(room / footprint.per_image * size[0] * size[1])) // 32 * 32
            parts.append(f" Not even one {shape} image fits" + (
                f"; try --image-size {side} or less." if side >= 32 else "; use a smaller model or image size."))
    raise ConfigError("".join(parts))
