"""What public 2D sets hold, read as what it means: JPEG masks snapped, GIF/BMP/palette/16-bit masks, TIFFs tagged
grey that hold colour, image/mask names that differ by a pattern, a region of interest per image, an ignore label."""

from __future__ import annotations

import struct
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch
from PIL import Image

from clihelp import segkit
from segkit.data.io import decode_mask, raw_mask_values, read_image, read_mask
from segkit.scoring.metrics import MetricAccumulator, mask_counts
from segkit.labels import IGNORE, Labels, neutral_outputs


def grey_tagged_colour_tiff(path: Path, rgb: np.ndarray) -> Path:
    """An RGB TIFF whose photometric tag is rewritten to 'BlackIsZero' (grey), as some public sets ship them."""
    Image.fromarray(rgb).save(path)
    data = bytearray(path.read_bytes())
    order = "<" if data[:2] == b"II" else ">"
    offset = struct.unpack(order + "I", data[4:8])[0]
    for entry in range(struct.unpack(order + "H", data[offset:offset + 2])[0]):
        at = offset + 2 + 12 * entry
        if struct.unpack(order + "H", data[at:at + 2])[0] == 262:
            data[at + 8:at + 10] = struct.pack(order + "H", 1)
    path.write_bytes(bytes(data))
    return path


def test_a_tiff_tagged_grey_that_holds_three_samples_is_read_in_colour(tmp_path: Path) -> None:
    rgb = np.zeros((12, 20, 3), np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 200, 50, 10
    rgb[3:6, 4:9] = (10, 220, 30)
    path = grey_tagged_colour_tiff(tmp_path / "frame.tif", rgb)
    assert cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_UNCHANGED).ndim == 2  # what OpenCV alone reads
    assert np.array_equal(read_image(path), rgb)


def test_gif_bmp_palette_and_16_bit_masks(tmp_path: Path) -> None:
    mask = np.zeros((10, 14), np.uint8)
    mask[2:6, 3:9] = 255
    Image.fromarray(mask).convert("P").save(tmp_path / "m.gif")           # grey palette: its grey levels
    cv2.imwrite(str(tmp_path / "m.bmp"), mask)
    cv2.imwrite(str(tmp_path / "m16.png"), mask.astype(np.uint16) * 257)   # 0/65535
    for name in ("m.gif", "m.bmp", "m16.png"):
        assert np.array_equal(read_mask(tmp_path / name), (mask > 0).astype(np.uint8)), name
    labels = np.zeros((10, 14), np.uint8)
    labels[1:4, 1:4], labels[6:9, 8:12] = 1, 2
    voc = Image.fromarray(labels, mode="P")
    voc.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0] + [0] * 759)            # a colour palette: the indices are labels
    voc.save(tmp_path / "voc.png")
    cv2.imwrite(str(tmp_path / "l16.png"), labels.astype(np.uint16))
    for name in ("voc.png", "l16.png"):
        assert np.array_equal(read_mask(tmp_path / name, classes=3), labels), name


def test_a_jpeg_mask_reports_the_pixels_it_snapped(tmp_path: Path) -> None:
    mask = np.zeros((40, 40), np.uint8)
    mask[10:30, 8:25] = 255
    cv2.imwrite(str(tmp_path / "m.jpg"), np.dstack([mask] * 3), [cv2.IMWRITE_JPEG_QUALITY, 60])
    stored = cv2.imread(str(tmp_path / "m.jpg"), cv2.IMREAD_GRAYSCALE)
    reading = decode_mask(tmp_path / "m.jpg")
    assert np.array_equal(reading.mask, (mask > 0).astype(np.uint8))
    assert reading.snapped == int(((stored != 0) & (stored != 255)).sum()) > 0
    assert raw_mask_values(tmp_path / "m.jpg") == [0, 255]  # what inspect and plan see: the labels' stored values


