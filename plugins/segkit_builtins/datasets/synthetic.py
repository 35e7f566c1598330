"""Procedural MRI-like slices with lesion blobs: a dataset that needs no files.

Each slice shows a head (a bright scalp ring around a textured brain with two
dark ventricles) in three channels of different contrast, like the LGG data's
pre-contrast, FLAIR and post-contrast. About ``lesion_fraction`` of the slices
hold one irregular lesion: bright in FLAIR, a little dark in pre-contrast,
sometimes ring-enhancing after contrast. Faint FLAIR spots that are not lesions
keep the task from being a plain threshold.

Item ``i`` is drawn from its own generator seeded by ``(seed, i)``, and the head
of its case from one seeded by ``(seed, case)``, so any process regenerates the
same pixels. Consecutive items form cases of ``slices_per_case`` slices.

With ``classes = 3`` or ``4`` each lesion is one of two or three types, told apart by
how it looks after contrast, and its mask holds the type's label value (1, 2 or 3):
``non_enhancing`` (bright in FLAIR only), ``enhancing`` (bright throughout after contrast
and dark before it), ``ring_enhancing`` (a bright rim after contrast, the hardest to tell).
"""

from __future__ import annotations

import cv2
import numpy as np
import pandas as pd

from segkit.data import SegmentationDataset
from segkit.errors import ConfigError

__all__ = ["SyntheticDataset"]

_CASE_SALT = 7919  # separates case generators from item generators
# Per channel (pre-contrast, FLAIR, post-contrast): brain, scalp, ventricle levels.
_BRAIN = np.array([95.0, 85.0, 100.0])
_SCALP = np.array([150.0, 140.0, 160.0])
_VENTRICLE = np.array([45.0, 30.0, 50.0])
_NOISE_SIGMA = 5.0
LESION_TYPES = ("non_enhancing", "enhancing", "ring_enhancing")
"""The lesion types of the multi-class synthetic data, label values 1, 2, 3."""


#: Bytes the generation of one slice takes per pixel (float32 fields, coordinates, image and mask).
_WORK_BYTES_PER_PIXEL = 64
#: Bytes of one index row (item, case, slice, has_lesion) and of one cached pixel (3 uint8 channels, a mask).
_ROW_BYTES, _CACHED_BYTES_PER_PIXEL = 300, 4


def _check_fits(count: int, size: int, cache: bool) -> None:
    """A :class:`ConfigError` when ``count`` slices of ``size`` x ``size`` clearly cannot be held in memory."""
    from segkit.memory import available_bytes, format_bytes

    free = available_bytes()
    pixels = size * size
    if pixels * _WORK_BYTES_PER_PIXEL > free:
        largest = int((free / _WORK_BYTES_PER_PIXEL) ** 0.5)
        raise ConfigError(f"synthetic dataset: one {size}x{size} slice needs about "
                          f"{format_bytes(pixels * _WORK_BYTES_PER_PIXEL)} to generate and this machine has "
                          f"{format_bytes(free)} free; use size {largest} or less (the default is 48).")
    per_item = _ROW_BYTES + (pixels * _CACHED_BYTES_PER_PIXEL if cache else 0)
    if count * per_item > free:
        raise ConfigError(f"synthetic dataset: {count} slices of {size}x{size} need at least "
                          f"{format_bytes(count * per_item)}" + (" cached" if cache else "") + f" and this machine "
                          f"has {format_bytes(free)} free; use count {free // per_item} or less"
                          + (" (or cache = false)." if cache else "."))


def _smooth_field(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """A smooth random field in about [-1, 1]: coarse noise upsampled bicubically."""
    coarse = rng.standard_normal((cells, cells)).astype(np.float32)
    return np.clip(cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC), -2.5, 2.5) / 2.5


def _ellipse(x: np.ndarray, y: np.ndarray, cx: float, cy: float, ax: float, ay: float,
             angle: float) -> np.ndarray:
    """Squared normalised distance to an ellipse centre: < 1 inside."""
    cos, sin = np.cos(angle), np.sin(angle)
    dx, dy = x - cx, y - cy
    u, v = cos * dx + sin * dy, -sin * dx + cos * dy
    return (u / ax) ** 2 + (v / ay) ** 2


