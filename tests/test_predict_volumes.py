"""``segkit predict`` on NIfTI volumes with a 2D run trained on volumes: label maps on the input's grid."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from segkit.cli import cli
from volumes import ellipsoid_case


def predict(*args: str) -> tuple[int, str]:
    """``segkit predict ARGS --quiet`` in this process: exit status and everything it printed."""
    result = CliRunner().invoke(cli, ["predict", *args, "--quiet"])
    return result.exit_code, result.output


def data_of(run: Path) -> Path:
    return run.parent / "data"


def val_case(run: Path) -> str:
    splits = pd.read_csv(run / "splits.csv")
    return str(splits.loc[splits["split"] == "val", "case"].iloc[0])


def array(path: Path) -> np.ndarray:
    return np.asarray(nib.load(path).dataobj)


def oblique_affine() -> np.ndarray:
    """Rotated 30 degrees about z, x flipped, voxels 2 mm x 1 mm x 3 mm, shifted."""
    angle = math.radians(30)
    rotation = np.array([[math.cos(angle), -math.sin(angle), 0], [math.sin(angle), math.cos(angle), 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag([-2.0, 1.0, 3.0])
    affine[:3, 3] = [40.0, -12.5, 7.0]
    return affine


def write_oblique(path: Path, data: np.ndarray) -> nib.Nifti1Image:
    image = nib.Nifti1Image(data, None)
    image.set_qform(oblique_affine(), code=1)  # scanner
    image.set_sform(oblique_affine(), code=2)  # aligned
    image.header.set_xyzt_units("mm", "sec")
    nib.save(image, path)
    return nib.load(path)


def probabilities_from_training_slices(run: Path, case: str) -> np.ndarray:
    """``case``'s probabilities ``(channels, X, Y, Z)`` as the run's training data served it: the dataset's padded
    (and, with 2.5D context, stacked) slices along its axis, each predicted on its own, the padding cropped."""
    import torch

    from segkit.components import get_registry
    from segkit.inference.sources import load_predictor
    from segkit.tomlio import read_toml

    spec = dict(read_toml(run / "config.toml")["dataset"])
    dataset = get_registry().build("dataset", spec.pop("name"), **spec)
    images = np.stack([dataset.read(i)[0] for i in dataset.case_positions(case)])
    probabilities = load_predictor(run).probabilities(torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0)
    shape = dataset.cases_table.set_index("case").loc[case, "shape"]
    in_plane = [n for axis, n in enumerate(shape) if axis != dataset.slice_axis]
    cropped = probabilities.numpy()[:, :, :in_plane[0], :in_plane[1]]  # (slices, channels, a, b)
    return np.moveaxis(np.moveaxis(cropped, 1, 0), 1, dataset.slice_axis + 1)


def label_map_from_training_slices(run: Path, case: str) -> np.ndarray:
    """The most probable label of every voxel of :func:`probabilities_from_training_slices` (softmax runs)."""
    return probabilities_from_training_slices(run, case).argmax(axis=0)


def test_label_map_matches_the_runs_own_slices_and_evaluation(volume_run: Path, tmp_path: Path) -> None:

    case = val_case(volume_run)
    source = data_of(volume_run) / "imagesTr" / f"{case}.nii.gz"
    code, output = predict(str(volume_run), str(source), "--out", str(tmp_path / "out"), "--postprocess", "none")
    assert code == 0, output
    predicted = array(tmp_path / "out" / f"{case}.nii.gz")
    truth = array(data_of(volume_run) / "labelsTr" / f"{case}.nii.gz")
    assert predicted.dtype == np.uint8 and predicted.shape == truth.shape == (20, 24, 12)
    assert set(np.unique(predicted)) <= {0, 1, 2}

    expected = label_map_from_training_slices(volume_run, case)
    assert np.array_equal(predicted, expected), f"{int((predicted != expected).sum())} voxels differ"
    assert len(np.unique(predicted)) >= 2  # not one label everywhere: a wrong axis or flip would show

    # The run's own validation of that case counts the same true positives and misses per label.
    table = pd.read_csv(volume_run / "evaluation" / "training-val-per-case.csv").set_index("case")
    for value, name in ((1, "front"), (2, "back")):
        assert table.loc[case, f"tp_{name}"] == int(((predicted == value) & (truth == value)).sum())
        assert table.loc[case, f"fn_{name}"] == int(((predicted != value) & (truth == value)).sum())


def test_oblique_affine_header_and_probabilities_are_kept(volume_run: Path, tmp_path: Path) -> None:
    image, _ = ellipsoid_case((20, 24, 12), seed=7)
    source = write_oblique(tmp_path / "oblique.nii.gz", image[..., 0])
    code, output = predict(str(volume_run), str(tmp_path / "oblique.nii.gz"), "--out", str(tmp_path / "out"),
                           "--save-probs")
    assert code == 0, output
    written = nib.load(tmp_path / "out" / "oblique.nii.gz")
    assert np.array_equal(written.affine, source.affine)
    assert np.allclose(written.affine, oblique_affine(), atol=1e-5)
    header, original = written.header, source.header
    assert np.array_equal(header.get_qform(), original.get_qform()) and np.array_equal(header.get_sform(),
                                                                                       original.get_sform())
    assert (int(header["qform_code"]), int(header["sform_code"])) == (1, 2)
    assert np.allclose(header.get_zooms(), (2.0, 1.0, 3.0)) and header.get_xyzt_units() == ("mm", "sec")
    assert written.get_data_dtype() == np.uint8 and written.shape == (20, 24, 12)
    labels = np.asarray(written.dataobj)
    assert set(np.unique(labels)) <= {0, 1, 2}
    front, back = (nib.load(tmp_path / "out" / f"oblique_prob_{n}.nii.gz") for n in ("front", "back"))
    for prob in (front, back):
        assert prob.shape == (20, 24, 12) and prob.get_data_dtype() == np.float32
        assert np.array_equal(prob.affine, source.affine)
    stacked = np.stack([np.asarray(front.dataobj), np.asarray(back.dataobj)])
    assert stacked.min() >= 0 and stacked.sum(axis=0).max() <= 1 + 1e-5
    background = 1 - stacked.sum(axis=0)
    assert np.array_equal(np.concatenate([background[None], stacked]).argmax(axis=0), labels)


def test_4d_and_channel_files_give_the_3d_files_label_map(volume_run: Path, tmp_path: Path) -> None:
    volume = nib.load(data_of(volume_run) / "imagesTr" / "vol_000.nii.gz")
    data = np.asarray(volume.dataobj)
    inputs = tmp_path / "in"
    inputs.mkdir()
    nib.save(nib.Nifti1Image(data, volume.affine, volume.header), inputs / "plain.nii.gz")
    nib.save(nib.Nifti1Image(data[..., None], volume.affine), inputs / "stacked.nii.gz")  # 4D, one channel
    nib.save(nib.Nifti1Image(data, volume.affine), inputs / "split_0000.nii.gz")  # nnU-Net's channel files
    code, output = predict(str(volume_run), str(inputs), "--out", str(tmp_path / "out"))
    assert code == 0, output
    assert "wrote 3 label map(s)" in output
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["plain.nii.gz", "split.nii.gz", "stacked.nii.gz"]
    plain = array(tmp_path / "out" / "plain.nii.gz")
    stacked = nib.load(tmp_path / "out" / "stacked.nii.gz")
    assert stacked.shape == (20, 24, 12) and int(stacked.header["dim"][0]) == 3  # the spatial part of a 4D header
    assert np.array_equal(np.asarray(stacked.dataobj), plain)
    assert np.array_equal(array(tmp_path / "out" / "split.nii.gz"), plain)


def test_decathlon_folder_prefers_imagesTs_and_lcc_keeps_one_component_per_label(volume_run: Path,
                                                                                 tmp_path: Path) -> None:
    from scipy import ndimage

    root = tmp_path / "decathlon"
    shutil.copytree(data_of(volume_run), root)
    code, output = predict(str(volume_run), str(root), "--out", str(tmp_path / "tr"))
    assert code == 0, output
    assert sorted(p.name for p in (tmp_path / "tr").iterdir()) == [f"vol_00{k}.nii.gz" for k in range(4)]
    (root / "imagesTs").mkdir()
    shutil.copy(root / "imagesTr" / "vol_001.nii.gz", root / "imagesTs" / "test_001.nii.gz")
    code, output = predict(str(volume_run), str(root), "--out", str(tmp_path / "ts"), "--postprocess", "lcc")
    assert code == 0, output
    assert [p.name for p in (tmp_path / "ts").iterdir()] == ["test_001.nii.gz"]
    kept, plain = array(tmp_path / "ts" / "test_001.nii.gz"), array(tmp_path / "tr" / "vol_001.nii.gz")
    structure = np.zeros((3, 3, 3), bool)  # 8-connected within a slice (axis 2 here), face-connected across
    structure[:, :, 1] = True
    structure[1, 1, :] = True
    expected = np.zeros_like(plain)
    for value in (1, 2):  # each label's largest component, found by scipy in the unprocessed map
        components, count = ndimage.label(plain == value, structure=structure)
        if count:
            expected[components == 1 + int(np.argmax(np.bincount(components.ravel())[1:]))] = value
    assert np.array_equal(kept, expected)


def test_lcc_keeps_each_labels_largest_component_across_slices() -> None:
    from segkit.inference.volume_predict import label_volume
    from segkit.labels import Labels

    labels = Labels(("background", "front", "back"), "multiclass")
    probabilities = np.zeros((3, 10, 12, 6), np.float32)
    probabilities[0] = 1.0
    blobs = {1: [(slice(0, 3), slice(0, 3), slice(0, 4)), (slice(6, 8), slice(6, 8), slice(0, 1))],  # 36 and 4 voxels
             2: [(slice(0, 2), slice(8, 12), slice(4, 6)), (slice(5, 10), slice(0, 4), slice(5, 6))]}  # 16 and 20
    for value, places in blobs.items():
        for place in places:
            probabilities[(0, *place)] = 0.0
            probabilities[(value, *place)] = 1.0
    plain = label_volume(probabilities, labels, 0.5, slice_axis=2)
    assert [int((plain == v).sum()) for v in (1, 2)] == [40, 36]
    kept = label_volume(probabilities, labels, 0.5, slice_axis=2, postprocess="lcc")
    assert [int((kept == v).sum()) for v in (1, 2)] == [36, 20]
    assert kept[7, 7, 0] == 0 and kept[0, 9, 4] == 0 and kept[6, 1, 5] == 2
    # Touching only by a corner across slices is not connected (face-connected across slices, as predict's 2D path).
    diagonal = probabilities.copy()
    diagonal[:, :, :, :] = 0.0
    diagonal[0] = 1.0
    for z, (x, y) in enumerate([(1, 1), (2, 2)]):
        diagonal[0, x, y, z], diagonal[1, x, y, z] = 0.0, 1.0
    assert int((label_volume(diagonal, labels, 0.5, 2, "lcc") == 1).sum()) == 1


def test_nan_voxels_fail_that_case_naming_the_file(volume_run: Path, tmp_path: Path) -> None:
    image, _ = ellipsoid_case((20, 24, 12), seed=3)
    data = image[..., 0].copy()
    data[2, 3, 4] = np.nan
    (tmp_path / "in").mkdir()
    nib.save(nib.Nifti1Image(data, np.eye(4)), tmp_path / "in" / "broken.nii.gz")
    nib.save(nib.Nifti1Image(image[..., 0], np.eye(4)), tmp_path / "in" / "fine.nii.gz")
    code, output = predict(str(volume_run), str(tmp_path / "in"), "--out", str(tmp_path / "out"))
    assert code == 1, output
    assert "broken.nii.gz holds 1 NaN or infinite voxel(s)" in output and "Traceback" not in output
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["fine.nii.gz"]


def _bad_input(kind: str, run: Path, tmp_path: Path) -> tuple[list[str], str]:
    """Arguments for a bad call and the words its one-line error must hold."""
    image, _ = ellipsoid_case((20, 24, 12), seed=5, channels=2)
    if kind == "channels":
        for c in range(2):
            nib.save(nib.Nifti1Image(image[..., c], np.eye(4)), tmp_path / f"two_{c:04d}.nii.gz")
        return [str(tmp_path / "two_0000.nii.gz"), str(tmp_path / "two_0001.nii.gz")], \
            "two_0000.nii.gz gives 2 channel(s) but the run (trained on 'msd') takes 1"
    if kind == "4d channels":
        nib.save(nib.Nifti1Image(image, np.eye(4)), tmp_path / "two.nii.gz")
        return [str(tmp_path / "two.nii.gz")], "two.nii.gz gives 2 channel(s)"
    if kind == "mixed":
        import cv2

        cv2.imwrite(str(tmp_path / "slice.png"), np.zeros((8, 8), np.uint8))
        return [str(tmp_path / "slice.png"), str(data_of(run) / "imagesTr" / "vol_000.nii.gz")], \
            "the inputs mix 1 2D image(s) (e.g. 'slice.png') and 1 volume(s)"
    if kind == "2d image in nifti":
        nib.save(nib.Nifti1Image(image[:, :, 0, 0], np.eye(4)), tmp_path / "flat.nii.gz")
        return [str(tmp_path / "flat.nii.gz")], "flat.nii.gz has shape (20, 24); a case is one 3D volume"
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["channels", "4d channels", "mixed", "2d image in nifti"])
def test_bad_inputs_are_one_line_errors_and_nothing_is_written(volume_run: Path, tmp_path: Path, kind: str) -> None:
    args, expected = _bad_input(kind, volume_run, tmp_path)
    code, output = predict(str(volume_run), *args, "--out", str(tmp_path / "out"))
    assert code == 2, output
    assert output.startswith("error: ") and expected in output and len(output.strip().splitlines()) == 1, output
    assert not (tmp_path / "out").exists()


def test_a_run_trained_on_2d_images_refuses_volumes_naming_its_data(trained_run: Path, volume_run: Path,
                                                                    tmp_path: Path) -> None:
    code, output = predict(str(trained_run), str(data_of(volume_run) / "imagesTr" / "vol_000.nii.gz"),
                           "--out", str(tmp_path / "out"))
    assert code == 2, output
    assert "trained on the 'synthetic' dataset of 2D images" in output and "--dataset msd" in output, output
    assert not (tmp_path / "out").exists()


def _moved_data_run(run: Path, target: Path, slice_axis: int | None,
                    record: tuple[int, list[int]] | None = None, forget: bool = False) -> Path:
    """A copy of ``run`` whose checkpoints say its training data lie where there are none; ``slice_axis`` set in
    its dataset configuration, ``record`` (axis, slice shape) written into its checkpoints' preprocessing;
    ``forget``: the recorded slicing removed, as in checkpoints written before runs recorded it."""
    from segkit.runs.checkpoint import load_checkpoint, save_checkpoint

    shutil.copytree(run, target)
    for checkpoint in (target / "checkpoints").glob("*.pt"):
        payload = load_checkpoint(checkpoint)
        payload["config"]["dataset"]["root"] = str(target / "gone")
        if slice_axis is not None:
            payload["config"]["dataset"]["slice_axis"] = slice_axis
        if record is not None:
            payload["preprocessing"].update(slice_axis=record[0], slice_shape=record[1])
        if forget:
            payload["preprocessing"].pop("slice_axis", None)
            payload["preprocessing"].pop("slice_shape", None)
        save_checkpoint(checkpoint, payload)
    return target


def test_without_its_training_data_a_run_predicts_from_its_recorded_slicing(volume_run: Path, tmp_path: Path) -> None:
    source = str(data_of(volume_run) / "imagesTr" / "vol_001.nii.gz")
    code, output = predict(str(volume_run), source, "--out", str(tmp_path / "reference"))
    assert code == 0, output
    current = _moved_data_run(volume_run, tmp_path / "current", slice_axis=None)  # records its slicing
    code, output = predict(str(current), source, "--out", str(tmp_path / "current-out"))
    assert code == 0, output
    assert np.array_equal(array(tmp_path / "current-out" / "vol_001.nii.gz"),
                          array(tmp_path / "reference" / "vol_001.nii.gz"))
    chosen = _moved_data_run(volume_run, tmp_path / "chosen", slice_axis=None, forget=True)
    code, output = predict(str(chosen), source, "--out", str(tmp_path / "out"))
    assert code == 2 and "records no slice axis" in output and "dataset.slice_axis" in output, output
    assert not (tmp_path / "out").exists()
    recorded = _moved_data_run(volume_run, tmp_path / "recorded", slice_axis=2, forget=True)
    code, output = predict(str(recorded), source, "--out", str(tmp_path / "out"))
    assert code == 0, output  # 20x24 slices padded to 32x32, as in training
    assert np.array_equal(array(tmp_path / "out" / "vol_001.nii.gz"), array(tmp_path / "reference" / "vol_001.nii.gz"))


def test_real_hippocampus_cases_keep_their_header_and_larger_slices_are_padded(volume_run: Path,
                                                                               tmp_path: Path) -> None:
    from volumes import HIPPOCAMPUS, hippocampus_subset

    if not (HIPPOCAMPUS / "dataset.json").is_file():
        pytest.skip(f"the hippocampus volumes are not at {HIPPOCAMPUS} (../shared/data/hippocampus beside the repo)")
    root = hippocampus_subset(tmp_path / "hippocampus", count=2)
    code, output = predict(str(volume_run), str(root), "--out", str(tmp_path / "out"), "--save-probs")
    assert code == 0, output
    for source in sorted((root / "imagesTr").iterdir()):
        original = nib.load(source)
        written = nib.load(tmp_path / "out" / source.name)
        assert written.shape == original.shape and max(original.shape[:2]) > 32  # wider than the training slices
        assert np.array_equal(written.affine, original.affine)
        for key in ("qform_code", "sform_code", "pixdim", "xyzt_units", "quatern_b", "srow_x"):
            assert np.array_equal(written.header[key], original.header[key]), key
        assert set(np.unique(np.asarray(written.dataobj))) <= {0, 1, 2}
        name = source.name[: -len(".nii.gz")]
        assert nib.load(tmp_path / "out" / f"{name}_prob_front.nii.gz").shape == original.shape


def test_binary_and_multilabel_models_threshold_each_label() -> None:
    from segkit.inference.volume_predict import label_volume
    from segkit.labels import Labels

    probabilities = np.linspace(0, 1, 2 * 3 * 4, dtype=np.float32).reshape(1, 2, 3, 4)
    binary = label_volume(probabilities, Labels(), 0.7, slice_axis=0)
    assert binary.dtype == np.uint8 and np.array_equal(binary, (probabilities[0] >= 0.7).astype(np.uint8))
    multilabel = Labels(("background", "a", "b"), "multilabel")
    both = np.stack([probabilities[0], 1 - probabilities[0]])  # a where high, b where low, both in the middle
    labels = label_volume(both, multilabel, 0.4, slice_axis=1)
    expected = np.where(both[1] >= 0.4, 2, np.where(both[0] >= 0.4, 1, 0))  # the higher label wins an overlap
    assert np.array_equal(labels, expected) and set(np.unique(labels)) == {1, 2}


def test_a_run_with_2_5d_context_stacks_the_neighbouring_slices_as_in_training(volume_run: Path,
                                                                               tmp_path: Path) -> None:
    from clihelp import run_in_process

    run = tmp_path / "context"
    run_in_process("run", "--dataset", "msd", "--data-root", str(data_of(volume_run)), "--set", "dataset.context=1",
                   "--model", "unet", "--set", "model.width=4", "--loss", "ce_dice", "--epochs", "12", "--lr", "0.01",
                   "--batch-size", "4", "--augment", "none", "--quiet", "--out", str(run))
    source = data_of(volume_run) / "imagesTr" / "vol_002.nii.gz"
    code, output = predict(str(run), str(source), "--out", str(tmp_path / "out"), "--save-probs")
    assert code == 0, output
    expected = probabilities_from_training_slices(run, "vol_002")
    for channel, name in ((1, "front"), (2, "back")):
        written = array(tmp_path / "out" / f"vol_002_prob_{name}.nii.gz")
        assert np.allclose(written, expected[channel], atol=1e-6)
        assert written.std() > 1e-3  # a map that varies, so a neighbour in the wrong place would show
    assert np.array_equal(array(tmp_path / "out" / "vol_002.nii.gz"), expected.argmax(axis=0))


def test_a_run_that_records_its_slicing_needs_no_training_data(volume_run: Path, tmp_path: Path) -> None:
    source = str(data_of(volume_run) / "imagesTr" / "vol_001.nii.gz")
    code, output = predict(str(volume_run), source, "--out", str(tmp_path / "reference"))
    assert code == 0, output
    recorded = _moved_data_run(volume_run, tmp_path / "recorded", slice_axis=None, record=(2, [32, 32]))
    code, output = predict(str(recorded), source, "--out", str(tmp_path / "out"))
    assert code == 0, output
    assert np.array_equal(array(tmp_path / "out" / "vol_001.nii.gz"), array(tmp_path / "reference" / "vol_001.nii.gz"))
    wrong = _moved_data_run(volume_run, tmp_path / "wrong", slice_axis=None, record=(0, [32, 32]))
    code, output = predict(str(wrong), source, "--out", str(tmp_path / "wrong-out"))
    assert code == 0, output  # sliced along another axis: a different map, so the recorded axis is what is used
    assert not np.array_equal(array(tmp_path / "wrong-out" / "vol_001.nii.gz"),
                              array(tmp_path / "reference" / "vol_001.nii.gz"))
