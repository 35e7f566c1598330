"""Trained models as one predictor: a run, a checkpoint, an ONNX export, or an ensemble of them.

A :class:`Predictor` takes images at their own size and returns probabilities
at that size (one channel for binary models; per label for models with several
labels, :mod:`segkit.labels`). Each model gets the preprocessing it was trained
with: images are resized to its training ``image_size`` (when it has one)
exactly as validation resized them (OpenCV bilinear on 8-bit pixels, like
albumentations' ``Resize``), the logits go through a sigmoid (a softmax for
multiclass models), and the probabilities are resized back bilinearly. An ensemble averages the
probabilities of its models; ``tta`` also averages over flips.

A model trained with 2.5D context ``k`` (``[dataset] context``) takes the
neighbouring slices ``n - k .. n + k`` of a case stacked as channels; its
:class:`Member` records ``context`` and the caller stacks the slices (see
:func:`segkit.inference.predict.predict_files`). Where the models come from (run directories,
checkpoints, exports) is :mod:`segkit.inference.sources`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from segkit import memory
from segkit.errors import CheckpointError, DataError
from segkit.inference.sliding_window import SlidingWindowInferer
from segkit.labels import Labels
from segkit.memory import image_batch_bytes, require_memory
from segkit.runs.window import WindowSettings

__all__ = [
    "Member",
    "Predictor",
    "trained_flips",
    "resize_images",
]

#: Test-time augmentation: the flips averaged over (dims of an ``(N, C, H, W)`` tensor).
TTA_FLIPS: tuple[tuple[int, ...], ...] = ((), (-1,), (-2,), (-2, -1))

#: The flips of each augmentation preset's training (``light``: horizontal only; ``none``: none).
_TRAINED_FLIPS: dict[str, tuple[tuple[int, ...], ...]] = {"light": ((), (-1,)), "none": ((),), "heavy": TTA_FLIPS}


def trained_flips(member: Member) -> tuple[tuple[int, ...], ...]:
    """The flips test-time augmentation averages over for ``member``: the ones its training used.

    As nnU-Net mirrors at test time only along the axes it mirrored in training: a model that never
    saw a flipped image can read a flip as another anatomy, and where labels depend on orientation
    (anterior/posterior hippocampus, left/right organs) a flip it never saw swaps them (on the
    hippocampus recipe, trained with horizontal flips only, averaging over vertical flips too dropped
    the out-of-fold Dice from 0.85 to 0.61). ``light`` trains with horizontal flips, ``heavy`` with
    both; a model whose training is unknown (an ONNX export from before segkit recorded it) gets all four.
    """
    config = member.info.get("config") or {}
    augment = (config.get("train") or {}).get("augment", (member.info.get("metadata") or {}).get("augment"))
    return _TRAINED_FLIPS.get(str(augment), TTA_FLIPS)


@dataclass
class Member:
    """One model of a :class:`Predictor` and the preprocessing it was trained with.

    ``run`` maps images ``(N, C, h, w)`` float in [0, 1] (on ``device``) to logits ``(N, out_channels, h, w)``;
    ``labels`` says what the channels mean (:mod:`segkit.labels`; binary: one channel, a sigmoid).
    ``context`` is the model's 2.5D context ``k``: ``C`` is then ``2k + 1`` stacked slices.
    ``normalize`` is the per-case intensity rule its inputs went through (``none`` or ``case``,
    :mod:`segkit.data.intensity`); the caller applies it before the images reach :meth:`Predictor.probabilities`.
    ``window`` is the patch and overlap of a model trained on patches, which predicts whole images (2D) or
    volumes (3D) by sliding windows; None for a model of whole images. Left out, it is read from the
    checkpoint's ``info`` (:meth:`WindowSettings.from_record`).
    """

    name: str
    source: str
    image_size: int
    in_channels: int | None
    threshold: float
    run: Callable[[torch.Tensor], torch.Tensor]
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    info: dict[str, Any] = field(default_factory=dict)
    context: int = 0
    normalize: str = "none"
    labels: Labels = field(default_factory=Labels)
    window: WindowSettings | None = None

    def __post_init__(self) -> None:
        if self.window is None:
            self.window = WindowSettings.from_record(self.info.get("preprocessing"), self.info.get("config"), self.source)


def _on_byte_grid(images: torch.Tensor) -> bool:
    scaled = images * 255.0
    return bool((scaled - scaled.round()).abs().max() < 1e-3) if images.numel() else True


def _check_resize_fits(batch: int, channels: int, height: int, width: int) -> None:
    """A ConfigError before a batch of images is resized to ``height x width`` when it cannot fit in memory."""

    needed = image_batch_bytes(batch, channels, height, width)
    if needed <= memory.available_bytes():
        return
    one = image_batch_bytes(1, channels, height, width)
    fits = memory.available_bytes() // one
    require_memory(needed, f"resizing a batch of {batch} image(s) of {channels} channel(s) to the model's "
                   f"{height}x{width}", f"use --batch-size {fits} or less" if fits >= 1 else
                   "not even one image of that size fits: use a model trained at a smaller image size")


def resize_images(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize ``(N, C, H, W)`` images in [0, 1] to ``size`` (height, width) with OpenCV bilinear.

    Images that are 8-bit pixels divided by 255 (every image segkit reads) are
    resized as uint8, bit for bit like albumentations' ``Resize`` in validation;
    others are resized as float32. A batch whose resized copies cannot fit in memory is a
    :class:`~segkit.errors.ConfigError` before any is made.
    """
    import cv2

    height, width = size
    if tuple(images.shape[-2:]) == (height, width):
        return images
    _check_resize_fits(images.shape[0], images.shape[1], height, width)
    source = images.detach().cpu().float()
    as_bytes = _on_byte_grid(source)
    pixels = (source * 255.0).round().clamp(0, 255).to(torch.uint8) if as_bytes else source
    array = pixels.permute(0, 2, 3, 1).numpy()
    out = []
    for image in array:
        resized = cv2.resize(np.ascontiguousarray(image), (width, height), interpolation=cv2.INTER_LINEAR)
        out.append(resized.reshape(height, width, image.shape[2]))
    result = torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).contiguous()
    return result.float() / 255.0 if as_bytes else result