def test_lossy_masks_snap_each_pixel_to_its_nearest_label_value(tmp_path: Path) -> None:
    """Snapping decides once per stored value; pinned against the per-pixel rule it stands for: colour channels
    averaged and rounded, then each pixel to the nearest label value, every moved pixel counted."""
    rng = np.random.default_rng(7)
    cases = [(2, 255, False, 40), (2, 255, True, 55), (2, 255, True, 85), (3, 2, False, 100), (2, 1, False, 100)]
    for case, (classes, high, colour, quality) in enumerate(cases):
        mask = np.zeros((37, 53), np.uint8)
        mask[5:30, 9:40] = high
        if classes == 3:
            mask[12:20, 2:9] = 1
        planes = [mask, mask, np.clip(mask.astype(int) + rng.integers(-9, 10, mask.shape), 0, 255).astype(np.uint8)]
        path = tmp_path / f"m{case}.jpg"
        cv2.imwrite(str(path), np.dstack(planes) if colour else mask, [cv2.IMWRITE_JPEG_QUALITY, quality])
        stored = cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_UNCHANGED).astype(np.float64)
        grey = np.round(stored.mean(axis=2)) if stored.ndim == 3 else stored
        levels = np.arange(classes) if classes > 2 or grey.max() <= 1 else np.array([0, 255])  # binary: 0/1 or 0/255
        nearest = np.abs(grey[..., None] - levels).argmin(axis=-1)
        reading = decode_mask(path, classes)
        assert np.array_equal(reading.mask, nearest.astype(np.uint8)), case
        assert reading.snapped == int((grey != levels[nearest]).sum()), case


