"""Whether a 2D plan resizes its images or trains on patches at their own size, from the dataset's fingerprint.

Resizing a whole image to what the time budget allows is right for large structures (a polyp, a tumour
slice): they keep their shape and the model sees all of them. Thin or small ones (vessels, nuclei, a
lesion of a few pixels) lose their pixels: after resizing they may be narrower than one pixel. For those
the plan keeps the images' own resolution and trains on patches (``train.patch_size``), as nnU-Net
never resizes. The fingerprint measures each label's median structure width (``structure_width``, two
times area over boundary) and median region size (``object_sizes``); :func:`keep_pixels` says what
resizing would leave of them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["THIN_PIXELS", "SMALL_PIXELS", "MAX_PATCH", "keep_pixels", "median_size"]

THIN_PIXELS = 3.0
"""A label whose structures (median width) would be narrower than this after resizing keeps its pixels."""
SMALL_PIXELS = 64.0
"""Likewise for a label whose median region would cover fewer pixels than this after resizing."""
MAX_PATCH = {"cpu": 512, "cuda": 1024}
"""The largest planned 2D patch side."""


def keep_pixels(fp: dict[str, Any], scale: float) -> str | None:
    """Why the images must keep their pixels when resized by ``scale``, or None when resizing is safe:
    a label's median structure width below :data:`THIN_PIXELS`, or its median region below
    :data:`SMALL_PIXELS`, once resized. No resize (``scale >= 1``) is always safe."""
    if scale >= 1.0:
        return None
    for label in fp["labels"][1:]:
        width = ((fp.get("structure_width") or {}).get(label) or {}).get("median")
        if width and width * scale < THIN_PIXELS:
            return (f"{label}'s structures are {width:.1f} pixels wide (median): resized by {scale:.2f} they "
                    f"would keep {width * scale:.1f}")
        area = ((fp.get("object_sizes") or {}).get(label) or {}).get("median")
        if area and area * scale * scale < SMALL_PIXELS:
            return (f"{label}'s regions cover {area:.0f} pixels (median): resized by {scale:.2f} they would "
                    f"keep {area * scale * scale:.0f}")
    return None


def median_size(fp: dict[str, Any]) -> tuple[int, int]:
    """The images' median height and width, over every image (fingerprint's ``image_sizes``)."""
    heights: list[int] = []
    widths: list[int] = []
    for size, count in fp["image_sizes"].items():
        h, w = (int(v) for v in size.split("x"))
        heights += [h] * count
        widths += [w] * count
    return int(np.median(heights)), int(np.median(widths))
