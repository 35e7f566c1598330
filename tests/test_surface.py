"""Boundary metrics (segkit.evaluation.surface): hand-computed cases, empty masks, input errors, MONAI."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy import ndimage

from segkit.evaluation.surface import (
    HIGHER_IS_BETTER,
    SURFACE_METRICS,
    assd,
    hd95,
    surface_dice,
    surface_distances,
    surface_scores,
)

SQRT2, SQRT3 = math.sqrt(2), math.sqrt(3)


def mask(shape, *points):
    out = np.zeros(shape, dtype=bool)
    for point in points:
        out[point] = True
    return out


def square(shape, rows, cols):
    out = np.zeros(shape, dtype=bool)
    out[rows[0] : rows[1] + 1, cols[0] : cols[1] + 1] = True
    return out


def check(prediction, truth, expected_hd95, expected_assd, spacing=None):
    """The single-metric functions and surface_scores agree with the expected values."""
    assert hd95(prediction, truth, spacing) == pytest.approx(expected_hd95)
    assert assd(prediction, truth, spacing) == pytest.approx(expected_assd)
    scores = surface_scores(prediction, truth, spacing=spacing)
    assert scores["hd95"] == pytest.approx(expected_hd95)
    assert scores["assd"] == pytest.approx(expected_assd)


def test_names_and_directions():
    assert SURFACE_METRICS == ("hd95", "assd", "surface_dice")
    assert HIGHER_IS_BETTER == {"hd95": False, "assd": False, "surface_dice": True}
    scores = surface_scores(mask((4, 4), (1, 1)), mask((4, 4), (1, 2)))
    assert list(scores) == list(SURFACE_METRICS)
    assert all(type(value) is float for value in scores.values())


# --- hand-computed cases -------------------------------------------------------------------


def test_two_single_pixels_three_apart():
    # A single pixel is its own border. Pred (2, 2), truth (2, 5): each directed set is
    # [3], so hd95 = assd = 3; surface Dice is 0 below 3 and 1 from 3 on.
    p, t = mask((8, 8), (2, 2)), mask((8, 8), (2, 5))
    d_pt, d_tp = surface_distances(p, t)
    np.testing.assert_array_equal(d_pt, [3.0])
    np.testing.assert_array_equal(d_tp, [3.0])
    check(p, t, 3.0, 3.0)
    assert surface_dice(p, t, tolerance=2.9) == 0.0
    assert surface_dice(p, t, tolerance=3.0) == 1.0  # "within" is <=
    assert surface_scores(p, t, tolerance=3.5)["surface_dice"] == 1.0


def test_square_shifted_by_one_column():
    # Pred: the 3x3 square rows 2-4, cols 2-4; truth: the same square one column right
    # (cols 3-5). The border of a 3x3 square is its 8 pixels around the centre.
    # Pred border -> truth border: (2,3) (2,4) (4,3) (4,4) lie on the truth border (0);
    # (2,2) (3,2) (4,2) are one column left of it (1); (3,4), the truth's centre, is one
    # row from (2,4) (1). So P->T = four 0s and four 1s, and T->P the same by symmetry.
    # assd = 8 / 16 = 0.5; hd95: sorted [0,0,0,0,1,1,1,1], position 0.95 * 7 = 6.65
    # between two 1s -> 1. Surface Dice: 8 / 16 within 0 or 0.5, all 16 within 1.
    p, t = square((10, 10), (2, 4), (2, 4)), square((10, 10), (2, 4), (3, 5))
    d_pt, d_tp = surface_distances(p, t)
    np.testing.assert_array_equal(np.sort(d_pt), [0, 0, 0, 0, 1, 1, 1, 1])
    np.testing.assert_array_equal(np.sort(d_tp), [0, 0, 0, 0, 1, 1, 1, 1])
    check(p, t, 1.0, 0.5)
    assert surface_dice(p, t, tolerance=0.0) == 0.5
    assert surface_dice(p, t, tolerance=0.5) == 0.5
    assert surface_dice(p, t, tolerance=1.0) == 1.0


def test_square_shifted_with_anisotropic_spacing():
    # The same squares with spacing (1, 2): a column step is now 2, a row step 1.
    # P->T: (2,2) (3,2) (4,2) are one column from the truth border -> 2 (the diagonal
    # neighbours are sqrt(1 + 4) away); (3,4) is one row from (2,4) -> 1; the other four 0.
    # P->T sorted [0,0,0,0,1,2,2,2], T->P the same by symmetry (mirroring the columns
    # swaps the masks). assd = 2 * 7 / 16 = 0.875; hd95: position 6.65 between 2 and 2 -> 2.
    p, t = square((10, 10), (2, 4), (2, 4)), square((10, 10), (2, 4), (3, 5))
    d_pt, d_tp = surface_distances(p, t, spacing=(1.0, 2.0))
    np.testing.assert_allclose(np.sort(d_pt), [0, 0, 0, 0, 1, 2, 2, 2])
    np.testing.assert_allclose(np.sort(d_tp), [0, 0, 0, 0, 1, 2, 2, 2])
    check(p, t, 2.0, 0.875, spacing=(1.0, 2.0))
    # within 1: the 8 zeros and the two 1s; within 2: all
    assert surface_dice(p, t, tolerance=1.0, spacing=(1.0, 2.0)) == pytest.approx(10 / 16)
    assert surface_dice(p, t, tolerance=2.0, spacing=[1, 2]) == 1.0


def test_anisotropic_spacing_scales_each_axis():
    # Pred (2, 2), truth (5, 6): 3 rows and 4 columns apart -> 5 pixels; with spacing
    # (2, 0.5) -> sqrt(6^2 + 2^2) = sqrt(40).
    p, t = mask((8, 8), (2, 2)), mask((8, 8), (5, 6))
    check(p, t, 5.0, 5.0)
    check(p, t, math.sqrt(40), math.sqrt(40), spacing=(2.0, 0.5))
    check(p, t, math.sqrt(40), math.sqrt(40), spacing=np.array([2.0, 0.5]))


def test_percentile_interpolates_linearly():
    # Pred: the single pixel (5, 0); truth: the line row 5, cols 0-9 (a 1-pixel-thick
    # line is all border). P->T = [0]; T->P = [0, 1, ..., 9], whose 95th percentile is at
    # position 0.95 * 9 = 8.55 -> 8.55. assd = (0 + 45) / 11. Within 2: the pred pixel
    # and cols 0-2 of the line -> 4 / 11.
    p, t = mask((12, 12), (5, 0)), np.zeros((12, 12), dtype=bool)
    t[5, 0:10] = True
    check(p, t, 8.55, 45 / 11)
    assert surface_dice(p, t, tolerance=2.0) == pytest.approx(4 / 11)
    # hd95 is the larger of the two directed percentiles, whichever direction it is
    check(t, p, 8.55, 45 / 11)


def test_pixel_inside_square():
    # Pred: the centre pixel (3, 3) of the truth square rows 2-4, cols 2-4. P->T = [1]
    # (the nearest border pixels are its 4 face neighbours); T->P: 4 edge pixels at 1,
    # 4 corners at sqrt(2). hd95: T->P sorted [1,1,1,1,r2,r2,r2,r2], position 6.65 -> sqrt(2).
    # assd = (1 + 4 + 4 sqrt(2)) / 9; surface Dice within 1: (1 + 4) / 9, within 1.5: 1.
    p, t = mask((8, 8), (3, 3)), square((8, 8), (2, 4), (2, 4))
    check(p, t, SQRT2, (5 + 4 * SQRT2) / 9)
    assert surface_dice(p, t, tolerance=1.0) == pytest.approx(5 / 9)
    assert surface_dice(p, t, tolerance=1.5) == 1.0


def test_3d_voxel_inside_cube():
    # Truth: the 3x3x3 cube at 1-3 on each axis, whose border is its 26 voxels around the
    # centre; pred: the centre voxel (2, 2, 2). P->T = [1]; T->P: 6 face voxels at 1,
    # 12 edge voxels at sqrt(2), 8 corners at sqrt(3). hd95: position 0.95 * 25 = 23.75,
    # within the 8 corners (sorted positions 18-25) -> sqrt(3).
    # assd = (1 + 6 + 12 sqrt(2) + 8 sqrt(3)) / 27. Surface Dice within 1: 7 / 27,
    # within 1.5: (1 + 6 + 12) / 27, within 2: 1.
    t = np.zeros((5, 6, 6), dtype=bool)
    t[1:4, 1:4, 1:4] = True
    p = mask(t.shape, (2, 2, 2))
    check(p, t, SQRT3, (7 + 12 * SQRT2 + 8 * SQRT3) / 27)
    assert surface_dice(p, t, tolerance=1.0) == pytest.approx(7 / 27)
    assert surface_dice(p, t, tolerance=1.5) == pytest.approx(19 / 27)
    assert surface_dice(p, t, tolerance=2.0) == 1.0


def test_3d_single_voxels_with_slice_spacing():
    # (1, 2, 3) and (4, 6, 3): 3 slices and 4 rows apart -> 5; with 2-unit slices
    # (spacing (2, 1, 1)) -> sqrt(6^2 + 4^2) = sqrt(52).
    p, t = mask((6, 8, 8), (1, 2, 3)), mask((6, 8, 8), (4, 6, 3))
    check(p, t, 5.0, 5.0)
    check(p, t, math.sqrt(52), math.sqrt(52), spacing=(2.0, 1.0, 1.0))


@pytest.mark.parametrize("shape", [(9, 9), (4, 9, 9)])
def test_identical_masks_score_perfectly(shape):
    m = np.zeros(shape, dtype=bool)
    m[..., 2:7, 3:8] = True
    assert surface_scores(m, m.copy(), tolerance=0.0) == {"hd95": 0.0, "assd": 0.0, "surface_dice": 1.0}
    assert surface_dice(m, m, tolerance=0.0, spacing=(0.5,) * len(shape)) == 1.0


def test_mask_touching_the_array_edge_has_its_edge_on_the_border():
    # border_value=0: a mask filling the whole 3x3 array has the 8 outer pixels as its
    # border (only the centre erodes away), not an empty border.
    full = np.ones((3, 3), dtype=bool)
    d_pt, d_tp = surface_distances(full, mask((3, 3), (1, 1)))
    assert d_pt.size == 8 and d_tp.size == 1
    np.testing.assert_allclose(np.sort(d_pt), [1, 1, 1, 1, SQRT2, SQRT2, SQRT2, SQRT2])
    np.testing.assert_array_equal(d_tp, [1.0])


def test_integer_masks_and_lists_are_accepted():
    p, t = mask((8, 8), (2, 2)), mask((8, 8), (2, 5))
    assert hd95(p.astype(np.uint8), t.astype(float).tolist()) == 3.0


# --- empty masks ---------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(5, 7), (3, 5, 7)])
def test_both_empty(shape):
    empty = np.zeros(shape, dtype=bool)
    assert surface_scores(empty, empty) == {"hd95": 0.0, "assd": 0.0, "surface_dice": 1.0}
    assert hd95(empty, empty) == 0.0
    assert assd(empty, empty) == 0.0
    assert surface_dice(empty, empty, tolerance=0.0) == 1.0


@pytest.mark.parametrize(
    ("shape", "spacing", "diagonal"),
    [
        ((3, 4), None, 5.0),  # sqrt(3^2 + 4^2)
        ((3, 4), (2.0, 1.5), math.sqrt(72)),  # sqrt(6^2 + 6^2)
        ((2, 3, 6), None, 7.0),  # sqrt(2^2 + 3^2 + 6^2)
        ((2, 3, 6), (3.0, 1.0, 1.0), math.sqrt(81)),  # sqrt(6^2 + 3^2 + 6^2)
    ],
)
@pytest.mark.parametrize("empty_side", ["prediction", "truth"])
def test_one_empty_scores_the_array_diagonal(shape, spacing, diagonal, empty_side):
    full, empty = np.zeros(shape, dtype=bool), np.zeros(shape, dtype=bool)
    full[(0,) * len(shape)] = True
    p, t = (empty, full) if empty_side == "prediction" else (full, empty)
    assert surface_scores(p, t, tolerance=100.0, spacing=spacing) == {
        "hd95": pytest.approx(diagonal),
        "assd": pytest.approx(diagonal),
        "surface_dice": 0.0,
    }
    assert hd95(p, t, spacing) == pytest.approx(diagonal)
    assert assd(p, t, spacing) == pytest.approx(diagonal)
    assert surface_dice(p, t, 100.0, spacing) == 0.0


@pytest.mark.parametrize("which", ["prediction", "truth", "both"])
def test_surface_distances_refuses_empty_masks(which):
    some, empty = mask((4, 4), (1, 1)), np.zeros((4, 4), dtype=bool)
    p = empty if which in ("prediction", "both") else some
    t = empty if which in ("truth", "both") else some
    with pytest.raises(ValueError, match=r"empty.*surface_scores"):
        surface_distances(p, t)


# --- input errors --------------------------------------------------------------------------


def test_shape_mismatch():
    with pytest.raises(ValueError, match=r"differ in shape.*same image"):
        surface_scores(np.ones((4, 4), bool), np.ones((4, 5), bool))


@pytest.mark.parametrize("shape", [(4,), (1, 1, 4, 4)])
def test_wrong_number_of_axes(shape):
    with pytest.raises(ValueError, match=r"2-D \(H, W\) or 3-D \(S, H, W\).*one image or volume"):
        hd95(np.ones(shape, bool), np.ones(shape, bool))


@pytest.mark.parametrize(
    ("spacing", "message"),
    [
        ((1.0,), r"one size per mask axis \(2\).*pass e\.g\. \(1\.0, 1\.0\)"),
        ((1.0, 1.0, 1.0), r"one size per mask axis \(2\)"),
        (((1.0, 1.0),), r"one size per mask axis"),
        (1.0, r"sequence of 2 per-axis sizes.*None for pixel units"),
        ("11", r"sequence of 2 per-axis sizes"),
        ((1.0, "a"), r"sequence of 2 numbers"),
        ((1.0, 0.0), r"finite and positive.*physical size"),
        ((-1.0, 1.0), r"finite and positive"),
        ((1.0, float("nan")), r"finite and positive"),
    ],
)
def test_bad_spacing(spacing, message):
    m = mask((4, 4), (1, 1))
    for call in (
        lambda: surface_distances(m, m, spacing),
        lambda: surface_scores(m, m, spacing=spacing),
        lambda: assd(m, m, spacing),
    ):
        with pytest.raises(ValueError, match=message):
            call()
    # checked even when a mask is empty and no distance is computed
    with pytest.raises(ValueError, match=message):
        hd95(m, np.zeros_like(m), spacing)


@pytest.mark.parametrize("tolerance", [-0.5, float("nan"), float("inf")])
def test_bad_tolerance(tolerance):
    m = mask((4, 4), (1, 1))
    with pytest.raises(ValueError, match=r"tolerance must be a finite distance >= 0.*pass e\.g\. 1\.0"):
        surface_dice(m, m, tolerance)
    with pytest.raises(ValueError, match=r"tolerance"):
        surface_scores(np.zeros_like(m), np.zeros_like(m), tolerance=tolerance)


def test_non_binary_masks_are_refused():
    probabilities = np.full((4, 4), 0.3)
    with pytest.raises(ValueError, match=r"prediction must be a boolean mask.*threshold it first"):
        surface_scores(probabilities, np.ones((4, 4), bool))
    with pytest.raises(ValueError, match=r"truth must be a boolean mask"):
        surface_scores(np.ones((4, 4), bool), np.array([["a"] * 4] * 4))


@pytest.mark.parametrize("shape", [(20, 24), (5, 12, 10)])
def test_distances_match_the_whole_array_computation(shape):
    # surface_distances works in the union's bounding box; the same definition applied to
    # the whole array (border from a plain erosion, EDT over everything) gives the same sets.
    rng = np.random.default_rng(7)
    for _ in range(3):
        p, t = rng.random(shape) < 0.15, rng.random(shape) < 0.05
        p[..., :3, :4] = True  # touches the array edge
        spacing = tuple(rng.uniform(0.5, 2.0, len(shape)))
        border_p = p & ~ndimage.binary_erosion(p)
        border_t = t & ~ndimage.binary_erosion(t)
        expected_pt = ndimage.distance_transform_edt(~border_t, sampling=spacing)[border_p]
        expected_tp = ndimage.distance_transform_edt(~border_p, sampling=spacing)[border_t]
        d_pt, d_tp = surface_distances(p, t, spacing)
        np.testing.assert_allclose(d_pt, expected_pt)
        np.testing.assert_allclose(d_tp, expected_tp)


# --- agreement with MONAI ------------------------------------------------------------------


def blob_pair(rng, shape, sigma):
    """A truth blob mask and a prediction that is a perturbed version of it."""
    noise = ndimage.gaussian_filter(rng.standard_normal(shape), sigma)
    wobble = ndimage.gaussian_filter(rng.standard_normal(shape), sigma)
    level = np.quantile(noise, 0.8)  # about a fifth of the pixels are foreground
    truth = noise > level
    prediction = noise + 0.6 * wobble * noise.std() / wobble.std() > level
    return prediction, truth


# (shape, spacing, tolerance): tolerances are chosen away from distances the grid can
# produce with that spacing, except 1.0 and 2.0 at unit spacing, which are exact in float32.
MONAI_CASES = [
    ((64, 64), None, 1.0),
    ((64, 64), None, 2.0),
    ((64, 64), None, 1.5),
    ((64, 64), (0.7, 1.3), 1.5),
    ((64, 64), (1.0, 2.5), 2.2),
    ((8, 48, 48), None, 1.0),
    ((8, 48, 48), None, 2.5),
    ((8, 48, 48), (3.0, 0.8, 0.8), 2.0),
    ((8, 48, 48), (2.5, 1.0, 1.0), 1.5),
    ((8, 48, 48), (5.0, 0.5, 0.7), 3.3),
]


@pytest.mark.parametrize(("seed", "case"), list(enumerate(MONAI_CASES)))
def test_agrees_with_monai(seed, case):
    # MONAI's default definitions match ours: the border is mask XOR binary_erosion(mask)
    # after cropping to the union's bounding box with a 1-voxel zero margin (the same as
    # border_value=0); distances are exact Euclidean (a KD-tree over border voxels, scaled
    # by spacing); the percentile is torch.quantile's linear interpolation, numpy's
    # default; surface Dice without use_subvoxels counts border voxels within (<=) the
    # threshold. MONAI returns float32, hence the 1e-4 tolerance. MONAI has no empty-mask
    # conventions (1.6.1 gives nan for all three when both masks are empty; nan HD95, inf
    # ASSD and 0 surface Dice when one is), so only non-empty masks are compared.
    monai_metrics = pytest.importorskip("monai.metrics")
    torch = pytest.importorskip("torch")
    shape, spacing, tolerance = case
    prediction, truth = blob_pair(np.random.default_rng(seed), shape, sigma=3.0 if len(shape) == 2 else 2.0)
    assert prediction.any() and truth.any() and (prediction != truth).any()

    ours = surface_scores(prediction, truth, tolerance=tolerance, spacing=spacing)
    y_pred = torch.from_numpy(prediction)[None, None].float()  # one-hot (B=1, C=1, ...)
    y = torch.from_numpy(truth)[None, None].float()
    monai_spacing = list(spacing) if spacing is not None else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. deprecation notices of MONAI's own internals
        theirs = {
            "hd95": monai_metrics.compute_hausdorff_distance(
                y_pred, y, include_background=True, percentile=95, spacing=monai_spacing
            ),
            "assd": monai_metrics.compute_average_surface_distance(
                y_pred, y, include_background=True, symmetric=True, spacing=monai_spacing
            ),
            "surface_dice": monai_metrics.compute_surface_dice(
                y_pred, y, class_thresholds=[tolerance], include_background=True, spacing=monai_spacing
            ),
        }
    for name in SURFACE_METRICS:
        assert ours[name] == pytest.approx(float(theirs[name].item()), abs=1e-4), name

    # The distance sets themselves agree, not only their summaries.
    from monai.metrics.utils import get_edge_surface_distance

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, (their_pt, their_tp), _ = get_edge_surface_distance(
            y_pred[0, 0], y[0, 0], spacing=monai_spacing, symmetric=True
        )
    our_pt, our_tp = surface_distances(prediction, truth, spacing)
    np.testing.assert_allclose(np.sort(our_pt), np.sort(their_pt.numpy()), atol=1e-4)
    np.testing.assert_allclose(np.sort(our_tp), np.sort(their_tp.numpy()), atol=1e-4)
