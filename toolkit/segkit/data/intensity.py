"""Per-case intensity normalisation of 8-bit scans.

MRI has no absolute intensity scale: the same tissue comes out twice as bright on
one scanner (or with one protocol) as on another. In the LGG set one patient's
FLAIR channel peaks at a third of the others', and a model trained on the rest
finds no tumour in it at all. ``normalize = "case"`` rescales every case (patient)
on its own, each channel separately, as Buda et al. (2019) and nnU-Net (per-image
z-score for MRI) do, so every case reaches the model on one scale.

The rule: the 99th percentile of a channel's non-zero pixels over all slices of the
case becomes :data:`TARGET` (204, 80% of 255); pixels are multiplied by one factor,
so zero (background, skull-stripped areas) stays zero and the result stays uint8,
saturating at 255 (1.25 times the percentile). A channel with no non-zero pixel is
left as it is. The factor depends on the whole case, so a model trained this way
needs every slice of a case at prediction time (``segkit predict`` groups the files
of a case by name; a lone image is its own case).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from segkit.errors import ConfigError

__all__ = ["NORMALIZE", "TARGET", "PERCENTILE", "check_normalize", "case_factors", "apply_factors"]

NORMALIZE: tuple[str, ...] = ("none", "case")
"""``none``: pixels as stored; ``case``: each case rescaled per channel (see the module docstring)."""
TARGET = 204.0
"""The value the case's 99th percentile of non-zero pixels is mapped to."""
PERCENTILE = 99.0


def check_normalize(value: Any) -> str:
    """``value`` when it is one of :data:`NORMALIZE`; a :class:`ConfigError` that lists them otherwise."""
    if not isinstance(value, str) or value not in NORMALIZE:
        raise ConfigError(f"normalize must be one of {', '.join(repr(n) for n in NORMALIZE)} ('case' rescales each "
                          f"case's channels so their {PERCENTILE:g}th percentile of non-zero pixels is {TARGET:g}; "
                          f"'none' keeps the stored pixels), got {value!r}")
    return value


def case_factors(images: Iterable[np.ndarray]) -> np.ndarray:
    """The per-channel factors that normalise a case: ``TARGET / percentile`` of its non-zero pixels.

    ``images`` are the case's slices, ``(H, W, C)`` (or ``(H, W)``) uint8, all with the same
    ``C``. Returns float64 ``(C,)``; a channel with no non-zero pixel gets 1.
    """
    per_channel: list[list[np.ndarray]] | None = None
    for image in images:
        image = image[:, :, None] if image.ndim == 2 else image
        if per_channel is None:
            per_channel = [[] for _ in range(image.shape[2])]
        if image.shape[2] != len(per_channel):
            raise ValueError(f"the slices of a case have {len(per_channel)} and {image.shape[2]} channels")
        for c in range(image.shape[2]):
            plane = image[:, :, c]
            per_channel[c].append(plane[plane > 0])
    if per_channel is None:
        raise ValueError("a case needs at least one slice to be normalised")
    factors = np.ones(len(per_channel), dtype=np.float64)
    for c, parts in enumerate(per_channel):
        values = np.concatenate(parts)
        if values.size:
            top = float(np.percentile(values, PERCENTILE))
            if top > 0:
                factors[c] = TARGET / top
    return factors


def apply_factors(image: np.ndarray, factors: np.ndarray) -> np.ndarray:
    """``image`` (``(H, W, C)`` or ``(H, W)`` uint8) times ``factors`` per channel, rounded and clipped to uint8."""
    scaled = image.astype(np.float32) * (factors.astype(np.float32) if image.ndim == 3 else np.float32(factors[0]))
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
