"""Figures a reader cannot misread: the image in grey (the dataset's display channel), colours for masks alone."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from segkit.data.inspect import _display
from segkit.figures.overlays import label_colour
from segkit.figures.plots import FN_COLOUR, error_overlay, grey_picture, label_overlay, plot_curves


def _three_sequences(size: int = 16) -> np.ndarray:
    """An image whose channels differ: a bright blue channel (as post-contrast often is), a gradient in channel 1."""
    image = np.zeros((size, size, 3), np.float32)
    image[..., 0] = 0.2
    image[..., 1] = np.linspace(0, 1, size)[None, :]
    image[..., 2] = 0.9
    return image


def _is_grey(pixels: np.ndarray) -> bool:
    return bool(np.allclose(pixels[..., 0], pixels[..., 1]) and np.allclose(pixels[..., 1], pixels[..., 2]))


def test_the_background_is_the_display_channel_in_grey() -> None:
    image = _three_sequences()
    picture = grey_picture(image, channel=1)
    assert picture.shape == (16, 16, 3) and _is_grey(picture)
    np.testing.assert_allclose(picture[..., 0], image[..., 1])  # the gradient, rescaled to [0, 1]: itself here
    assert _is_grey(grey_picture(image, channel=7))  # past the last channel: the last one


def test_only_a_missed_lesion_is_blue_in_the_error_overlay() -> None:
    image = _three_sequences()
    truth = np.zeros((16, 16), bool)
    truth[4:8, 4:8] = True
    picture = error_overlay(image, truth, np.zeros_like(truth), channel=1)
    assert _is_grey(picture[~truth])  # the bright blue channel no longer tints the background
    blue = (picture[..., 2] > picture[..., 0] + 0.2) & (picture[..., 2] > picture[..., 1] + 0.1)
    np.testing.assert_array_equal(blue, truth)
    assert FN_COLOUR[2] > FN_COLOUR[0]


def test_several_labels_fill_the_prediction_and_outline_the_truth_in_each_labels_colour() -> None:
    image = np.full((12, 12), 0.5, np.float32)
    image[0, 0], image[0, 1] = 0.0, 1.0  # the range [0, 1], so grey stays 0.5 after rescaling
    truth = np.zeros((2, 12, 12), bool)
    truth[0, 2:10, 2:10] = True          # label 1 is there ...
    prediction = np.zeros((2, 12, 12), bool)
    prediction[1, 2:10, 2:10] = True     # ... and was predicted as label 2
    picture = label_overlay(image, truth, prediction, alpha=0.5, channel=0)
    np.testing.assert_allclose(picture[2, 2], label_colour(0), atol=1e-6)  # the true border: label 1's colour
    np.testing.assert_allclose(picture[5, 5], 0.5 * 0.5 + 0.5 * np.asarray(label_colour(1)), atol=1e-6)  # label 2 fill
    assert _is_grey(picture[11:, :])


def test_the_inspect_grid_shows_the_middle_slice_display_channel_in_grey_and_outlines_each_label() -> None:
    slices = [np.full((20, 20, 3), 40, np.uint8), _three_sequences(20).__mul__(255).astype(np.uint8),
              np.full((20, 20, 3), 200, np.uint8)]
    image = np.concatenate(slices, axis=2)  # 2.5D context 1: slices n-1, n, n+1
    mask = np.zeros((20, 20), np.uint8)
    mask[3:8, 3:8] = 1
    mask[12:17, 12:17] = 2
    picture = _display(image, mask, channel=1, slice_channels=3, context=1)
    outline_one = tuple(int(round(c * 255)) for c in label_colour(0))
    outline_two = tuple(int(round(c * 255)) for c in label_colour(1))
    assert tuple(picture[3, 5]) == outline_one and tuple(picture[12, 14]) == outline_two
    inside = np.ones((20, 20), bool)
    inside[2:9, 2:9] = inside[11:18, 11:18] = False
    assert _is_grey(picture[inside].astype(np.float32))
    np.testing.assert_allclose(picture[0, :, 0], slices[1][0, :, 1], atol=1)  # the middle slice's channel 1


def test_lgg_figures_show_flair(lgg_small: Path) -> None:
    from segkit.data import SegmentationDataset
    from segkit_builtins.datasets.lgg import LGGDataset

    assert SegmentationDataset.display_channel == 0
    dataset = LGGDataset(str(lgg_small))
    assert dataset.display_channel == 1  # pre-contrast, FLAIR, post-contrast
    assert dataset.subset([0, 1]).display_channel == 1


def test_curves_of_several_labels_get_a_panel_per_label_beside_their_mean(tmp_path: Path) -> None:
    rows = [{"epoch": e, "train_loss": 1 / e, "val_loss": 1.2 / e, "val_dice": 0.1 * e, "val_dice_case": 0.09 * e,
             "val_dice_case_edema": 0.12 * e, "val_dice_case_core": 0.06 * e} for e in range(1, 4)]
    plot_curves(rows, ["dice"], tmp_path / "one.png", monitor="val_dice_case", best_epoch=3)
    plot_curves(rows, ["dice"], tmp_path / "labels.png", monitor="val_dice_case", best_epoch=3,
                label_names=("edema", "core"))
    one, labels = cv2.imread(str(tmp_path / "one.png")), cv2.imread(str(tmp_path / "labels.png"))
    assert labels.shape[1] > 1.3 * one.shape[1]  # a third panel
    for k in range(2):  # each label's curve in its colour, which the two-panel figure does not use
        colour = np.round(np.asarray(label_colour(k))[::-1] * 255)  # BGR
        assert (np.abs(labels.astype(float) - colour).max(axis=2) < 12).sum() > 50, f"label {k}'s colour is missing"
        assert (np.abs(one.astype(float) - colour).max(axis=2) < 12).sum() < 10
    for row in rows:  # metrics.csv without per-label columns (a run from before them): two panels
        row.pop("val_dice_case_core")
    plot_curves(rows, ["dice"], tmp_path / "old.png", monitor="val_dice_case", label_names=("edema", "core"))
    assert cv2.imread(str(tmp_path / "old.png")).shape[1] == one.shape[1]
