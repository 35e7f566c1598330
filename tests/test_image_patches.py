"""2D patch training (train.patch_size = [h, w]): images at their own sizes, seeded foreground-oversampled crops,
whole-image validation, evaluate, predict and export by sliding windows of the patch."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch

from clihelp import run_in_process, segkit
from segkit.data.image_patches import WithPatchCrop, foreground_pixels
from segkit.errors import ConfigError

SIZES = [(40, 56), (64, 48), (52, 52), (36, 70)]


def write_mixed_folder(root: Path, count: int = 12) -> Path:
    """Images of four sizes, each with a thin (2-pixel) bright line and its mask."""
    rng = np.random.default_rng(0)
    for folder in ("images", "masks"):
        (root / folder).mkdir(parents=True)
    for i in range(count):
        h, w = SIZES[i % len(SIZES)]
        image = rng.integers(0, 60, (h, w, 3), dtype=np.uint8)
        mask = np.zeros((h, w), np.uint8)
        row = int(rng.integers(4, h - 6))
        mask[row:row + 2, 3:w - 3] = 255
        image[mask > 0] = 220
        cv2.imwrite(str(root / "images" / f"im{i:02d}.png"), image)
        cv2.imwrite(str(root / "masks" / f"im{i:02d}.png"), mask)
    return root


def test_the_crop_is_reproducible_from_the_items_seed_and_keeps_the_dtype() -> None:
    image = np.arange(60 * 80 * 3, dtype=np.float32).reshape(60, 80, 3)  # every value once
    mask = np.zeros((60, 80), np.uint8)
    crop = WithPatchCrop((32, 24), foreground_fraction=0.0)
    crop.set_random_seed(7)
    first = crop(image=image, mask=mask)
    crop.set_random_seed(7)
    again = crop(image=image, mask=mask)
    assert first["image"].shape == (32, 24, 3) and first["image"].dtype == np.float32 and first["mask"].shape == (32, 24)
    assert np.array_equal(first["image"], again["image"])
    crop.set_random_seed(8)
    assert not np.array_equal(crop(image=image, mask=mask)["image"], first["image"])
    # the patch is a window of the image itself
    (top, left), = np.argwhere(image[:, :, 0] == first["image"][0, 0, 0])
    assert np.array_equal(image[top:top + 32, left:left + 24], first["image"])


def test_foreground_oversampling_places_every_patch_on_a_label() -> None:
    mask = np.zeros((200, 200), np.uint8)
    mask[150:153, 20:23] = 1  # one small label
    mask[10, 190] = 2         # and a second, one pixel: drawn as often as the first
    image = np.zeros((200, 200, 1), np.uint8)
    crop = WithPatchCrop((16, 16), foreground_fraction=1.0)
    hits = {1: 0, 2: 0}
    for seed in range(60):
        crop.set_random_seed(seed)
        patch = crop(image=image, mask=mask)["mask"]
        present = set(np.unique(patch).tolist()) - {0}
        assert present, f"seed {seed}: a foreground patch without foreground"
        for label in present:
            hits[label] += 1
    assert hits[1] > 15 and hits[2] > 15
    assert set(foreground_pixels(mask)) == {1, 2}
    assert set(foreground_pixels(mask, ignore=[2])) == {1}


def test_an_image_smaller_than_the_patch_is_padded_centred() -> None:
    image = np.full((10, 30, 3), 200, np.uint8)
    mask = np.ones((10, 30), np.uint8)
    out = WithPatchCrop((16, 16), foreground_fraction=0.0)(image=image, mask=mask)
    assert out["image"].shape == (16, 16, 3)
    assert (out["image"][:3] == 0).all() and (out["image"][3:13] == 200).all() and (out["image"][13:] == 0).all()
    assert out["mask"][3:13].all() and not out["mask"][:3].any()


def test_patch_settings_that_cannot_work_are_refused(tmp_path: Path) -> None:
    result = segkit("run", "--set", "train.patch_size=[32,32]", "--image-size", "64", "--epochs", "1",
                    "--out", str(tmp_path / "run"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "choose one" in result.stderr and not (tmp_path / "run").exists()
    result = segkit("run", "--set", "train.patch_size=[32]", "--out", str(tmp_path / "run"))
    assert result.returncode == 2 and "two positive integers" in result.stderr


@pytest.fixture(scope="module")
def patch_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("patches")
    data = write_mixed_folder(base / "data")
    run = base / "run"
    run_in_process("run", "--dataset", "folder", "--data-root", str(data), "--model", "unet", "--set", "model.width=8",
                   "--set", "train.patch_size=[32,32]", "--set", "train.foreground_fraction=0.5", "--epochs", "2",
                   "--batch-size", "4", "--set", "split.val_fraction=0.25", "--set", "split.test_fraction=0",
                   "--out", str(run), "--quiet")
    return run, data


def test_a_patch_run_trains_on_patches_and_validates_whole_images_of_any_size(patch_run) -> None:
    run, _data = patch_run
    payload = torch.load(run / "checkpoints" / "best.pt", weights_only=True)
    assert payload["preprocessing"]["patch_size"] == [32, 32] and payload["preprocessing"]["image_size"] == 0
    # evaluate scores the validation images as training's validation did, by sliding windows over each whole image
    summary = json.loads((run / "summary.json").read_text())
    output = run_in_process("evaluate", str(run), "--split", "val")
    table = pd.read_csv(run / "evaluation" / "val-per-case.csv")
    assert len(table) == 3  # a quarter of 12 images, each its own case
    pooled = table["tp"].sum() * 2 / (table["tp"].sum() * 2 + table["fp"].sum() + table["fn"].sum())
    assert abs(pooled - float(summary["best_global"]["dice"])) < 1e-6, output


def test_predict_and_the_onnx_export_slide_windows_over_each_image_at_its_size(patch_run, tmp_path: Path) -> None:
    run, data = patch_run
    images = sorted((data / "images").glob("*.png"))[:4]
    out = tmp_path / "masks"
    run_in_process("predict", str(run), *map(str, images), "--out", str(out), "--save-probs")
    for image in images:
        written = cv2.imread(str(out / image.name), cv2.IMREAD_UNCHANGED)
        assert written.shape == cv2.imread(str(image)).shape[:2]
    onnx = tmp_path / "model.onnx"
    run_in_process("export", str(run), "--out", str(onnx))
    from segkit.inference.onnx_file import read_onnx_metadata

    metadata = read_onnx_metadata(onnx)
    assert json.loads(metadata["patch_size"]) == [32, 32] and "sliding windows" in metadata["input"]
    from_onnx = tmp_path / "onnx-masks"
    run_in_process("predict", str(onnx), *map(str, images), "--out", str(from_onnx), "--save-probs")
    for image in images:
        a = cv2.imread(str(out / f"{image.stem}_prob.png"), cv2.IMREAD_UNCHANGED).astype(int)
        b = cv2.imread(str(from_onnx / f"{image.stem}_prob.png"), cv2.IMREAD_UNCHANGED).astype(int)
        assert np.abs(a - b).max() <= 70  # 16-bit probabilities: within 0.1%


def test_the_device_loader_is_refused_for_patches(tmp_path: Path) -> None:
    from segkit.config import resolve_config, validate_config
    from segkit.components.registry import get_registry
    from segkit.train.device_loader import choose_loader

    document = resolve_config(sets=["train.patch_size=[32,32]", "train.loader=\"device\""])
    config = validate_config(document, get_registry())
    with pytest.raises(ConfigError, match="train.loader = workers"):
        choose_loader(config, None, torch.device("cpu"))