def write_drive_like(root: Path, count: int = 4, size: tuple[int, int] = (48, 40), roi_size=None) -> Path:
    """DRIVE's naming: images/21_training.tif, manual/21_manual1.gif, fov/21_training_mask.gif."""
    for folder in ("images", "manual", "fov"):
        (root / folder).mkdir(parents=True)
    rng = np.random.default_rng(1)
    for n in range(21, 21 + count):
        image = rng.integers(0, 80, (*size, 3), dtype=np.uint8)
        vessel = np.zeros(size, np.uint8)
        vessel[size[0] // 2:size[0] // 2 + 2, 4:-4] = 255
        vessel[4:-4, size[1] // 3:size[1] // 3 + 2] = 255
        image[vessel > 0] = 230
        fov = np.zeros(roi_size or size, np.uint8)
        cv2.circle(fov, (fov.shape[1] // 2, fov.shape[0] // 2), min(fov.shape) // 2 - 1, 255, -1)
        cv2.imwrite(str(root / "images" / f"{n}_training.tif"), image)
        Image.fromarray(vessel).convert("P").save(root / "manual" / f"{n}_manual1.gif")
        Image.fromarray(fov).convert("P").save(root / "fov" / f"{n}_training_mask.gif")
    return root


def test_pairs_by_pattern_and_scores_inside_the_region_of_interest(tmp_path: Path) -> None:
    from segkit.components.registry import get_registry

    root = write_drive_like(tmp_path / "drive")
    dataset = get_registry().build("dataset", "folder", root=str(root), masks="manual", pair_pattern=r"^(\d+)_",
                                   roi="fov")
    assert len(dataset) == 4 and dataset.ignores
    image, mask = dataset.read(0)
    fov = np.asarray(Image.open(root / "fov" / "21_training_mask.gif").convert("L")) > 0
    assert (mask[~fov] == IGNORE).all() and set(np.unique(mask[fov]).tolist()) <= {0, 1}
    _, tensor = dataset[0]
    assert set(torch.unique(tensor).tolist()) == {0.0, 1.0, float(IGNORE)}


def test_a_pattern_matching_nothing_and_a_region_of_another_size_are_one_line_errors(tmp_path: Path) -> None:
    root = write_drive_like(tmp_path / "drive")
    out = tmp_path / "run"
    result = segkit("run", "--dataset", "folder", "--data-root", str(root), "--set", "dataset.masks=manual",
                    "--set", r"dataset.pair_pattern='^case(\d+)'", "--epochs", "1", "--out", str(out))
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert "matches none of the 4 names in the images" in result.stderr and not out.exists()
    other = write_drive_like(tmp_path / "other", roi_size=(30, 30))
    result = segkit("run", "--dataset", "folder", "--data-root", str(other), "--set", "dataset.masks=manual",
                    "--set", r"dataset.pair_pattern='^(\d+)_'", "--set", "dataset.roi=fov", "--epochs", "1",
                    "--out", str(out))
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert "region-of-interest mask" in result.stderr and "30x30" in result.stderr and not out.exists()


def test_ignored_pixels_neither_score_nor_train() -> None:
    labels = Labels()
    masks = torch.tensor([[[[0.0, 1.0, IGNORE], [1.0, IGNORE, 0.0]]]])
    logits = torch.tensor([[[[5.0, 5.0, 5.0], [-5.0, -5.0, -5.0]]]])
    # by hand, on the 4 valid pixels: predicted (1, 1, -, 0, -, 0) vs truth (0, 1, -, 1, -, 0): tp 1, fp 1, fn 1, tn 1
    accumulator = MetricAccumulator({}, labels=labels)
    accumulator.update(logits, masks)
    assert accumulator.counts().tolist() == [[1, 1, 1, 1]]
    assert mask_counts(torch.ones(1, 3, dtype=torch.bool), torch.zeros(1, 3, dtype=torch.bool),
                       torch.tensor([[True, False, True]])).tolist() == [[0, 2, 0, 0]]
    # the loss sees a confident background at ignored pixels, and no gradient flows from them
    loss_fn = torch.nn.BCEWithLogitsLoss(reduction="sum")
    live = logits.clone().requires_grad_(True)
    neutral, clean = neutral_outputs(live, masks, labels)
    assert clean.max() <= 1
    loss_fn(neutral, clean).backward()
    assert live.grad[0, 0, 0, 2] == 0 and live.grad[0, 0, 1, 1] == 0 and live.grad[0, 0, 0, 0] != 0
    softmax = Labels(("background", "a", "b"), "multiclass")
    three = torch.zeros(1, 3, 2, 3)
    out, _ = neutral_outputs(three, masks, softmax)
    assert out[0, 0, 0, 2] > 0 and out[0, 1, 0, 2] < 0 and out[0, 0, 0, 0] == 0


def test_an_ignore_label_trains_and_evaluates_end_to_end(tmp_path: Path) -> None:
    root = tmp_path / "partial"
    for folder in ("images", "masks"):
        (root / folder).mkdir(parents=True)
    rng = np.random.default_rng(2)
    for i in range(10):
        image = rng.integers(0, 60, (32, 32, 3), dtype=np.uint8)
        mask = np.full((32, 32), 128, np.uint8)  # not annotated
        mask[8:24, :] = 0
        mask[12:18, 6:26] = 255
        image[mask == 255] = 210
        cv2.imwrite(str(root / "images" / f"p{i}.png"), image)
        cv2.imwrite(str(root / "masks" / f"p{i}.png"), mask)
    out = tmp_path / "run"
    result = segkit("run", "--dataset", "folder", "--data-root", str(root), "--set", "dataset.ignore_label=128",
                    "--model", "unet", "--set", "model.width=8", "--epochs", "1", "--batch-size", "4",
                    "--set", "split.test_fraction=0", "--set", "split.val_fraction=0.3", "--out", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    result = segkit("evaluate", str(out), "--split", "val")
    assert result.returncode == 0, result.stderr[-3000:]
    per_case = pd.read_csv(out / "evaluation" / "val-per-case.csv")
    # every image has 16 annotated rows of 32 pixels: only those count
    assert len(per_case) == 3 and ((per_case["tp"] + per_case["fp"] + per_case["fn"] + per_case["tn"]) == 16 * 32).all()
