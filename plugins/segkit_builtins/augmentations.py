"""Built-in batch transforms for ``train.transforms`` (the ``augmentation`` kind): mirroring and Gaussian noise.

Each works on 2D and 3D batches on the training device and draws every random number from the
step's generator (:mod:`segkit.data.batch_transforms`).
"""

from __future__ import annotations

import torch

from segkit.data.batch_transforms import BatchTransform
from segkit.errors import ConfigError

__all__ = ["Mirror", "GaussianNoise"]


def _probability(name: str, p: float) -> float:
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p <= 1.0:
        raise ConfigError(f"augmentation {name}: p must be a probability in [0, 1], got {p!r}")
    return float(p)


class Mirror(BatchTransform):
    """Flip each sample along each spatial axis with probability ``p`` (images and labels alike).

    ``axes`` lists the spatial axes that may flip (0 is the first after the channels: rows in 2D,
    slices in 3D); empty means all of them. Mirroring is what nnU-Net trains with on every axis; the
    ``light`` preset of 2D runs flips horizontally only.
    """

    def __init__(self, p: float = 0.5, axes: list[int] | None = None) -> None:
        self.p = _probability("mirror", p)
        self.axes = list(axes or [])
        if any(isinstance(a, bool) or not isinstance(a, int) or not 0 <= a <= 2 for a in self.axes):
            raise ConfigError(f"augmentation mirror: axes are spatial axes 0, 1 (and 2 in 3D), got {axes!r}")

    def __call__(self, images: torch.Tensor, labels: torch.Tensor,
                 generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        spatial = images.ndim - 2
        axes = self.axes or list(range(spatial))
        if max(axes) >= spatial:
            raise ConfigError(f"augmentation mirror: axis {max(axes)} does not exist in {spatial}D batches")
        flips = torch.rand(images.shape[0], len(axes), generator=generator) < self.p
        if not flips.any():
            return images, labels
        images, labels = images.clone(), labels.clone()
        for column, axis in enumerate(axes):
            chosen = flips[:, column].nonzero()[:, 0].to(images.device)
            if len(chosen):
                images[chosen] = images[chosen].flip(axis + 2)  # (samples, channels, *spatial)
                labels[chosen] = labels[chosen].flip(axis + 2)
        return images, labels


class GaussianNoise(BatchTransform):
    """Add Gaussian noise of standard deviation ``std`` (in the images' normalised units) to each sample with
    probability ``p``; labels are unchanged."""

    def __init__(self, p: float = 0.1, std: float = 0.1) -> None:
        self.p = _probability("gaussian_noise", p)
        if isinstance(std, bool) or not isinstance(std, (int, float)) or not 0.0 <= std < 10.0:
            raise ConfigError(f"augmentation gaussian_noise: std must be in [0, 10), got {std!r}")
        self.std = float(std)

    def __call__(self, images: torch.Tensor, labels: torch.Tensor,
                 generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        chosen = (torch.rand(images.shape[0], generator=generator) < self.p).nonzero()[:, 0]
        noise = torch.randn((len(chosen), *images.shape[1:]), generator=generator).to(images.device, images.dtype)
        if not len(chosen):
            return images, labels
        images = images.clone()
        images[chosen.to(images.device)] += self.std * noise
        return images, labels
