"""Largest-connected-component post-processing, in 2D and per case in 3D."""

from __future__ import annotations

import numpy as np
import pytest

from segkit.errors import UnknownNameError
from segkit.inference.postprocess import _label_3d_fallback, largest_component, largest_component_3d, postprocess


def blobs_2d() -> np.ndarray:
    mask = np.zeros((12, 12), np.uint8)
    mask[1:3, 1:3] = 1          # 4 pixels
    mask[6:10, 5:9] = 1         # 16 pixels: the largest
    mask[10, 9] = 1             # touches the big blob by a corner only: 8-connected, so part of it
    mask[0, 11] = 1             # a lone pixel
    return mask


def test_largest_component_keeps_the_biggest_blob_with_corner_neighbours() -> None:
    kept = largest_component(blobs_2d())
    expected = np.zeros((12, 12), np.uint8)
    expected[6:10, 5:9] = 1
    expected[10, 9] = 1
    assert kept.dtype == np.uint8
    np.testing.assert_array_equal(kept, expected)


def test_largest_component_of_empty_and_bool_masks() -> None:
    assert not largest_component(np.zeros((5, 7), bool)).any()
    kept = largest_component(blobs_2d().astype(bool))
    assert kept.dtype == bool and kept.sum() == 17


def test_largest_component_3d_joins_slices_through_faces_only() -> None:
    volume = np.zeros((3, 8, 8), np.uint8)
    volume[0, 1:3, 1:3] = 1     # 4 px, directly below the next one: same component
    volume[1, 1:3, 1:3] = 1     # 4 px
    volume[2, 3, 3] = 1         # diagonal to slice 1's blob across slices: not connected (face rule)
    volume[2, 5:8, 5:8] = 1     # 9 px: beats the 8 px of the stacked blob
    kept = largest_component_3d(volume)
    assert kept.sum() == 9 and kept[2, 5:8, 5:8].all()
    volume[2, 1:3, 1:3] = 1     # the stack grows to 12 px, and (2, 3, 3) joins it by an in-slice corner: 13
    kept = largest_component_3d(volume)
    assert kept.sum() == 13 and kept[2, 3, 3] and not kept[2, 5:8, 5:8].any()


def test_fallback_labelling_agrees_with_scipy() -> None:
    from scipy import ndimage

    from segkit.inference.postprocess import _structure_3d

    rng = np.random.default_rng(0)
    for _ in range(5):
        volume = rng.random((6, 20, 20)) > 0.6
        scipy_labels, scipy_count = ndimage.label(volume, structure=_structure_3d())
        fallback_labels, _ = _label_3d_fallback(volume)
        # same partition of the foreground: a one-to-one map between label ids
        pairs = set(zip(scipy_labels[volume].tolist(), fallback_labels[volume].tolist(), strict=True))
        assert len(pairs) == scipy_count == len({b for _, b in pairs})


def test_postprocess_per_case_in_3d_and_per_image_without_cases() -> None:
    big = np.zeros((8, 8), np.uint8)
    big[0:4, 0:4] = 1           # 16 px
    small = np.zeros((8, 8), np.uint8)
    small[6:8, 6:8] = 1         # 4 px, its own slice
    # per image: each slice keeps its own blob
    per_image = postprocess([big, small], mode="lcc")
    assert per_image[0].sum() == 16 and per_image[1].sum() == 4
    # one case: the small blob is not connected to the big one in 3D, so it goes
    per_case = postprocess([big, small], cases=["p1", "p1"], mode="lcc")
    assert per_case[0].sum() == 16 and per_case[1].sum() == 0
    # two cases, or None (own case): both kept
    assert [m.sum() for m in postprocess([big, small], cases=["p1", "p2"], mode="lcc")] == [16, 4]
    assert [m.sum() for m in postprocess([big, small], cases=[None, None], mode="lcc")] == [16, 4]


def test_postprocess_none_and_slices_of_different_sizes() -> None:
    masks = [np.ones((4, 4), np.uint8), np.ones((5, 5), np.uint8)]
    assert [m.shape for m in postprocess(masks, mode="none")] == [(4, 4), (5, 5)]
    assert [int(m.sum()) for m in postprocess(masks, cases=["a", "a"], mode="lcc")] == [16, 25]


def test_unknown_mode_suggests_the_right_one() -> None:
    with pytest.raises(UnknownNameError, match="Did you mean 'lcc'"):
        postprocess([np.zeros((2, 2))], mode="lc")
