"""NRRD and MetaImage volumes through SimpleITK: read like NIfTI (axis order, affine), datasets, predict outputs."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from click.testing import CliRunner
from segkit.cli import cli
from segkit.errors import ConfigError, DataError
from volumes import ellipsoid_case

sitk = pytest.importorskip("SimpleITK", reason="the NRRD/MetaImage reader needs SimpleITK (pip install 'segkit[sitk]')")

from segkit.data.nifti import read_nifti  # noqa: E402
from segkit.data.sitk_volume import read_sitk, sitk_header_shape  # noqa: E402
from segkit.data.volume_io import header_shape, read_label, read_volume  # noqa: E402


def oblique_image(array_xyz: np.ndarray) -> object:
    """A SimpleITK image of ``array_xyz`` (x, y, z) with anisotropic spacing, an origin and a rotated direction."""
    image = sitk.GetImageFromArray(np.ascontiguousarray(np.transpose(array_xyz, (2, 1, 0))))
    angle = math.radians(25)
    rotation = np.array([[math.cos(angle), -math.sin(angle), 0], [math.sin(angle), math.cos(angle), 0], [0, 0, 1]])
    image.SetDirection(tuple(rotation.ravel()))
    image.SetSpacing((0.8, 1.1, 2.5))
    image.SetOrigin((-30.0, 12.0, 5.5))
    return image


def test_nrrd_and_mha_read_like_the_same_volume_written_as_nifti(tmp_path: Path) -> None:
    """SimpleITK writes one image three ways; nibabel's NIfTI reading is the reference for order and affine."""
    array = np.random.default_rng(0).normal(size=(7, 9, 5)).astype(np.float32)
    image = oblique_image(array)
    for name in ("case.nii.gz", "case.nrrd", "case.mha"):
        sitk.WriteImage(image, str(tmp_path / name))
    reference = read_nifti(tmp_path / "case.nii.gz")
    for name in ("case.nrrd", "case.mha"):
        volume = read_volume(tmp_path / name)
        np.testing.assert_array_equal(volume.array, reference.array)
        np.testing.assert_allclose(volume.affine, reference.affine, atol=1e-5)
        np.testing.assert_allclose(volume.spacing, reference.spacing, rtol=1e-6)
        assert header_shape(tmp_path / name) == (7, 9, 5)
    np.testing.assert_array_equal(reference.array, array)  # and all of them are the array in x, y, z order


def test_vector_images_are_channels_last_and_labels_are_checked(tmp_path: Path) -> None:
    channels = np.random.default_rng(1).normal(size=(6, 5, 4, 2)).astype(np.float32)
    image = sitk.GetImageFromArray(np.ascontiguousarray(np.transpose(channels, (2, 1, 0, 3))), isVector=True)
    sitk.WriteImage(image, str(tmp_path / "two.nrrd"))
    assert sitk_header_shape(tmp_path / "two.nrrd") == (6, 5, 4, 2)
    np.testing.assert_array_equal(read_sitk(tmp_path / "two.nrrd").array, channels)

    labels = np.zeros((6, 5, 4), dtype=np.float32)
    labels[1:3, 1:3, 1:3] = 2.0  # float labels with whole values: accepted, as for NIfTI
    sitk.WriteImage(sitk.GetImageFromArray(np.transpose(labels, (2, 1, 0)).copy()), str(tmp_path / "label.mha"))
    assert read_label(tmp_path / "label.mha", classes=3).array.dtype == np.uint8
    with pytest.raises(DataError, match=r"label\.mha holds the label value\(s\) \[2\], outside 0 \.\. 1"):
        read_label(tmp_path / "label.mha", classes=2)
    (tmp_path / "broken.nrrd").write_text("not a nrrd file")
    with pytest.raises(DataError, match=r"cannot read .*broken\.nrrd"):
        read_volume(tmp_path / "broken.nrrd")


