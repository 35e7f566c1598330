"""Missing-sequence augmentation (``train.modality_dropout``): train on inputs that lack a sequence.

Multi-sequence MRI often lacks a sequence for some patients. The LGG set keeps three channels
per slice (pre-contrast, FLAIR, post-contrast) and, where a patient lacks the pre- or
post-contrast sequence, stores FLAIR in its place (TCGA_DU_7013 has FLAIR in all three). A
model trained only on complete inputs finds nothing in such a patient: the CPU recipe's fold
models score 0.60 and 0.69 per-patient Dice on their own validation patients, and 0.02 and 0
when those patients' pre- and post-contrast channels are replaced by FLAIR.

While training, :class:`ModalityDropout` replaces each droppable channel of each sample,
with probability ``p``, by the dataset's fill channel of the same slice (its
``missing_channel_fill``: 1, FLAIR, for LGG) or, for datasets without one, by zeros. The fill
channel itself is never dropped, and with zeros at least one channel stays. With 2.5D context
the decision holds for every stacked slice of the sample, as a missing sequence is missing for
the whole patient. Both loader paths use it: per item before albumentations
(:class:`WithModalityDropout`) and per batch on the device before the batched augmentation.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from segkit.errors import ConfigError

__all__ = ["ModalityDropout", "WithModalityDropout", "modality_dropout_for", "SEED_SALT"]

SEED_SALT = 0x6D0DA1
"""Mixed into an augmentation seed (an item's, or the run's for the device path) so the dropout draw is
independent of the augmentation's own."""


class ModalityDropout:
    """Drop input sequences at random: replace channels by the fill channel, or by zeros.

    Args:
        p: probability that a sample loses each droppable channel, in [0, 1].
        slice_channels: channels of one slice (``C``); an item stacks ``C * (2k + 1)``.
        fill: the channel (of each slice) that stands in for a missing one, or None for zeros.

    Shape:
        :meth:`draw`: ``(N, C)`` bool, True where a channel is dropped.
        :meth:`apply`: images ``(N, C * (2k + 1), H, W)``; :meth:`apply_array`: one image ``(H, W, C * (2k + 1))``.
    """

    def __init__(self, p: float, slice_channels: int, fill: int | None = None) -> None:
        if not 0 <= p <= 1:
            raise ConfigError(f"train.modality_dropout must be between 0 and 1, got {p}")
        if slice_channels < 2:
            raise ConfigError(
                f"train.modality_dropout drops some of a slice's channels (its MRI sequences), but this dataset "
                f"has {slice_channels} channel per slice. Set train.modality_dropout = 0 for single-channel data.")
        if fill is not None and not 0 <= fill < slice_channels:
            raise ConfigError(f"the dataset's fill channel {fill} is not one of its {slice_channels} channels per slice")
        self.p, self.slice_channels, self.fill = float(p), int(slice_channels), fill

    def draw(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """Which channels each of ``n`` samples loses: ``(n, C)`` bool, from ``generator``."""
        drops = torch.rand((n, self.slice_channels), generator=generator) < self.p
        if self.fill is not None:
            drops[:, self.fill] = False
        else:
            drops[drops.all(dim=1)] = False  # zeros everywhere would leave nothing to segment
        return drops

    def _stacked_slices(self, channels: int) -> int:
        if channels % self.slice_channels:
            raise ValueError(f"{channels} channels are not whole slices of {self.slice_channels} channels")
        return channels // self.slice_channels

    def apply(self, images: torch.Tensor, drops: torch.Tensor) -> torch.Tensor:
        """``images`` with the channels ``drops`` names replaced, in every stacked slice (in place)."""
        slices = self._stacked_slices(images.shape[1])
        drops = drops.to(images.device)
        for channel in range(self.slice_channels):
            rows = drops[:, channel].nonzero().flatten()
            if not len(rows):
                continue
            for s in range(slices):
                target = s * self.slice_channels + channel
                if self.fill is None:
                    images[rows, target] = 0
                else:
                    images[rows, target] = images[rows, s * self.slice_channels + self.fill]
        return images

    def apply_array(self, image: np.ndarray, drop: torch.Tensor | np.ndarray) -> np.ndarray:
        """One ``(H, W, C * (2k + 1))`` image with the channels ``drop`` (``(C,)`` bool) names replaced (a copy)."""
        drop = torch.as_tensor(np.asarray(drop, dtype=bool))
        if not drop.any():
            return image
        out = np.array(image, copy=True)
        self.apply(torch.from_numpy(out).permute(2, 0, 1)[None], drop[None])  # writes through to ``out``
        return out

    def __repr__(self) -> str:
        fill = "zeros" if self.fill is None else f"channel {self.fill}"
        return f"ModalityDropout(p={self.p}, slice_channels={self.slice_channels}, fill={fill})"


class WithModalityDropout:
    """A per-item transform: drop sequences (seeded by the item's augmentation seed), then run ``transform``.

    Called like an albumentations pipeline, ``transform(image=, mask=) -> dict``; the loader's
    ``set_random_seed`` reaches both parts, so an item's draw depends only on its seed.
    """

    def __init__(self, dropout: ModalityDropout, transform: Any | None) -> None:
        self.dropout, self.transform = dropout, transform
        self._seed: int | None = None

    def set_random_seed(self, seed: int) -> None:
        self._seed = int(seed)
        if self.transform is not None and hasattr(self.transform, "set_random_seed"):
            self.transform.set_random_seed(seed)

    def __call__(self, image: np.ndarray, mask: np.ndarray) -> dict[str, Any]:
        seed = self._seed if self._seed is not None else int(torch.randint(0, 2**31 - 1, ()).item())
        generator = torch.Generator().manual_seed((seed ^ SEED_SALT) % (2**63))
        image = self.dropout.apply_array(image, self.dropout.draw(1, generator)[0])
        if self.transform is None:
            return {"image": image, "mask": mask}
        return self.transform(image=image, mask=mask)


def modality_dropout_for(p: float, dataset: Any) -> ModalityDropout | None:
    """The run's :class:`ModalityDropout` for ``dataset`` (its channels per slice and fill channel), or None when ``p`` is 0."""
    if not p:
        return None
    slice_channels = getattr(dataset, "slice_channels", None) or getattr(dataset, "in_channels", 1)
    return ModalityDropout(p, int(slice_channels), getattr(dataset, "missing_channel_fill", None))