class Predictor:
    """Probabilities from one model or the average of several (per label for models with several labels).

    Args:
        members: the models; they must agree on the number of input channels and on the 2.5D context.
        tta: also average over the flips each model was trained with (:func:`trained_flips`).
        threshold: the probability at or above which a pixel is lesion; default the first model's.
        batch_size: largest batch given to a model at once (None: the whole input).
    """

    def __init__(self, members: Sequence[Member], tta: bool = False, threshold: float | None = None,
                 batch_size: int | None = None) -> None:
        if not members:
            raise CheckpointError("a predictor needs at least one model.")
        channels = {m.in_channels for m in members if m.in_channels is not None}
        if len(channels) > 1:
            listing = ", ".join(f"{m.source} ({m.in_channels})" for m in members)
            raise CheckpointError(f"the models of an ensemble must take the same number of input channels: {listing}.")
        contexts = {int(m.context) for m in members}
        if len(contexts) > 1:
            listing = ", ".join(f"{m.source} (context {m.context})" for m in members)
            raise CheckpointError("the models of an ensemble must stack the same neighbouring slices (2.5D "
                                  f"context), since they share one input: {listing}. Ensemble models trained with "
                                  "the same [dataset] context.")
        context = contexts.pop()
        rules = {m.normalize for m in members}
        if len(rules) > 1:
            listing = ", ".join(f"{m.source} (normalize {m.normalize!r})" for m in members)
            raise CheckpointError("the models of an ensemble must expect the same intensity normalisation, since "
                                  f"they share one input: {listing}. Ensemble models trained with the same "
                                  "[dataset] normalize.")
        self.normalize = rules.pop()
        kinds = {m.labels for m in members}
        if len(kinds) > 1:
            listing = ", ".join(f"{m.source} ({m.labels.mode}: {', '.join(m.labels.names)})" for m in members)
            raise CheckpointError(f"the models of an ensemble must predict the same labels in the same mode, since "
                                  f"their probabilities are averaged: {listing}.")
        self.labels = kinds.pop()
        channels_found = next(iter(channels), None)
        if context and channels_found is not None and channels_found % (2 * context + 1):
            raise CheckpointError(f"a model with 2.5D context {context} takes {channels_found} channels, which is "
                                  f"not {2 * context + 1} stacked slices of equal channels; its checkpoint is "
                                  "inconsistent.")
        self.context = context
        dims = {m.window.dims if m.window is not None else 2 for m in members}
        if len(dims) > 1:
            listing = ", ".join(f"{m.source} ({m.window.describe() if m.window else 'whole images'})" for m in members)
            raise CheckpointError("an ensemble must not mix 3D models (trained on 3D patches of volumes) with 2D "
                                  f"ones, since they predict different inputs: {listing}.")
        self.volumetric = dims == {3}
        """3D models: each predicts a whole volume by sliding windows (:mod:`segkit.inference.whole_volume`)."""
        self.members = list(members)
        self.tta = bool(tta)
        self.threshold = float(threshold if threshold is not None else members[0].threshold)
        self.batch_size = batch_size

    @property
    def in_channels(self) -> int | None:
        """Input channels every model takes (None when no model says)."""
        return next((m.in_channels for m in self.members if m.in_channels is not None), None)

    @property
    def slice_channels(self) -> int | None:
        """Channels of one slice: :attr:`in_channels` divided by the ``2k + 1`` stacked slices (None when unknown)."""
        channels = self.in_channels
        return None if channels is None else channels // (2 * self.context + 1)

    @property
    def sources(self) -> list[str]:
        return [m.source for m in self.members]

    def _member_probabilities(self, member: Member, images: torch.Tensor) -> torch.Tensor:
        if member.window is not None:
            return self._windowed_probabilities(member, images)
        height, width = images.shape[-2:]
        size = (member.image_size, member.image_size) if member.image_size else (height, width)
        x = resize_images(images, size).to(member.device)
        total = None
        flips = trained_flips(member) if self.tta else TTA_FLIPS[:1]
        for dims in flips:
            flipped = torch.flip(x, dims) if dims else x
            logits = member.run(flipped).float()
            probability = member.labels.probabilities(torch.flip(logits, dims) if dims else logits)
            total = probability if total is None else total + probability
        probability = total / len(flips)
        if tuple(probability.shape[-2:]) != (height, width):
            probability = F.interpolate(probability, size=(height, width), mode="bilinear", align_corners=False)
        return probability.cpu()

    def _windowed_probabilities(self, member: Member, images: torch.Tensor) -> torch.Tensor:
        """A model trained on 2D patches: each image at its own size, by sliding windows of the patch
        (mirrored over the flips the model trained with, with ``tta``)."""
        flips = trained_flips(member) if self.tta else TTA_FLIPS[:1]
        axes = sorted({2 + dim for dims in flips for dim in dims})  # (N, C, H, W) flip dims -> spatial axes 0, 1
        inferer = SlidingWindowInferer(member.window, batch_size=self.batch_size or 8, device=member.device,
                                       mirror_axes=tuple(axes))
        logits = inferer(member.run, images.to(member.device)).float()
        return member.labels.probabilities(logits).cpu()

    def probabilities(self, images: torch.Tensor) -> torch.Tensor:
        """Lesion probabilities at the input's size: one channel per output of the models (:attr:`labels`).

        Shape:
            - images: ``(N, C, H, W)`` float in [0, 1].
            - Output: ``(N, out_channels, H, W)`` float32 on the CPU; ``(N, 1, H, W)`` for binary models.
        """
        if images.ndim != 4:
            raise ValueError(f"images must have shape (N, C, H, W), got {tuple(images.shape)}")
        if self.in_channels is not None and images.shape[1] != self.in_channels:
            raise DataError(f"the model takes {self.in_channels}-channel images, got {images.shape[1]} channels.")
        step = self.batch_size or max(len(images), 1)
        outputs = []
        with torch.inference_mode():
            for start in range(0, len(images), step):
                chunk = images[start:start + step].float()
                total = sum(self._member_probabilities(m, chunk) for m in self.members)
                outputs.append(total / len(self.members))
        if not outputs:
            return torch.zeros((0, self.labels.out_channels, *images.shape[-2:]))
        return torch.cat(outputs)

    def __repr__(self) -> str:
        names = ", ".join(f"{m.name} ({m.source})" for m in self.members)
        context = f", context={self.context}" if self.context else ""
        normalize = f", normalize={self.normalize!r}" if self.normalize != "none" else ""
        return f"Predictor([{names}], tta={self.tta}, threshold={self.threshold}{context}{normalize})"


_MOVED = {"load_predictor", "load_member", "is_source", "SOURCE_SUFFIXES", "checkpoint_context", "checkpoint_normalize"}


def __getattr__(name: str) -> Any:
    """The loading functions moved to :mod:`segkit.inference.sources`; the old names still work, with a warning."""
    if name not in _MOVED:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib
    import warnings

    warnings.warn(f"segkit.inference.predictor.{name} moved to segkit.inference.sources.{name}", DeprecationWarning,
                  stacklevel=2)
    return getattr(importlib.import_module("segkit.inference.sources"), name)
