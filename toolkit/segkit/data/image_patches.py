"""2D patches of images at their own size: the training crop of a run with a 2D ``train.patch_size``.

A run with ``train.patch_size = [h, w]`` trains a 2D model on random ``h x w`` patches of its images
as stored (no resizing, so thin and small structures keep their pixels; images may differ in size),
and validation, ``segkit evaluate``, ``predict`` and ``export`` slide windows of that size over
whole images (:mod:`segkit.inference.sliding_window`). :class:`WithPatchCrop` is the crop, the first
step of the training transform: with probability ``foreground_fraction`` the patch is placed on a
pixel of a foreground label present in the image (each label drawn equally often, as nnU-Net
oversamples), otherwise anywhere; an image smaller than the patch is padded, centred, with zeros
(background in the mask). The draw depends only on the item's augmentation seed, so resumed runs,
workers and processes see the same patches, as for every other augmentation.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from segkit.data.patches import PatchSampler

__all__ = ["WithPatchCrop", "foreground_pixels"]

SEED_SALT = 0x9A7C4
"""Mixed into an item's seed so the crop's draws differ from the augmentation's."""


def foreground_pixels(mask: np.ndarray, ignore: Sequence[int] = ()) -> dict[int, np.ndarray]:
    """Pixel coordinates ``(n, 2)`` of every foreground label present in ``mask`` (``H x W`` label values).

    Label 0 (background) and the values in ``ignore`` are left out.
    """
    values = [int(v) for v in np.unique(mask) if v != 0 and int(v) not in ignore]
    return {value: np.argwhere(mask == value) for value in values}


class WithPatchCrop:
    """A per-item transform: a random patch of the image and its mask (seeded by the item's augmentation seed),
    then ``transform`` (an albumentations pipeline, or None).

    Called like an albumentations pipeline, ``transform(image=, mask=) -> dict``; the loader's
    ``set_random_seed`` reaches both parts.

    Shape:
        image ``(H, W, C)`` (any dtype, kept), mask ``(H, W)`` -> image ``(h, w, C)``, mask ``(h, w)`` before
        ``transform``.
    """

    def __init__(self, patch_size: Sequence[int], foreground_fraction: float, transform: Any | None = None,
                 ignore: Sequence[int] = ()) -> None:
        self.sampler = PatchSampler(patch_size, foreground_fraction, dims=2)
        self.transform, self.ignore = transform, tuple(int(v) for v in ignore)
        self._seed: int | None = None

    def set_random_seed(self, seed: int) -> None:
        self._seed = int(seed)
        if self.transform is not None and hasattr(self.transform, "set_random_seed"):
            self.transform.set_random_seed(seed)

    def crop(self, image: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """One patch of ``image`` (H, W, C) and ``mask`` (H, W), drawn with ``rng``."""
        planar = np.moveaxis(image if image.ndim == 3 else image[:, :, None], 2, 0)  # (C, H, W), a view
        patch, label = self.sampler.sample(planar, np.asarray(mask), foreground_pixels(mask, self.ignore), rng)
        return np.ascontiguousarray(np.moveaxis(patch, 0, 2)), label

    def __call__(self, image: np.ndarray, mask: np.ndarray) -> dict[str, Any]:
        seed = self._seed if self._seed is not None else int(np.random.default_rng().integers(2**31))
        image, mask = self.crop(image, mask, np.random.default_rng([seed, SEED_SALT]))
        if self.transform is None:
            return {"image": image, "mask": mask}
        return self.transform(image=image, mask=mask)