def write_nnunet_nrrd(root: Path, cases: int = 3) -> Path:
    """nnU-Net v2's raw layout in NRRD: no training list, ``file_ending`` ".nrrd", ``CASE_0000`` channel files."""
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    for k in range(cases):
        image, label = ellipsoid_case((16, 20, 10), seed=k)
        for array, path in ((image[..., 0], root / "imagesTr" / f"c{k}_0000.nrrd"), (label, root / "labelsTr" / f"c{k}.nrrd")):
            written = sitk.GetImageFromArray(np.ascontiguousarray(np.transpose(array, (2, 1, 0))))
            written.SetSpacing((1.0, 1.0, 2.0))
            sitk.WriteImage(written, str(path), True)
    (root / "labelsTr" / "stray.nii.gz").write_bytes(b"")  # not of the file_ending: not a case
    (root / "dataset.json").write_text(json.dumps({"channel_names": {"0": "MRI"}, "file_ending": ".nrrd",
                                                   "labels": {"background": 0, "front": 1, "back": 2},
                                                   "numTraining": cases}))
    return root


def test_msd_dataset_reads_an_nnunet_folder_of_nrrd_files(tmp_path: Path) -> None:
    from segkit.components import get_registry

    root = write_nnunet_nrrd(tmp_path / "raw")
    dataset = get_registry().build("dataset", "msd", root=str(root))
    assert sorted(dataset.cases_table["case"]) == ["c0", "c1", "c2"]
    assert dataset.slice_axis == 2  # the 2 mm axis
    assert dataset.spacing == (2.0, 1.0, 1.0)
    image, mask = dataset.read(0)
    assert image.shape[-1] == 1 and mask.shape == image.shape[:2]


def test_predict_writes_mha_label_maps_on_the_inputs_grid(volume_run: Path, tmp_path: Path) -> None:
    """A run trained on NIfTI predicts a MetaImage case into a MetaImage label map with the input's geometry,
    equal to the label map of the same case as NIfTI."""
    image, _ = ellipsoid_case((20, 24, 12), seed=7)
    written = oblique_image(image[..., 0])
    sitk.WriteImage(written, str(tmp_path / "case.mha"))
    sitk.WriteImage(written, str(tmp_path / "case.nii.gz"))
    for name in ("case.mha", "case.nii.gz"):
        result = CliRunner().invoke(cli, ["predict", str(volume_run), str(tmp_path / name), "--out",
                                          str(tmp_path / "out" / name.split(".")[1]), "--save-probs", "--quiet"])
        assert result.exit_code == 0, result.output
    output = sitk.ReadImage(str(tmp_path / "out" / "mha" / "case.mha"))
    assert output.GetSpacing() == pytest.approx(written.GetSpacing())
    assert output.GetOrigin() == pytest.approx(written.GetOrigin())
    assert output.GetDirection() == pytest.approx(written.GetDirection())
    assert sorted(p.name for p in (tmp_path / "out" / "mha").iterdir()) == ["case.mha", "case_prob_back.mha",
                                                                          "case_prob_front.mha"]
    from_nifti = np.asarray(nib.load(tmp_path / "out" / "nii" / "case.nii.gz").dataobj)
    np.testing.assert_array_equal(np.transpose(sitk.GetArrayFromImage(output), (2, 1, 0)), from_nifti)
    assert from_nifti.max() > 0  # the run finds the ellipsoid


def test_without_simpleitk_a_nrrd_input_says_how_to_install_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from segkit.inference.inputs import expand_all

    (tmp_path / "case.nrrd").write_bytes(b"NRRD0004\n")
    monkeypatch.setitem(sys.modules, "SimpleITK", None)  # import SimpleITK now raises ImportError
    with pytest.raises(ConfigError, match=r"needs SimpleITK: pip install 'segkit\[sitk\]'"):
        expand_all([str(tmp_path / "case.nrrd")])