def _blob(rng: np.random.Generator, x: np.ndarray, y: np.ndarray, cx: float, cy: float,
          radius: float, pixel: float) -> tuple[np.ndarray, np.ndarray]:
    """An irregular blob: (inside mask, soft profile rising from 0 to 1 over about a pixel)."""
    theta = np.arctan2(y - cy, x - cx)
    edge = np.ones_like(theta)
    for k in range(2, 6):
        edge += rng.uniform(0.0, 0.22 / (k - 1) ** 0.5) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    edge *= radius
    dist = np.hypot(x - cx, y - cy)
    return dist < edge, np.clip((edge - dist) / pixel + 0.5, 0.0, 1.0)


class SyntheticDataset(SegmentationDataset):
    """Deterministic MRI-like 3-channel ``size`` x ``size`` slices, about ``lesion_fraction`` with lesions.

    Args:
        count: number of slices.
        size: height and width in pixels (at least 16). The default, 48, keeps the default
            run (the tutorial U-Net, 10 epochs) to a few minutes on 2 CPU cores.
        seed: changes every slice; the same seed gives the same pixels.
        slices_per_case: consecutive slices share one synthetic head (a case).
        lesion_fraction: the probability that a slice holds a lesion.
        cache: keep generated slices in memory.
        context: 2.5D context ``k``: stack the ``k`` neighbouring slices of the same case on each
            side as extra channels (``3 * (2k + 1)``), the edge slice repeated past a case's ends.
        normalize: ``"case"`` rescales each channel of each case so its 99th percentile of
            non-zero pixels is 204, putting every case on one intensity scale; ``"none"``
            (default) keeps the stored pixels. See :mod:`segkit.data.intensity`.
        classes: label values in the masks, background included: 2 (default) is binary
            (lesion or not); 3 or 4 give each lesion one of the first two or three
            :data:`LESION_TYPES`, its label value. The binary data's pixels do not change.
    """

    verify_items = False  # generated in memory: the data check before training has nothing to read

    channel_names = ("pre-contrast", "FLAIR", "post-contrast")

    def __init__(self, count: int = 256, size: int = 48, seed: int = 0, slices_per_case: int = 8,
                 lesion_fraction: float = 0.5, cache: bool = True, context: int = 0,
                 normalize: str = "none", classes: int = 2) -> None:
        if isinstance(classes, bool) or not isinstance(classes, int) or not 2 <= classes <= 1 + len(LESION_TYPES):
            raise ConfigError(f"synthetic dataset: classes must be 2 (binary), 3 or 4 (two or three lesion types, "
                              f"background included), got {classes!r}")
        self.classes = classes
        for name, value, least in (("count", count, 1), ("size", size, 16), ("seed", seed, 0),
                                   ("slices_per_case", slices_per_case, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ConfigError(f"synthetic dataset: {name} must be an integer >= {least}, got {value!r}")
        if isinstance(lesion_fraction, bool) or not isinstance(lesion_fraction, (int, float)) \
                or not 0 <= lesion_fraction <= 1:
            raise ConfigError(f"synthetic dataset: lesion_fraction must be in [0, 1], got {lesion_fraction!r}")
        _check_fits(count, size, cache)
        self.size, self.seed, self.slices_per_case = size, seed, slices_per_case
        self.lesion_fraction = float(lesion_fraction)
        has_lesion = [bool(self._item_rng(i).random() < self.lesion_fraction) for i in range(count)]
        width = len(str(count - 1))
        index = pd.DataFrame({
            "item": [f"synthetic_{i:0{width}d}" for i in range(count)],
            "case": [f"case_{i // slices_per_case:0{width}d}" for i in range(count)],
            "slice": [i % slices_per_case for i in range(count)],
            "has_lesion": has_lesion,
        })
        labels = None if classes == 2 else ("background", *LESION_TYPES[: classes - 1])
        super().__init__(index, in_channels=3, cache=cache, context=context, normalize=normalize, labels=labels)

    def _item_rng(self, i: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, i])

    def read_raw(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        size, spc = self.size, self.slices_per_case
        case, position = divmod(i, spc)
        head_rng = np.random.default_rng([self.seed, case, _CASE_SALT])
        rng = self._item_rng(i)
        with_lesion = rng.random() < self.lesion_fraction  # the draw that made has_lesion

        coords = (np.arange(size, dtype=np.float32) + 0.5) / size * 2 - 1
        x, y = np.meshgrid(coords, coords)
        pixel = 2.0 / size
        # The case's head; slices away from the middle are smaller.
        cx, cy = head_rng.uniform(-0.06, 0.06, 2)
        ax, ay = head_rng.uniform(0.66, 0.8), head_rng.uniform(0.78, 0.9)
        angle = head_rng.uniform(-0.3, 0.3)
        middle = (spc - 1) / 2
        shrink = 1.0 - 0.25 * (abs(position - middle) / middle) ** 2 if spc > 1 else 1.0
        ax, ay = ax * shrink, ay * shrink
        head = _ellipse(x, y, cx, cy, ax, ay, angle) < 1
        brain = _ellipse(x, y, cx, cy, ax * 0.86, ay * 0.88, angle) < 1
        ventricles = np.zeros_like(brain)
        for side in (-1, 1):
            vx = cx + side * 0.11 * ax * np.cos(angle)
            vy = cy + side * 0.11 * ax * np.sin(angle) - 0.05
            ventricles |= _ellipse(x, y, vx, vy, 0.06 * shrink, 0.2 * shrink, angle + side * 0.25) < 1

        image = np.zeros((size, size, 3), np.float32)
        tissue = _smooth_field(head_rng, size, 6) + 0.6 * _smooth_field(rng, size, 12)
        mix = head_rng.uniform(0.6, 1.0, 3) * np.array([14.0, 18.0, 14.0])
        image[brain] = _BRAIN + mix * tissue[brain, None]
        image[head & ~brain] = _SCALP * (1 + 0.1 * tissue[head & ~brain, None])
        image[ventricles & brain] = _VENTRICLE

        for _ in range(rng.integers(0, 3)):  # faint FLAIR spots that are not lesions
            sx, sy = cx + rng.uniform(-0.5, 0.5) * ax, cy + rng.uniform(-0.5, 0.5) * ay
            _, soft = _blob(rng, x, y, sx, sy, rng.uniform(0.03, 0.08), pixel)
            image[:, :, 1] += rng.uniform(10, 25) * soft * brain

        mask = np.zeros((size, size), np.uint8)
        if with_lesion:
            r, phi = np.sqrt(rng.uniform(0, 0.45)), rng.uniform(0, 2 * np.pi)
            lx, ly = cx + r * ax * 0.86 * np.cos(phi), cy + r * ay * 0.88 * np.sin(phi)
            inside, soft = _blob(rng, x, y, lx, ly, rng.uniform(0.1, 0.28), pixel)
            inside &= brain
            if not inside.any():  # a tiny image: keep at least the centre pixel
                row, col = np.unravel_index(np.argmin(np.hypot(x - lx, y - ly) + 9 * ~brain), x.shape)
                inside[row, col] = True
            soft = np.maximum(soft, inside) * brain
            kind = int(rng.integers(1, self.classes)) if self.classes > 2 else 0
            mask[inside] = kind or 1
            image[:, :, 1] += rng.uniform(35, 90) * soft * (0.85 + 0.15 * tissue)
            image[:, :, 0] -= rng.uniform(5, 20) * soft
            if kind:  # the type decides the contrast enhancement
                if kind == 2:
                    image[:, :, 2] += rng.uniform(40, 70) * soft
                    image[:, :, 0] -= rng.uniform(10, 20) * soft
                elif kind == 3:
                    image[:, :, 2] += rng.uniform(40, 70) * np.clip(soft * (1 - soft) * 4, 0, 1)
                else:
                    image[:, :, 2] += rng.uniform(0, 8) * soft
            elif rng.random() < 0.35:  # ring enhancement after contrast
                ring = np.clip(soft * (1 - soft) * 4, 0, 1)
                image[:, :, 2] += rng.uniform(30, 60) * ring
            else:
                image[:, :, 2] += rng.uniform(0, 12) * soft

        bias = 1 + 0.12 * _smooth_field(head_rng, size, 3)
        image = image * bias[:, :, None] + rng.normal(0, _NOISE_SIGMA, image.shape)
        image = np.clip(np.rint(image), 0, 255).astype(np.uint8)
        return image, mask
