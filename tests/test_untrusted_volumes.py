"""Datasets, headers and labels as untrusted input: each hostile or careless file made here, refused in one line.

Every case names the offending file and entry, prints no traceback, exits with status 2 through
the real CLI where it is a security matter, and writes nothing: no run directory, no volume cache.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from segkit.components import get_registry
from segkit.errors import DataError

from clihelp import segkit
from volumes import ellipsoid_case, write_msd


def refused(result, *expected: str) -> str:  # noqa: ANN001 - a CompletedProcess or a click Result
    """The one-line error of a refused command; fails on a traceback, another exit status or a missing phrase."""
    status = getattr(result, "returncode", getattr(result, "exit_code", None))
    output = result.stderr if hasattr(result, "returncode") else result.output
    assert status == 2, (status, output[-2000:])
    assert "Traceback" not in output, output[-3000:]
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, output[-2000:]
    for phrase in expected:
        assert phrase in errors[0], (phrase, errors[0])
    return errors[0]


def in_process(*args: str, env: dict[str, str] | None = None):  # noqa: ANN201 - a click Result
    """``segkit ARGS`` in this process (no interpreter start): for the commands a test runs after the subprocess."""
    from click.testing import CliRunner
    from segkit.cli import cli

    return CliRunner().invoke(cli, list(args), env=env)


def hostile_msd(home: Path, named: str | None = None) -> Path:
    """A tiny Decathlon folder at ``home/a/b/data`` whose first training image is ``named``, and a real NIfTI
    file at ``home/outside/secret_x.nii.gz`` for it to name."""
    root = write_msd(home / "a" / "b" / "data", cases=3, shape=(12, 12, 6))
    (home / "outside").mkdir()
    shutil.copy(root / "imagesTr" / "vol_000.nii.gz", home / "outside" / "secret_x.nii.gz")
    description = json.loads((root / "dataset.json").read_text())
    description["training"][0]["image"] = named or str(home / "outside" / "secret_x.nii.gz")
    (root / "dataset.json").write_text(json.dumps(description))
    return root


# Paths a dataset file or a header names stay inside its folder -------------------------------------

def test_a_dataset_json_entry_leading_out_of_the_dataset_is_refused_by_run_inspect_and_plan(tmp_path: Path) -> None:
    root = hostile_msd(tmp_path, "../../../outside/secret_x.nii.gz")
    environment = {"XDG_CACHE_HOME": str(tmp_path / "cache")}
    expected = ("dataset.json: training[0].image names '../../../outside/secret_x.nii.gz'",
                str(tmp_path / "outside" / "secret_x.nii.gz"), f"outside the dataset's folder {root}")
    refused(segkit("run", "--dataset", "msd", "--data-root", str(root), "--model", "unet3d", "--set",
                   "train.patch_size=[8,8,8]", "--epochs", "1", "--out", str(tmp_path / "run"), "--quiet",
                   env=environment), *expected)
    refused(in_process("inspect", "--dataset", "msd", "--data-root", str(root), "--quiet"), *expected)
    refused(in_process("plan", "--dataset", "msd", "--data-root", str(root), "--out", str(tmp_path / "plan"),
                       "--quiet", env=environment), *expected)
    assert not (tmp_path / "run").exists() and not (tmp_path / "cache").exists()
    assert not (tmp_path / "plan" / "plan.toml").exists()


def test_an_absolute_path_in_dataset_json_is_refused_for_a_2d_run(tmp_path: Path) -> None:
    root = hostile_msd(tmp_path)
    secret = str(tmp_path / "outside" / "secret_x.nii.gz")
    refused(in_process("run", "--dataset", "msd", "--data-root", str(root), "--model", "unet", "--epochs", "1",
                       "--out", str(tmp_path / "run"), "--quiet"), f"training[0].image names '{secret}'", "outside")
    assert not (tmp_path / "run").exists()


def test_a_table_may_not_lead_out_of_its_root_with_dotdot_but_may_name_absolute_paths(tmp_path: Path) -> None:
    import cv2

    (tmp_path / "data" / "images").mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    image, mask = np.full((16, 16, 3), 90, np.uint8), np.zeros((16, 16), np.uint8)
    mask[4:9, 4:9] = 255
    for folder in (tmp_path / "data" / "images", tmp_path / "outside"):
        cv2.imwrite(str(folder / "a.png"), image)
        cv2.imwrite(str(folder / "a_mask.png"), mask)
    table = tmp_path / "data" / "list.csv"
    table.write_text("image,mask\nimages/a.png,images/a_mask.png\n../outside/a.png,images/a_mask.png\n")
    with pytest.raises(DataError) as info:
        get_registry().build("dataset", "csv", path=str(table))
    message = str(info.value)
    assert "\n" not in message and f"table {table}: row 3, column 'image', names '../outside/a.png'" in message
    assert f"outside the table's root folder {tmp_path / 'data'}" in message
    table.write_text(f"image,mask\nimages/a.png,images/a_mask.png\n{tmp_path / 'outside' / 'a.png'},"
                     f"{tmp_path / 'outside' / 'a_mask.png'}\n")
    assert len(get_registry().build("dataset", "csv", path=str(table))) == 2  # written out in full: the author's choice
    # a root above both folders makes the same '..' table legal
    table.write_text("image,mask\ndata/images/a.png,data/images/a_mask.png\noutside/a.png,outside/a_mask.png\n")
    assert len(get_registry().build("dataset", "csv", path=str(table), root=str(tmp_path))) == 2


def _sitk_pair(folder: Path, suffix: str) -> Path:
    """A real MetaImage (.mhd) or detached NRRD (.nhdr) volume in ``folder``: header plus its .raw data file."""
    sitk = pytest.importorskip("SimpleITK")
    folder.mkdir(parents=True, exist_ok=True)
    image, _ = ellipsoid_case((12, 12, 6), seed=1)
    volume = sitk.GetImageFromArray(np.ascontiguousarray(np.transpose(image[..., 0], (2, 1, 0))))
    volume.SetSpacing((1.0, 1.0, 2.0))
    path = folder / f"case{suffix}"
    sitk.WriteImage(volume, str(path))
    return path


@pytest.mark.parametrize(("suffix", "field", "named"), [
    (".mhd", "ElementDataFile", "../outside/case.raw"),
    (".mhd", "ElementDataFile", "/etc/passwd"),
    (".nhdr", "data file", "../outside/case.raw"),
])
def test_a_header_naming_a_data_file_outside_its_folder_is_refused_before_simpleitk_reads(
        tmp_path: Path, suffix: str, field: str, named: str) -> None:
    from segkit.data.volume_io import header_shape, read_volume

    _sitk_pair(tmp_path / "outside", suffix)
    header = _sitk_pair(tmp_path / "in", suffix)
    text = header.read_text()
    header.write_text(text.replace("case.raw", named))
    for read in (read_volume, header_shape):
        with pytest.raises(DataError) as info:
            read(header)
        message = str(info.value)
        assert "\n" not in message and message.startswith(f"{header}: {field} names '{named}'")
        assert f"outside the header's folder {tmp_path / 'in'}" in message
    header.write_text(text)  # the same header naming its own data file reads
    assert read_volume(header).array.shape == (12, 12, 6)


def test_a_dataset_of_metaimages_naming_data_outside_is_refused_before_training(tmp_path: Path) -> None:
    root = write_msd(tmp_path / "data", cases=3, shape=(12, 12, 6))
    _sitk_pair(tmp_path / "outside", ".mhd")
    header = _sitk_pair(root / "imagesTr", ".mhd")  # imagesTr/case.mhd + case.raw, then pointed outside
    header.write_text(header.read_text().replace("case.raw", "../../outside/case.raw"))
    description = json.loads((root / "dataset.json").read_text())
    description["training"][0]["image"] = "./imagesTr/case.mhd"
    (root / "dataset.json").write_text(json.dumps(description))
    refused(segkit("run", "--dataset", "msd", "--data-root", str(root), "--model", "unet", "--epochs", "1",
                   "--out", str(tmp_path / "run"), "--quiet"),
            f"{header}: ElementDataFile names '../../outside/case.raw'", "outside the header's folder")
    assert not (tmp_path / "run").exists()


def test_predict_refuses_a_metaimage_naming_etc_passwd_and_writes_nothing(volume_run: Path, tmp_path: Path) -> None:
    header = _sitk_pair(tmp_path / "in", ".mhd")
    header.write_text(header.read_text().replace("case.raw", "/etc/passwd"))
    out = tmp_path / "out"
    refused(segkit("predict", str(volume_run), str(header), "--out", str(out), "--quiet"),
            f"{header}: ElementDataFile names '/etc/passwd'", "outside the header's folder")
    assert not out.exists() or not any(out.iterdir())


# Labels and geometry --------------------------------------------------------------------------------

def _relabel(path: Path, change, dtype=None, affine=None) -> None:  # noqa: ANN001 - a function of the array
    stored = nib.load(path)
    array = np.asarray(stored.dataobj)
    array = change(array.astype(dtype or array.dtype))
    nib.save(nib.Nifti1Image(array, stored.affine if affine is None else affine), path)


@pytest.mark.parametrize("dtype", [np.uint16, np.float32])
def test_a_label_value_above_the_declared_labels_is_named_with_its_case_never_wrapped(tmp_path: Path,
                                                                                       dtype: type) -> None:
    root = write_msd(tmp_path / "data", cases=3, shape=(12, 12, 6))
    _relabel(root / "labelsTr" / "vol_001.nii.gz", lambda a: np.where(a == 2, 257, a).astype(dtype), dtype)
    with pytest.raises(DataError) as info:
        get_registry().build("dataset", "msd", root=str(root))
    message = str(info.value)
    assert "\n" not in message and message.startswith("case 'vol_001': ") and "[257]" in message
    assert "outside 0 .. 2" in message


def test_more_labels_than_8_bits_hold_are_refused_in_dataset_json(tmp_path: Path) -> None:
    root = write_msd(tmp_path / "data", cases=2, shape=(12, 12, 6))
    description = json.loads((root / "dataset.json").read_text())
    description["labels"] = {str(v): f"structure_{v}" for v in range(300)}
    (root / "dataset.json").write_text(json.dumps(description))
    with pytest.raises(DataError, match=r"dataset\.json declares 300 labels; .* at most 256"):
        get_registry().build("dataset", "msd", root=str(root))


def test_image_and_label_headers_that_disagree_on_spacing_are_refused_naming_both(tmp_path: Path) -> None:
    root = write_msd(tmp_path / "data", cases=3, shape=(12, 12, 6), spacing=(1.0, 1.0, 2.0))
    _relabel(root / "labelsTr" / "vol_002.nii.gz", lambda a: a, affine=np.diag([1.0, 1.0, 4.0, 1.0]))
    _relabel(root / "labelsTr" / "vol_000.nii.gz", lambda a: a[:, :, :5])  # and a shape mismatch in another case
    with pytest.raises(DataError) as info:
        get_registry().build("dataset", "msd", root=str(root))
    lines = str(info.value).splitlines()
    assert lines[0] == "2 of 3 cases cannot be used:"  # every case's problem, each naming its case
    assert lines[1].startswith("  - case 'vol_000': ") and "12x12x6 voxels but its label" in lines[1]
    assert lines[2].startswith("  - case 'vol_002': ") and "voxel spacing 1 x 1 x 2 mm" in lines[2]
    assert f"{root / 'labelsTr' / 'vol_002.nii.gz'} 1 x 1 x 4 mm" in lines[2]


def test_predict_never_writes_into_a_datasets_label_folder(volume_run: Path, tmp_path: Path) -> None:
    from segkit.errors import ConfigError
    from segkit.inference.output_names import refuse_label_folder

    root = tmp_path / "data"
    shutil.copytree(volume_run.parent / "data", root)
    truth = {p.name: p.read_bytes() for p in (root / "labelsTr").iterdir()}
    refused(segkit("predict", str(volume_run), str(root / "imagesTr" / "vol_000.nii.gz"), "--out",
                   str(root / "labelsTr"), "--overwrite", "--quiet"),
            f"--out {root / 'labelsTr'} is the label folder", "never writes there, even with --overwrite")
    assert {p.name: p.read_bytes() for p in (root / "labelsTr").iterdir()} == truth  # the ground truth intact
    # a folder dataset.json lists labels in, under another name, and folders below it; links followed
    description = json.loads((root / "dataset.json").read_text())
    (root / "gt").mkdir()
    description["training"][0]["label"] = "gt/vol_000.nii.gz"
    (root / "dataset.json").write_text(json.dumps(description))
    (tmp_path / "link").symlink_to(root / "labelsTr")
    for out in (root / "gt", root / "labelsTr" / "sub", tmp_path / "link"):
        with pytest.raises(ConfigError, match="label folder"):
            refuse_label_folder(out)
    for out in (root / "predictions", root, tmp_path / "elsewhere"):
        refuse_label_folder(out)  # beside the labels, or the dataset's folder itself: fine


# dataset.json and compressed volumes validated ------------------------------------------------------

@pytest.mark.parametrize(("change", "expected"), [
    (lambda d: d["training"][0].update(image=7), "training[0].image is 7 (int); it must be a path"),
    (lambda d: d["training"][1].update(image=["a", "b"]), "training[1].image is ['a', 'b'] (list)"),
    (lambda d: d["training"][0].update(label=None), "training[0].label is None (NoneType)"),
    (lambda d: d["training"][0].pop("label"), "training[0] has no 'label' (it has 'image')"),
    (lambda d: d["training"].__setitem__(1, "vol_001"), "training[1] is 'vol_001'; each entry is an object"),
    (lambda d: d.update(training={"image": "x"}), "'training' is a dict; it must be a list"),
    (lambda d: d.update(modality={"0": None}), "modality['0'] is None; a channel's name is a non-empty string"),
    (lambda d: d.update(labels={"background": 0, "whole": [1, 2]}), "labels['whole'] is [1, 2]"),
    (lambda d: d.update(file_ending=3), "'file_ending' is 3"),
], ids=["int-image", "list-image", "null-label", "missing-label", "string-entry", "dict-training", "null-modality",
        "region-labels", "int-file-ending"])
def test_a_malformed_dataset_json_names_the_file_and_the_entry(tmp_path: Path, change, expected: str) -> None:  # noqa: ANN001
    root = write_msd(tmp_path / "data", cases=2, shape=(8, 8, 4))
    description = json.loads((root / "dataset.json").read_text())
    change(description)
    (root / "dataset.json").write_text(json.dumps(description))
    result = in_process("inspect", "--dataset", "msd", "--data-root", str(root), "--quiet")
    refused(result, f"{root / 'dataset.json'}: {expected}")


def test_a_compressed_volume_failing_its_checksum_is_named_and_never_trained_on(tmp_path: Path) -> None:
    from segkit.data.volume_io import read_volume

    root = write_msd(tmp_path / "data", cases=3, shape=(12, 12, 6))
    path = root / "imagesTr" / "vol_001.nii.gz"
    original = np.asarray(nib.load(path).dataobj)
    damaged = bytearray(path.read_bytes())
    middle = len(damaged) // 2
    damaged[middle:middle + 64] = bytes(64)  # 64 bytes overwritten in the middle: gzip's CRC no longer holds
    path.write_bytes(bytes(damaged))
    with pytest.raises(DataError) as info:
        read_volume(path)
    assert str(info.value).startswith(f"{path} is a damaged gzip file") and "\n" not in str(info.value)
    try:  # what nibabel alone reads: no error, and wrong voxels (what used to be trained on)
        silently = np.asarray(nib.load(path).dataobj)
        assert (silently != original).any()
    except Exception:  # noqa: BLE001 - a nibabel that checks the stream itself is fine too
        pass
    out = tmp_path / "run"
    result = in_process("run", "--dataset", "msd", "--data-root", str(root), "--model", "unet3d", "--set",
                        "train.patch_size=[8,8,8]", "--epochs", "1", "--out", str(out), "--quiet",
                        env={"XDG_CACHE_HOME": str(tmp_path / "cache")})
    refused(result, f"{path} is a damaged gzip file")
    assert not out.exists() and not (tmp_path / "cache").exists()


# Labels out of range before training ---------------------------------------------------------------

def test_a_label_value_9_stops_a_3d_run_before_training_in_one_line(tmp_path: Path) -> None:
    root = write_msd(tmp_path / "data", cases=3, shape=(12, 12, 6))
    _relabel(root / "labelsTr" / "vol_002.nii.gz", lambda a: np.where(a == 2, 9, a))
    out = tmp_path / "run"
    result = in_process("run", "--dataset", "msd", "--data-root", str(root), "--model", "unet3d", "--loss", "ce_dice",
                        "--set", "train.patch_size=[8,8,8]", "--epochs", "1", "--out", str(out), "--quiet",
                        env={"XDG_CACHE_HOME": str(tmp_path / "cache")})
    refused(result, "case 'vol_002': ", "label value(s) [9], outside 0 .. 2")
    assert "multiclass target" not in result.output
    assert not out.exists() and not (tmp_path / "cache").exists()


def test_a_plugin_read_label_that_checks_nothing_is_caught_by_the_dataset_and_the_cache(tmp_path: Path) -> None:
    from segkit.data.volume import VolumeDataset
    from segkit.data.volume_cache import VolumeCache
    from segkit.data.volume_io import Volume

    root = write_msd(tmp_path / "data", cases=2, shape=(12, 12, 6))
    dataset = get_registry().build("dataset", "msd", root=str(root))

    class Unchecked(VolumeDataset):
        """A plugin that reads labels its own way and never compares them with its labels."""

        def read_label(self, path: str, classes: int) -> Volume:
            array = np.asarray(nib.load(path).dataobj).astype(np.int16)
            return Volume(np.where(array == 2, 9, array), np.eye(4), (1.0, 1.0, 2.0), Path(path))

    table = dataset.cases_table[["case", "image_paths", "label_path"]]
    with pytest.raises(DataError, match=r"^2 of 2 cases cannot be used:\n  - case 'vol_000': .* label value 9, "):
        Unchecked(table, channels=dataset.channel_names, labels=dataset.labels)
    # read_label changed after the dataset was built (a file replaced meanwhile): the cache still refuses it
    dataset.read_label = Unchecked.read_label.__get__(dataset)
    with pytest.raises(DataError, match=r"^case 'vol_000': its label .* holds the label value 9, outside the 3 labels"):
        VolumeCache(dataset, directory=tmp_path / "cache", progress=False).build()
    assert not list((tmp_path / "cache").glob("*.np?"))  # nothing of it cached
