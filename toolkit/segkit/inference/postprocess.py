"""Post-processing of predicted masks: keep the largest connected component.

Buda et al. (2019) keep only the largest connected lesion component of each
patient's 3D segmentation on the LGG data; :func:`postprocess` does this per
case when case ids are known (slices stacked in slice order) and per image
otherwise.

Connectivity: within a slice, pixels touching by an edge or a corner
(8-connectivity); across slices, only the pixel directly above or below. Both
the scipy path and the fallback use exactly this neighbourhood.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from segkit.errors import unknown_name

__all__ = ["POSTPROCESS_MODES", "largest_component", "largest_component_3d", "postprocess"]

POSTPROCESS_MODES: tuple[str, ...] = ("none", "lcc")
"""``none`` keeps masks as predicted; ``lcc`` keeps the largest connected component."""


def _as_binary(mask: np.ndarray) -> np.ndarray:
    return np.asarray(mask) > 0


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 8-connected component of a 2-D binary mask, same shape and dtype.

    An empty mask comes back empty; with ties, the component found first (in raster order) wins.
    """
    import cv2

    binary = _as_binary(mask)
    if binary.ndim != 2:
        raise ValueError(f"largest_component takes a 2-D mask, got shape {binary.shape}")
    if not binary.any():
        return np.zeros_like(mask)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(binary.astype(np.uint8), connectivity=8)
    keep = 1 + int(np.argmax(stats[1:count, cv2.CC_STAT_AREA]))
    return (labels == keep).astype(np.asarray(mask).dtype)


def _structure_3d() -> np.ndarray:
    """8-connected in each slice, face-connected across slices."""
    structure = np.zeros((3, 3, 3), dtype=bool)
    structure[1] = True
    structure[0, 1, 1] = structure[2, 1, 1] = True
    return structure


def _label_3d_fallback(binary: np.ndarray) -> tuple[np.ndarray, int]:
    """3-D labels without scipy: OpenCV labels each slice, a union-find joins overlapping labels of adjacent slices."""
    import cv2

    labels = np.zeros(binary.shape, dtype=np.int64)
    offset = 0
    for z in range(binary.shape[0]):
        count, slice_labels = cv2.connectedComponents(binary[z].astype(np.uint8), connectivity=8)
        labels[z] = np.where(slice_labels > 0, slice_labels + offset, 0)
        offset += count - 1
    parent = np.arange(offset + 1)

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = int(parent[a])
        return a

    for z in range(1, binary.shape[0]):
        touching = (labels[z] > 0) & (labels[z - 1] > 0)
        for a, b in set(zip(labels[z][touching].tolist(), labels[z - 1][touching].tolist(), strict=True)):
            root_a, root_b = find(a), find(b)
            if root_a != root_b:
                parent[max(root_a, root_b)] = min(root_a, root_b)
    roots = np.array([find(a) for a in range(offset + 1)])
    return roots[labels], offset


def largest_component_3d(volume: np.ndarray) -> np.ndarray:
    """The largest connected component of a binary volume ``(D, H, W)`` (slices first), same dtype.

    Uses ``scipy.ndimage.label`` when scipy is importable, else a slice-by-slice
    OpenCV labelling joined across slices; both give the same result.
    """
    binary = _as_binary(volume)
    if binary.ndim != 3:
        raise ValueError(f"largest_component_3d takes a (D, H, W) volume, got shape {binary.shape}")
    if not binary.any():
        return np.zeros_like(volume)
    try:
        from scipy import ndimage
    except ImportError:
        labels, _ = _label_3d_fallback(binary)
    else:
        labels, _ = ndimage.label(binary, structure=_structure_3d())
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return (labels == int(np.argmax(sizes))).astype(np.asarray(volume).dtype)


def postprocess(
    masks: np.ndarray | Sequence[np.ndarray],
    cases: Sequence[str | None] | None = None,
    mode: str = "none",
) -> list[np.ndarray]:
    """Post-process predicted binary masks; returns a list of ``H x W`` masks in input order.

    Args:
        masks: ``(N, H, W)`` or a sequence of 2-D masks (sizes may differ).
        cases: the case of each mask (None: its own case). The masks of one case
            are stacked in the order given, so pass slices in slice order; a case
            whose slices differ in size is processed per image.
        mode: ``"none"`` or ``"lcc"`` (largest connected component, 3-D per case).
    """
    if mode not in POSTPROCESS_MODES:
        raise unknown_name("postprocess mode", mode, POSTPROCESS_MODES)
    masks = [np.asarray(m) for m in masks]
    if mode == "none":
        return masks
    if cases is None:
        return [largest_component(m) for m in masks]
    if len(cases) != len(masks):
        raise ValueError(f"{len(cases)} case ids for {len(masks)} masks")
    groups: dict[object, list[int]] = {}
    for i, case in enumerate(cases):
        groups.setdefault(("case", case) if case is not None else ("image", i), []).append(i)
    result: list[np.ndarray] = list(masks)
    for members in groups.values():
        shapes = {masks[i].shape for i in members}
        if len(members) == 1 or len(shapes) > 1:
            for i in members:
                result[i] = largest_component(masks[i])
            continue
        volume = largest_component_3d(np.stack([masks[i] for i in members]))
        for z, i in enumerate(members):
            result[i] = volume[z]
    return result
