"""The LGG patients as volumes (lgg_volumes): the stacked slices of the 2D lgg dataset, for 3D and 2D runs."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from clihelp import segkit

from segkit.components import get_registry
from segkit.data.io import read_image
from segkit.errors import DataError
from segkit.testing import check_dataset


def build(name: str, root: Path):
    return get_registry().build("dataset", name, root=str(root))


def test_each_patient_is_its_lgg_slices_stacked_in_slice_number_order(lgg_small: Path) -> None:
    volumes, slices = build("lgg_volumes", lgg_small), build("lgg", lgg_small)
    assert volumes.channel_names == slices.channel_names == ("pre-contrast", "FLAIR", "post-contrast")
    assert volumes.labels == ("background", "lesion") and volumes.slice_axis == 2
    assert volumes.spacing is None  # unknown: boundary metrics in voxels, not a made-up millimetre
    assert len(volumes) == len(slices) and sorted(volumes.cases) == sorted(slices.cases)
    for row in volumes.cases_table.itertuples(index=False):
        image = volumes.read_image(tuple(row.image_paths))
        label = volumes.read_label(row.label_path, 2).array
        positions = slices.case_positions(str(row.case))
        numbers = slices.index["slice"].iloc[positions].tolist()
        assert numbers == list(range(1, len(positions) + 1))  # 10 after 9, not after 1
        pairs = [slices.read_raw(i) for i in positions]
        assert image.shape == (3, 256, 256, len(positions)) and image.dtype == np.float32
        assert np.array_equal(image, np.stack([p[0] for p in pairs], axis=-1).transpose(2, 0, 1, 3))
        assert np.array_equal(label, np.stack([p[1] for p in pairs], axis=-1))
        # the file named _10 is the tenth slice (index 9), read on its own
        tenth = read_image(Path(row.label_path) / f"{row.case}_10.tif", channels=3)
        assert np.array_equal(image[..., 9], tenth.transpose(2, 0, 1))
        # the 2D items along the last axis are lgg's slices: same masks and lesion flags, in the same order
        own = volumes.index.index[volumes.index["case"] == row.case].tolist()
        assert volumes.index["has_lesion"].iloc[own].tolist() == slices.index["has_lesion"].iloc[positions].tolist()
        for k in (0, 9, len(own) - 1):
            assert np.array_equal(volumes.read_raw(own[k])[1], pairs[k][1])
    assert volumes.index["has_lesion"].any() and not volumes.index["has_lesion"].all()
    check_dataset(volumes)  # the dataset contract, and check_volume_dataset for the volume form


def test_a_changed_mask_rebuilds_that_patient_in_the_volume_cache(lgg_copy: Path, tmp_path: Path) -> None:
    from segkit.data.volume_cache import VolumeCache

    cache = VolumeCache(build("lgg_volumes", lgg_copy), directory=tmp_path / "cache", progress=False).build()
    patient = cache.cases[1]
    mask = lgg_copy / patient / f"{patient}_3_mask.tif"
    pixels = cv2.imread(str(mask), cv2.IMREAD_UNCHANGED)
    pixels[100:110, 100:110] = 255
    cv2.imwrite(str(mask), pixels)
    again = VolumeCache(build("lgg_volumes", lgg_copy), directory=tmp_path / "cache", progress=False).build()
    assert again.built == [patient]  # only the patient whose mask changed
    assert again.label(patient)[100:110, 100:110, 2].all()


def _break(root: Path, how: str) -> str:
    """Damage patient TCGA_HT_7602_19951103 of a private copy; the words its error must contain."""
    folder = root / "TCGA_HT_7602_19951103"
    image, mask = folder / "TCGA_HT_7602_19951103_7.tif", folder / "TCGA_HT_7602_19951103_7_mask.tif"
    if how == "missing slice":
        image.unlink()
        mask.unlink()
        return "slice 7 of 1 .. 20 is missing (" + str(image)
    if how == "mask without image":
        image.unlink()
        return f"the mask {mask} has no image"
    if how == "image without mask":
        mask.unlink()
        return f"the image {image} has no mask"
    raise AssertionError(how)


@pytest.mark.parametrize("how", ["mask without image", "image without mask"])
def test_a_patient_with_an_unpaired_slice_file_is_refused_by_name(lgg_copy: Path, how: str) -> None:
    expected = _break(lgg_copy, how)
    with pytest.raises(DataError, match="^patient TCGA_HT_7602_19951103: ") as error:
        build("lgg_volumes", lgg_copy)
    assert expected in str(error.value) and "\n" not in str(error.value)


# One training and one validation patient; windows without overlap keep validation to 48 windows per patient.
TINY_3D = ("--model", "unet3d", "--set", "model.width=4", "--set", "model.stages=3", "--loss", "ce_dice",
           "--set", "train.patch_size=[64,64,8]", "--set", "train.window_overlap=0", "--epochs", "1",
           "--batch-size", "2", "--set", "train.patches_per_epoch=2", "--device", "cpu",
           "--set", "split.val_fraction=0.2", "--set", "split.test_fraction=0", "--quiet")


def test_a_missing_slice_stops_a_3d_run_before_training_and_nothing_is_written(lgg_copy: Path, tmp_path: Path) -> None:
    expected = _break(lgg_copy, "missing slice")
    out = tmp_path / "run"
    result = segkit("run", "--dataset", "lgg_volumes", "--data-root", str(lgg_copy), *TINY_3D, "--out", str(out),
                    env={"XDG_CACHE_HOME": str(tmp_path / "cache")})
    assert result.returncode == 2, result.stderr
    assert expected in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert not out.exists() and not (tmp_path / "cache").exists()


def test_a_3d_model_trains_on_the_patients_and_scores_each_in_voxels(lgg_small: Path, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    out, environment = tmp_path / "run", {"XDG_CACHE_HOME": str(tmp_path / "cache")}
    result = segkit("run", "--dataset", "lgg_volumes", "--data-root", str(lgg_small), *TINY_3D, "--out", str(out),
                    env=environment)
    assert result.returncode == 0, result.stderr
    assert any((tmp_path / "cache" / "segkit" / "volumes").iterdir())  # the cache stayed in the test's folder
    splits = pd.read_csv(out / "splits.csv")
    val_cases = set(splits.loc[splits["split"] == "val", "case"])
    table = pd.read_csv(out / "evaluation" / "training-val-per-case.csv")
    assert set(table["case"]) == val_cases and len(val_cases) == 1  # one row per validation patient
    assert (table["n_images"] == 1).all() and "dice" in table.columns  # the volume scored whole, as one item
    monkeypatch.setenv("XDG_CACHE_HOME", environment["XDG_CACHE_HOME"])  # evaluate reuses the run's volume cache
    from click.testing import CliRunner

    from segkit.cli import cli

    evaluated = CliRunner().invoke(cli, ["evaluate", str(out), "--split", "val", "--json"])  # in process: no restart
    assert evaluated.exit_code == 0, evaluated.output[-3000:]
    report = json.loads(evaluated.stdout)
    assert report["surface"]["units"] == "pixels"  # voxel units: the spacing is unknown
