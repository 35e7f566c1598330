"""Volume datasets: the msd (Decathlon / nnU-Net raw) layout of NIfTI volumes, served to 2D models as slices."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from clihelp import segkit, segkit_here
from volumes import HIPPOCAMPUS, hippocampus_subset, write_msd

from segkit.components import get_registry
from segkit.errors import DataError
from segkit.testing import check_dataset


def build(root: Path, **params):
    return get_registry().build("dataset", "msd", root=str(root), **params)


@pytest.fixture
def hippocampus(tmp_path: Path) -> Path:
    if not (HIPPOCAMPUS / "dataset.json").is_file():
        pytest.skip(f"the hippocampus volumes are not at {HIPPOCAMPUS} (../shared/data/hippocampus beside the repo)")
    return hippocampus_subset(tmp_path / "hippocampus", count=4)


def test_real_hippocampus_cases_read_with_their_header_and_labels(hippocampus: Path) -> None:
    import nibabel as nib

    dataset = build(hippocampus)
    assert dataset.labels == ("background", "Anterior", "Posterior")
    assert dataset.channel_names == ("MRI",) and dataset.slice_channels == 1
    assert dataset.spacing == (1.0, 1.0, 1.0) and dataset.slice_axis == 2  # isotropic: the last axis
    assert dataset.slice_shape[0] % 16 == 0 and dataset.slice_shape[1] % 16 == 0
    first = dataset.cases_table.iloc[0]
    label = np.asarray(nib.load(first["label_path"]).dataobj)
    assert tuple(first["shape"]) == label.shape
    assert (dataset.index["case"] == first["case"]).sum() == label.shape[2]
    # Slice n of the case is the label volume's slice n, padded with background.
    n = int(np.argmax(label.reshape(-1, label.shape[2]).sum(axis=0)))
    image, mask = dataset.read_raw(int(np.flatnonzero((dataset.index["case"] == first["case"]).to_numpy())[n]))
    assert image.dtype == np.uint8 and image.shape == (*dataset.slice_shape, 1)
    assert np.array_equal(mask[: label.shape[0], : label.shape[1]], label[:, :, n])
    assert not mask[label.shape[0]:].any() and not mask[:, label.shape[1]:].any()
    has = dataset.index["has_lesion"].to_numpy()
    assert has.any() and not has.all()
    check_dataset(dataset)


def test_four_d_and_per_channel_files_give_the_same_slices(tmp_path: Path) -> None:
    stacked = build(write_msd(tmp_path / "4d", channels=2, layout="4d"))
    split = build(write_msd(tmp_path / "split", channels=2, layout="split"))
    assert stacked.channel_names == ("MR0", "MR1") and len(stacked) == len(split) == 3 * 12
    assert stacked.slice_axis == 2 and stacked.spacing == (2.0, 1.0, 1.0)  # the thick axis is sliced
    assert stacked.slice_shape == (32, 32)
    for i in (0, 5, 20):
        a, b = stacked.read_raw(i), split.read_raw(i)
        assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    image, _ = stacked.read_raw(5)
    assert image.shape == (32, 32, 2) and image.max() == 255  # each channel scaled by its own percentiles


def test_nnunet_raw_layout_without_a_training_list_and_float_labels(tmp_path: Path) -> None:
    root = write_msd(tmp_path / "raw", layout="split", list_training=False, label_dtype=np.float32)
    description = json.loads((root / "dataset.json").read_text())
    description["labels"] = {"background": 0, "front": 1, "back": 2}  # nnU-Net v2's name -> value form
    description["channel_names"] = description.pop("modality")
    (root / "dataset.json").write_text(json.dumps(description))
    dataset = build(root, slice_axis=0)
    assert dataset.labels == ("background", "front", "back") and dataset.slice_axis == 0
    assert sorted(dataset.cases_table["case"]) == ["vol_000", "vol_001", "vol_002"]
    assert set(np.unique(np.concatenate([dataset.read_raw(i)[1].ravel() for i in range(len(dataset))]))) == {0, 1, 2}


def _break(root: Path, how: str) -> str:
    """Damage a written dataset the way ``how`` says; the words its error must contain."""
    import nibabel as nib

    label, image = root / "labelsTr" / "vol_001.nii.gz", root / "imagesTr" / "vol_001.nii.gz"
    affine = np.diag([1.0, 1.0, 2.0, 1.0])
    if how == "label shape":
        nib.save(nib.Nifti1Image(np.zeros((20, 24, 11), np.uint8), affine), label)
        return "a label must have its image's shape"
    if how == "missing file":
        image.unlink()
        return "vol_001.nii.gz, which is not there"
    if how == "2d image":
        nib.save(nib.Nifti1Image(np.zeros((20, 24), np.float32), np.eye(4)), image)
        return "2D image"
    if how == "nan voxels":
        data = np.asarray(nib.load(image).dataobj).copy()
        data[3, 4, 5] = np.nan
        nib.save(nib.Nifti1Image(data, affine), image)
        return "NaN or infinite voxel"
    if how == "label out of range":
        data = np.asarray(nib.load(label).dataobj).copy()
        data[0, 0, 0] = 7
        nib.save(nib.Nifti1Image(data, affine), label)
        return "label value(s) [7], outside 0 .. 2"
    if how == "fractional label":
        data = np.asarray(nib.load(label).dataobj).astype(np.float32)
        data[0, 0, 0] = 0.5
        nib.save(nib.Nifti1Image(data, affine), label)
        return "not whole numbers"
    raise AssertionError(how)


@pytest.mark.parametrize("how", ["label shape", "missing file", "2d image", "nan voxels", "label out of range",
                                 "fractional label"])
def test_bad_volumes_are_refused_before_training_and_nothing_is_written(tmp_path: Path, how: str) -> None:
    root = write_msd(tmp_path / "data")
    expected = _break(root, how)
    out = tmp_path / "run"
    result = segkit_here("run", "--dataset", "msd", "--data-root", str(root), "--model", "unet", "--set",
                         "model.width=4", "--loss", "ce_dice", "--epochs", "1", "--quiet", "--out", str(out))
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and expected in result.stderr, result.stderr
    assert "vol_001" in result.stderr  # the file is named
    assert not out.exists()


def test_missing_dataset_json_says_what_layout_is_expected(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no dataset.json. Expected the Decathlon layout"):
        build(tmp_path / "empty")


def test_a_2d_model_trains_on_the_slices_and_scores_each_volume(tmp_path: Path) -> None:
    root = write_msd(tmp_path / "data", cases=6)
    out = tmp_path / "run"
    result = segkit("run", "--dataset", "msd", "--data-root", str(root), "--model", "unet", "--set", "model.width=4",
                    "--loss", "ce_dice", "--epochs", "1", "--batch-size", "16", "--quiet", "--out", str(out),
                    "--set", "split.val_fraction=0.34", "--set", "split.test_fraction=0")
    assert result.returncode == 0, result.stderr
    import pandas as pd

    splits = pd.read_csv(out / "splits.csv")
    val_cases = set(splits.loc[splits["split"] == "val", "case"])
    table = pd.read_csv(out / "evaluation" / "training-val-per-case.csv")
    assert set(table["case"]) == val_cases and len(val_cases) >= 2  # one row per validation volume
    assert (table["n_images"] == 12).all()  # all slices of a volume scored together (3D per-case Dice)
    assert {"dice_front", "dice_back"} <= set(table.columns)  # each label of dataset.json scored


def test_the_volume_conformance_check_catches_a_case_with_missing_slices(tmp_path: Path) -> None:
    from segkit.testing import check_volume_dataset

    dataset = build(write_msd(tmp_path / "data", cases=2))
    check_volume_dataset(dataset)
    dataset.index = dataset.index.iloc[1:].reset_index(drop=True)
    with pytest.raises(AssertionError, match="has 12 slices along axis 2 but the index holds 11"):
        check_volume_dataset(dataset)
