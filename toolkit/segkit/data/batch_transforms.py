"""Transforms of your own on training batches: the ``augmentation`` kind that ``train.transforms`` names.

An augmentation component builds a :class:`BatchTransform`: a callable on a training batch already
on the training device, ``transform(images, labels, generator) -> (images, labels)`` with images
``(N, C, H, W)`` (2D) or ``(N, C, D, H, W)`` (3D) float and labels ``(N, 1, ...)`` label values
(:data:`segkit.labels.IGNORE` marks pixels that neither train nor score), returned with their shapes,
dtypes and device. Every random number comes from ``generator`` (a CPU :class:`torch.Generator`
seeded from the run's seed, epoch, step and rank), so a resumed run transforms the same way.
``dims`` says which batches it takes (2, 3 or both). The preset (``train.augment``) runs first;
the transforms follow in the order ``train.transforms`` lists them::

    [train]
    augment = "light"
    transforms = ["mirror", {name = "gaussian_noise", p = 0.2, std = 0.05}]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from segkit.config import transform_specs
from segkit.data.batch_augment import augment_generator
from segkit.errors import ConfigError

__all__ = ["BatchTransform", "NamedTransform", "build_transforms", "apply_transforms",
           "transform_generator"]


class BatchTransform:
    """A transform of training batches; subclasses implement :meth:`__call__` and may narrow :attr:`dims`."""

    #: The spatial dimensions of the batches it takes: 2 (images), 3 (volumes) or both.
    dims: tuple[int, ...] = (2, 3)

    def __call__(self, images: torch.Tensor, labels: torch.Tensor,
                 generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError(f"{type(self).__name__} does not transform batches")


@dataclass(frozen=True)
class NamedTransform:
    """A built transform and the registered name it came from (for messages)."""

    name: str
    transform: BatchTransform


def build_transforms(value: Any, registry: Any, dims: int | None = None) -> list[NamedTransform]:
    """The transforms ``train.transforms`` names, built through the registry; with ``dims``, each must take
    batches of that many spatial dimensions (a ConfigError names the one that does not)."""
    built = []
    for name, params in transform_specs(value):
        transform = registry.build("augmentation", name, **params)
        if not callable(transform):
            raise ConfigError(f"augmentation {name!r} built {type(transform).__name__}, which is not callable; an "
                              "augmentation builds a segkit.data.batch_transforms.BatchTransform")
        takes = tuple(getattr(transform, "dims", (2, 3)))
        if dims is not None and dims not in takes:
            raise ConfigError(f"augmentation {name!r} transforms {' and '.join(f'{d}D' for d in takes)} batches, "
                              f"and this run trains on {dims}D ones; remove it from train.transforms")
        built.append(NamedTransform(name, transform))
    return built


def apply_transforms(transforms: Sequence[NamedTransform], images: torch.Tensor, labels: torch.Tensor,
                     generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``transforms`` in order on one batch; a transform that changes a shape, dtype or device is a ConfigError."""
    squeeze = labels.ndim == images.ndim - 1
    labels = labels[:, None] if squeeze else labels
    for named in transforms:
        out_images, out_labels = named.transform(images, labels, generator)
        for what, before, after in (("images", images, out_images), ("labels", labels, out_labels)):
            if (after.shape, after.dtype, after.device) != (before.shape, before.dtype, before.device):
                raise ConfigError(f"augmentation {named.name!r} returned {what} {after.dtype} {tuple(after.shape)} on "
                                  f"{after.device} for {before.dtype} {tuple(before.shape)} on {before.device}; a "
                                  "transform keeps shapes, dtypes and device")
        images, labels = out_images, out_labels
    return images, (labels[:, 0] if squeeze else labels)


def transform_generator(seed: int, epoch: int, step: int, rank: int = 0) -> torch.Generator:
    """The CPU generator of the transforms of one step: from (seed, epoch, step, rank) alone, a stream apart
    from the preset's, so adding a transform leaves the preset's draws as they were."""
    return augment_generator(seed, epoch, step, rank, stream="segkit.batch_transforms")
