"""Image and mask reading: formats, bit depths, channels, and errors that name the file."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from segkit.data import check_same_size, raw_mask_values, read_image, read_mask, read_pair
from segkit.errors import DataError

RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, (12, 10, 3), dtype=np.uint8)


def write_rgb(path: Path, rgb: np.ndarray) -> Path:
    assert cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return path


@pytest.mark.parametrize("suffix", [".png", ".tif", ".tiff"])
def test_lossless_formats_round_trip_in_rgb_order(tmp_path, suffix):
    path = write_rgb(tmp_path / f"a{suffix}", RGB)
    image = read_image(path)
    assert image.dtype == np.uint8 and image.shape == (12, 10, 3)
    np.testing.assert_array_equal(image, RGB)


def test_rgb_order_agrees_with_pillow(tmp_path):
    Image.fromarray(RGB).save(tmp_path / "pil.png")
    np.testing.assert_array_equal(read_image(tmp_path / "pil.png"), RGB)


def test_jpeg_is_read_approximately(tmp_path):
    smooth = np.full((16, 16, 3), (200, 100, 50), np.uint8)
    path = write_rgb(tmp_path / "a.jpg", smooth)
    assert np.abs(read_image(path).astype(int) - smooth).max() <= 3


def test_grayscale_and_channel_conversion(tmp_path):
    gray = RGB[:, :, 0]
    cv2.imwrite(str(tmp_path / "g.png"), gray)
    assert read_image(tmp_path / "g.png").shape == (12, 10, 1)
    three = read_image(tmp_path / "g.png", channels=3)
    assert three.shape == (12, 10, 3) and (three == gray[:, :, None]).all()
    write_rgb(tmp_path / "c.png", RGB)
    one = read_image(tmp_path / "c.png", channels=1)
    np.testing.assert_array_equal(one[:, :, 0], cv2.cvtColor(RGB, cv2.COLOR_RGB2GRAY))


def test_alpha_channel_is_dropped(tmp_path):
    Image.fromarray(np.dstack([RGB, np.full(RGB.shape[:2], 128, np.uint8)])).save(tmp_path / "rgba.png")
    np.testing.assert_array_equal(read_image(tmp_path / "rgba.png"), RGB)


def test_16_bit_images_scale_by_their_maximum(tmp_path):
    deep = np.array([[0, 1000], [2000, 4000]], np.uint16)
    cv2.imwrite(str(tmp_path / "d.png"), deep)
    cv2.imwrite(str(tmp_path / "d.tif"), deep)
    for name in ("d.png", "d.tif"):
        image = read_image(tmp_path / name)
        assert image.dtype == np.uint8
        np.testing.assert_array_equal(image[:, :, 0], [[0, 64], [128, 255]])


def test_uncompressed_and_deflate_tiff_give_the_same_pixels(tmp_path):
    raw, deflate = tmp_path / "raw.tif", tmp_path / "deflate.tif"
    Image.fromarray(RGB).save(raw)  # Pillow writes uncompressed TIFF by default
    Image.fromarray(RGB).save(deflate, compression="tiff_adobe_deflate")
    assert Image.open(raw).info.get("compression") == "raw"
    np.testing.assert_array_equal(read_image(raw), read_image(deflate))


def test_real_lgg_deflate_tiff_matches_an_uncompressed_copy(lgg_root, tmp_path):
    image_path = next(lgg_root.glob("TCGA_CS_6667_20011105/*_10.tif"))
    mask_path = image_path.with_name(image_path.stem + "_mask.tif")
    assert Image.open(image_path).info.get("compression") == "tiff_adobe_deflate"
    for source in (image_path, mask_path):
        Image.open(source).save(tmp_path / source.name, compression="raw")
    np.testing.assert_array_equal(read_image(image_path), read_image(tmp_path / image_path.name))
    np.testing.assert_array_equal(read_image(image_path), np.asarray(Image.open(image_path)))
    np.testing.assert_array_equal(read_mask(mask_path), read_mask(tmp_path / mask_path.name))
    assert raw_mask_values(mask_path) == [0, 255]


@pytest.mark.parametrize("top", [1, 255])
def test_masks_become_zero_one(tmp_path, top):
    raw = np.zeros((8, 8), np.uint8)
    raw[2:5, 3:6] = top
    cv2.imwrite(str(tmp_path / "m.png"), raw)
    mask = read_mask(tmp_path / "m.png")
    assert mask.dtype == np.uint8 and mask.shape == (8, 8)
    np.testing.assert_array_equal(mask, raw > 0)


def test_grey_mask_saved_as_rgb_is_accepted(tmp_path):
    raw = np.zeros((8, 8, 3), np.uint8)
    raw[1:3] = 255
    cv2.imwrite(str(tmp_path / "m.png"), raw)
    assert read_mask(tmp_path / "m.png").sum() == 16


def test_bad_mask_values_name_the_file(tmp_path):
    raw = np.array([[0, 128], [255, 0]], np.uint8)
    cv2.imwrite(str(tmp_path / "bad.png"), raw)
    with pytest.raises(DataError, match=r"bad\.png.*0/1 or 0/255.*0, 128, 255"):
        read_mask(tmp_path / "bad.png")


def test_mixed_one_and_255_mask_is_rejected(tmp_path):
    cv2.imwrite(str(tmp_path / "mixed.png"), np.array([[0, 1], [255, 0]], np.uint8))
    with pytest.raises(DataError, match="mixed.png"):
        read_mask(tmp_path / "mixed.png")


def test_a_jpeg_mask_is_snapped_to_its_labels_and_an_ambiguous_one_suggests_png(tmp_path):
    noisy = np.zeros((32, 32), np.uint8)
    noisy[8:20, 5:17] = 255
    cv2.imwrite(str(tmp_path / "m.jpg"), noisy, [cv2.IMWRITE_JPEG_QUALITY, 50])
    assert np.array_equal(read_mask(tmp_path / "m.jpg"), (noisy > 0).astype(np.uint8))
    ramp = np.tile(np.linspace(0, 255, 32).astype(np.uint8), (32, 1))  # a photograph, not a mask
    cv2.imwrite(str(tmp_path / "ramp.jpg"), ramp, [cv2.IMWRITE_JPEG_QUALITY, 95])
    with pytest.raises(DataError, match="ramp.jpg: a lossy .JPEG. mask .* ambiguous. Save masks as PNG"):
        read_mask(tmp_path / "ramp.jpg")


def test_colour_mask_is_rejected(tmp_path):
    write_rgb(tmp_path / "c.png", RGB)
    with pytest.raises(DataError, match="c.png.*colour"):
        read_mask(tmp_path / "c.png")


@pytest.mark.parametrize("content", [b"", b"not an image at all", b"\x89PNG\r\n\x1a\n" + b"\x00" * 40])
def test_corrupt_files_name_the_file(tmp_path, content):
    (tmp_path / "broken.png").write_bytes(content)
    with pytest.raises(DataError, match=r"broken\.png"):
        read_image(tmp_path / "broken.png")
    with pytest.raises(DataError, match=r"broken\.png"):
        read_mask(tmp_path / "broken.png")


def test_truncated_real_tiff_is_a_data_error(lgg_root, tmp_path):
    source = next(lgg_root.glob("TCGA_CS_6667_20011105/*_10.tif")).read_bytes()
    (tmp_path / "cut.tif").write_bytes(source[: len(source) // 3])
    with pytest.raises(DataError, match=r"cut\.tif"):
        read_image(tmp_path / "cut.tif")


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="not found.*nope.png"):
        read_image(tmp_path / "nope.png")


def test_channel_request_that_cannot_be_met(tmp_path):
    write_rgb(tmp_path / "c.png", RGB)
    with pytest.raises(DataError, match="3 channel"):
        read_image(tmp_path / "c.png", channels=2)


def test_size_mismatch_names_both_files_and_sizes(tmp_path):
    write_rgb(tmp_path / "img.png", RGB)
    cv2.imwrite(str(tmp_path / "msk.png"), np.zeros((12, 11), np.uint8))
    with pytest.raises(DataError, match=r"img\.png is 10x12.*msk\.png is 11x12"):
        read_pair(tmp_path / "img.png", tmp_path / "msk.png")
    check_same_size(RGB, np.zeros((12, 10), np.uint8))  # no error


def test_unicode_path(tmp_path):
    path = write_rgb(tmp_path / "a.png", RGB).rename(tmp_path / "ümlaut é.png")
    np.testing.assert_array_equal(read_image(path), RGB)
