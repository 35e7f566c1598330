"""Volumes at real size, on small volumes: the slab-by-slab label map equals the whole-map one, and a volume
whose prediction cannot fit is refused before any case is read, naming what would fit."""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from click.testing import CliRunner

import segkit.memory
from clihelp import run_in_process
from segkit.cli import cli
from segkit.inference.sliding_window import slab_axis
from segkit.inference.sources import load_predictor
from segkit.inference.volume_labels import predict_label_map
from segkit.inference.volume_predict import label_volume, predict_volume, read_case
from volumes import write_msd

TINY_3D = ("--model", "unet3d", "--set", "model.width=4", "--set", "model.stages=3", "--loss", "ce_dice",
           "--set", "train.patch_size=[16,16,8]", "--set", "train.window_overlap=0.5", "--batch-size", "2",
           "--device", "cpu", "--quiet", "--epochs", "1")


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two tiny 3D runs on 30x34x14 volumes of 1 x 1 x 2 mm: on the volumes' own grid, and resampled to 1.6 mm."""
    home = tmp_path_factory.mktemp("at-scale")
    root = write_msd(home / "data", cases=4, shape=(30, 34, 14))
    saved = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(home / "cache")
    try:
        for name, extra in (("own", ()), ("resampled", ("--set", "train.target_spacing=[1.6,1.6,1.6]"))):
            run_in_process("run", "--dataset", "msd", "--data-root", str(root), *TINY_3D, *extra,
                           "--out", str(home / name))
    finally:
        if saved is None:
            os.environ.pop("XDG_CACHE_HOME", None)
        else:
            os.environ["XDG_CACHE_HOME"] = saved
    return {"data": root, "own": home / "own", "resampled": home / "resampled"}


@pytest.mark.parametrize("grid", ["own", "resampled"])
@pytest.mark.parametrize("postprocess", ["none", "lcc"])
def test_the_slab_by_slab_label_map_is_the_whole_map_one(runs: dict[str, Path], grid: str, postprocess: str) -> None:
    predictor = load_predictor(runs[grid], device="cpu")
    from segkit.inference.volume_predict import volume_settings
    from segkit.components import get_registry

    settings = volume_settings(predictor, get_registry())
    image, _, spacing = read_case([runs["data"] / "imagesTr" / "vol_001.nii.gz"], 1)
    whole = predict_volume(predictor, image.copy(), settings, spacing=spacing)
    expected = label_volume(whole, predictor.labels, predictor.threshold, settings.slice_axis, postprocess)
    labels, kept = predict_label_map(predictor, image, spacing=spacing, threshold=predictor.threshold,
                                     slice_axis=settings.slice_axis, postprocess=postprocess, keep=[1, 2])
    assert labels.dtype == np.uint8 and labels.shape == expected.shape == (30, 34, 14)
    np.testing.assert_array_equal(labels, expected)
    for k, probability in kept.items():
        np.testing.assert_allclose(probability, whole[k], atol=2e-6)


def test_a_volume_whose_prediction_cannot_fit_is_refused_before_any_case_naming_what_fits(
        runs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    small = tmp_path / "small.nii.gz"
    large = tmp_path / "large.nii.gz"
    affine = np.diag([1.0, 1.0, 2.0, 1.0])
    nib.save(nib.Nifti1Image(np.zeros((30, 34, 14), np.float32), affine), small)
    nib.save(nib.Nifti1Image(np.zeros((64, 64, 200), np.float32), affine), large)
    slab = 8 * 64 * 64  # one patch (16x16x8) deep along the last axis, the patch's smallest share
    needed = segkit.memory.volume_streamed_bytes(64 * 64 * 200, None, 1, 3, slab)
    monkeypatch.setattr(segkit.memory, "available_bytes", lambda device=None: needed // 3)
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["predict", str(runs["own"]), str(small), str(large), "--out", str(out),
                                      "--device", "cpu"])
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    message = result.output.strip().splitlines()[-1]
    assert "predicting case 'large' of the input (64x64x200 voxels, 1 channel(s)) needs at least" in message
    fits = int(message.split("a volume of at most 64x64x")[1].split(" ")[0])
    assert 1 <= fits < 200 and f"({fits} of its 200 positions along axis 2)" in message

    def streamed(slices: int) -> int:  # the slab is one patch deep along the axis where the patch is the least share
        shape = (64, 64, slices)
        axis = slab_axis(shape, (16, 16, 8))
        return segkit.memory.volume_streamed_bytes(64 * 64 * slices, None, 1, 3, (16, 16, 8)[axis] * 64 * 64 * slices
                                                   // shape[axis])

    assert streamed(200) == needed and streamed(fits) <= needed // 3 < streamed(fits + 1)
    assert not out.exists()  # nothing written, not even the small case's label map
