"""A 3D augmentation of this plugin: cutout (``example_cutout3d``).

With probability ``p`` per sample, one box of ``fraction`` of the patch's size along each axis, at a
random place, is set to ``fill`` in every image channel (labels are left as they are), so the model
learns to use context around a hidden region. Registered in components.toml; a run names it in
``train.transforms``.
"""

from __future__ import annotations

import torch

from segkit.data.batch_transforms import BatchTransform
from segkit.errors import ConfigError


class Cutout3D(BatchTransform):
    """Blank one random box per chosen sample of a 3D batch ``(N, C, D, H, W)``."""

    dims = (3,)

    def __init__(self, p: float = 0.3, fraction: float = 0.25, fill: float = 0.0) -> None:
        if not 0.0 <= p <= 1.0 or not 0.0 < fraction <= 1.0:
            raise ConfigError(f"example_cutout3d needs 0 <= p <= 1 and 0 < fraction <= 1, got p={p}, fraction={fraction}")
        self.p, self.fraction, self.fill = float(p), float(fraction), float(fill)

    def __call__(self, images: torch.Tensor, labels: torch.Tensor,
                 generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        n, size = images.shape[0], images.shape[2:]
        chosen = torch.rand(n, generator=generator) < self.p
        starts = torch.rand(n, 3, generator=generator)  # drawn for every sample: the same amount each step
        if not chosen.any():
            return images, labels
        images = images.clone()
        box = [max(1, round(extent * self.fraction)) for extent in size]
        for sample in chosen.nonzero()[:, 0].tolist():
            corner = [int(starts[sample, k] * (size[k] - box[k] + 1)) for k in range(3)]
            images[sample, :, corner[0]:corner[0] + box[0], corner[1]:corner[1] + box[1],
                   corner[2]:corner[2] + box[2]] = self.fill
        return images, labels
