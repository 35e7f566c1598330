"""Pictures of predicted labels: one colour per label, and a legend that names them.

``segkit predict --overlay`` on a model with several labels writes
:func:`labelled_overlay`: the image with each label's region tinted and outlined in
its colour, above a legend strip (so the legend never hides the image).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["LABEL_COLOURS", "label_colour", "labelled_overlay", "outline"]

LABEL_COLOURS: tuple[tuple[float, float, float], ...] = (
    (0.95, 0.10, 0.10),  # red
    (0.10, 0.60, 0.95),  # blue
    (0.95, 0.80, 0.10),  # yellow
    (0.10, 0.85, 0.30),  # green
    (0.85, 0.20, 0.85),  # magenta
    (0.10, 0.90, 0.90),  # cyan
    (0.95, 0.55, 0.10),  # orange
    (0.60, 0.40, 0.95),  # violet
)
"""RGB colours in [0, 1] of foreground labels 1, 2, ... (repeating after eight)."""


def label_colour(k: int) -> tuple[float, float, float]:
    """The colour of the ``k``-th foreground label (0-based)."""
    return LABEL_COLOURS[k % len(LABEL_COLOURS)]


def _legend(width: int, names: Sequence[str]) -> np.ndarray:
    """A dark strip ``(rows, width, 3)`` float in [0, 1] with a colour box and the name of each label, wrapped to the width."""
    import cv2

    scale, thickness, box, gap = 0.4, 1, 10, 8
    height = 18
    entries = []
    for k, name in enumerate(names):
        (text_width, _), _ = cv2.getTextSize(name, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
        entries.append((k, name, box + 4 + text_width))
    rows: list[list[tuple[int, str, int]]] = [[]]
    used = gap
    for entry in entries:
        if rows[-1] and used + entry[2] > width:
            rows.append([])
            used = gap
        rows[-1].append(entry)
        used += entry[2] + gap
    strip = np.full((height * len(rows), width, 3), 20, dtype=np.uint8)  # OpenCV draws text on 8-bit images
    for r, row in enumerate(rows):
        x = gap
        top = r * height + (height - box) // 2
        for k, name, span in row:
            strip[top:top + box, x:x + box] = np.round(np.asarray(label_colour(k)) * 255).astype(np.uint8)
            cv2.putText(strip, name, (x + box + 4, r * height + height - 5), cv2.FONT_HERSHEY_SIMPLEX, scale,
                        (240, 240, 240), thickness, cv2.LINE_AA)
            x += span + gap
    return strip.astype(np.float32) / 255.0


def labelled_overlay(image: np.ndarray, masks: np.ndarray, names: Sequence[str], alpha: float = 0.35) -> np.ndarray:
    """An RGB float picture in [0, 1]: ``image`` with each label's mask tinted and outlined, above a legend.

    Args:
        image: ``(H, W)`` or ``(H, W, C)`` pixels (the first three channels are shown).
        masks: ``(K, H, W)`` bool, one per foreground label.
        names: the K label names, in the same order.
        alpha: how strongly a label's colour tints its region.

    Returns:
        ``(H + legend rows, W, 3)`` float32.
    """

    if masks.shape[0] != len(names):
        raise ValueError(f"{masks.shape[0]} masks for {len(names)} label names")
    picture = image.astype(np.float32)
    if picture.ndim == 2:
        picture = picture[..., None]
    picture = np.repeat(picture, 3, axis=2) if picture.shape[2] == 1 else picture[..., :3]
    low, high = float(picture.min()), float(picture.max())
    picture = (picture - low) / (high - low) if high > low else np.zeros_like(picture)
    for k, mask in enumerate(np.asarray(masks, dtype=bool)):
        colour = np.asarray(label_colour(k), dtype=np.float32)
        picture[mask] = (1 - alpha) * picture[mask] + alpha * colour
        picture[outline(mask)] = colour
    return np.concatenate([picture, _legend(picture.shape[1], list(names))], axis=0)


def outline(mask: np.ndarray) -> np.ndarray:
    """The boundary pixels of a binary mask."""
    import cv2

    edges = cv2.morphologyEx(mask.astype(np.uint8), cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8))
    return edges > 0
