"""3D runs end to end: a 3D U-Net trained on patches of volumes, validated and evaluated on whole volumes."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from clihelp import run_in_process, segkit
from volumes import HIPPOCAMPUS, hippocampus_subset, write_msd

TINY_3D = ("--model", "unet3d", "--set", "model.width=4", "--set", "model.stages=3", "--loss", "ce_dice",
           "--set", "train.patch_size=[16,16,8]", "--set", "train.window_overlap=0.25", "--batch-size", "2",
           "--device", "cpu", "--quiet")


def _environment(tmp_path: Path) -> dict[str, str]:
    """The volume cache goes under the test's own folder, not the user's ~/.cache."""
    return {"XDG_CACHE_HOME": str(tmp_path / "cache")}


@pytest.fixture(scope="module")
def patch_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """One tiny 3D run shared by this module's tests (those that change it copy it first)."""
    import os

    home = tmp_path_factory.mktemp("patch-run")
    root = write_msd(home / "data", cases=6, shape=(20, 24, 12))
    out = home / "run"
    saved = os.environ.get("XDG_CACHE_HOME")
    os.environ.update(_environment(home))
    try:  # in this process: the run is the tests' starting point, not what they are about
        run_in_process("run", "--dataset", "msd", "--data-root", str(root), *TINY_3D, "--epochs", "2",
                       "--set", "split.val_fraction=0.34", "--set", "split.test_fraction=0.17", "--out", str(out))
    finally:
        if saved is None:
            os.environ.pop("XDG_CACHE_HOME", None)
        else:
            os.environ["XDG_CACHE_HOME"] = saved
    return root, out


def test_a_3d_run_trains_on_patches_and_validates_whole_volumes(patch_run: tuple[Path, Path]) -> None:
    _root, out = patch_run
    summary = json.loads((out / "summary.json").read_text())
    assert summary["epochs_run"] == 2 and summary["loader"]["path"] == "workers"
    splits = pd.read_csv(out / "splits.csv")
    val_cases = set(splits.loc[splits["split"] == "val", "case"])
    assert summary["validation_items"] == "volumes" and summary["lesion_slices"] == len(val_cases)  # volumes counted
    table = pd.read_csv(out / "evaluation" / "training-val-per-case.csv")
    assert set(table["case"]) == val_cases  # one row per validation volume
    assert (table["n_images"] == 1).all()  # each volume scored whole, as one item
    assert {"dice_front", "dice_back"} <= set(table.columns)
    for name in ("predictions.png", "cases.png", "curves.png", "report.html", "checkpoints/best.pt"):
        assert (out / name).is_file(), name
    import torch

    payload = torch.load(out / "checkpoints" / "best.pt", map_location="cpu", weights_only=False)
    assert payload["preprocessing"]["patch_size"] == [16, 16, 8]


def test_evaluate_scores_each_test_volume_whole_in_millimetres(patch_run: tuple[Path, Path], tmp_path: Path) -> None:
    _root, out = patch_run
    result = segkit("evaluate", str(out), "--split", "test", "--json", env=_environment(tmp_path))
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    splits = pd.read_csv(out / "splits.csv")
    test_cases = sorted(set(splits.loc[splits["split"] == "test", "case"]))
    assert report["n_cases"] == len(test_cases) == report["n_images"]
    assert report["surface"]["units"] == "spacing"  # distances in the header spacing (mm), not voxels
    table = pd.read_csv(report["per_case_csv"])
    assert sorted(table["case"]) == test_cases


def test_a_3d_run_resumes_where_it_stopped(patch_run: tuple[Path, Path], tmp_path: Path) -> None:
    import shutil

    out = tmp_path / "run"
    shutil.copytree(patch_run[1], out)
    result = segkit("run", "--resume", str(out), "--epochs", "3", "--quiet", env=_environment(tmp_path))
    assert result.returncode == 0, result.stderr
    assert len(pd.read_csv(out / "metrics.csv")) == 3


def test_a_3d_run_trains_with_the_channels_last_setting_cuda_runs_get(tmp_path: Path) -> None:
    """Channels-last is a 4D format: a CUDA run (train.channels_last = "cuda", the default) of a 3D model
    once failed on its first batch; "always" takes the same path on a CPU."""
    root = write_msd(tmp_path / "data", cases=4, shape=(20, 24, 12))
    out = tmp_path / "run"
    result = segkit("run", "--dataset", "msd", "--data-root", str(root), *TINY_3D, "--epochs", "1",
                    "--set", 'train.channels_last="always"', "--out", str(out), env=_environment(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((out / "summary.json").read_text())["epochs_run"] == 1


@pytest.mark.parametrize("how", ["2d data", "context", "patch too large", "memory"])
def test_settings_a_3d_run_cannot_use_are_refused_before_anything_is_written(tmp_path: Path, how: str) -> None:
    root = write_msd(tmp_path / "data", cases=4, shape=(20, 24, 12))
    args = ["--dataset", "msd", "--data-root", str(root), *TINY_3D, "--epochs", "1"]
    expected = {"2d data": "serves 2D images", "context": "2.5D", "patch too large": "patch",
                "memory": "of activations per 16x16x8 patch times a batch of 100000000"}[how]
    if how == "2d data":
        args = ["--dataset", "synthetic", *TINY_3D, "--epochs", "1"]
    elif how == "context":
        args += ["--set", "dataset.context=1"]
    elif how == "memory":  # checked from the model's footprint on the meta device, before any cache is built
        args += ["--batch-size", "100000000"]
    else:
        args += ["--set", "train.patch_size=[32,32,32]"]
    out = tmp_path / "run"
    result = segkit("run", *args, "--out", str(out), env=_environment(tmp_path))
    assert result.returncode == 2, result.stderr
    assert expected in result.stderr and "Traceback" not in result.stderr
    assert not (out / "checkpoints").exists()


def test_evaluating_volumes_of_other_channels_names_the_mismatch(patch_run: tuple[Path, Path], tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from segkit.cli import cli

    two = write_msd(tmp_path / "two", cases=2, shape=(20, 24, 12), channels=2)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    result = CliRunner().invoke(cli, ["evaluate", str(patch_run[1]), "--data-root", str(two), "--quiet"])
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output[-2000:]
    assert f"the model takes 1-channel volumes but dataset 'msd' at {two} has 2 channel(s)" in result.output
    assert not (tmp_path / "cache").exists()  # refused before the volumes were preprocessed


@pytest.mark.skipif(not HIPPOCAMPUS.is_dir(), reason="the hippocampus volumes (../shared/data/hippocampus) are absent")
def test_a_3d_run_on_real_hippocampus_volumes(tmp_path: Path) -> None:
    root = hippocampus_subset(tmp_path / "hippo", count=4)
    out = tmp_path / "run"
    result = segkit("run", "--dataset", "msd", "--data-root", str(root), *TINY_3D, "--epochs", "1",
                    "--set", "train.patch_size=[24,32,24]", "--set", "split.val_fraction=0.5",
                    "--set", "split.test_fraction=0", "--out", str(out), env=_environment(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "of 2 validation lesion volumes got an empty prediction" in result.stdout + result.stderr
    table = pd.read_csv(out / "evaluation" / "training-val-per-case.csv")
    assert len(table) == 2 and {"dice_Anterior", "dice_Posterior"} <= set(table.columns)


def test_predict_writes_a_3d_models_label_map_with_the_inputs_header(patch_run: tuple[Path, Path],
                                                                      tmp_path: Path) -> None:
    import nibabel as nib
    import numpy as np

    root, out = patch_run
    source = root / "imagesTr" / "vol_000.nii.gz"
    result = segkit("predict", str(out), str(source), "--out", str(tmp_path / "masks"), "--quiet",
                    env=_environment(tmp_path))
    assert result.returncode == 0, result.stderr
    written = nib.load(str(tmp_path / "masks" / "vol_000.nii.gz"))
    original = nib.load(str(source))
    assert written.shape == original.shape[:3]
    assert np.allclose(written.affine, original.affine)
    assert set(np.unique(np.asarray(written.dataobj))) <= {0, 1, 2}


def test_a_3d_model_exported_to_onnx_predicts_the_same_label_map(patch_run: tuple[Path, Path], tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import nibabel as nib
    import numpy as np

    from segkit.inference.export import export_onnx, read_onnx_metadata

    root, out = patch_run
    exported = tmp_path / "model.onnx"
    report = export_onnx(out, exported)  # checked against PyTorch at two other batch sizes
    assert report["max_abs_diff"] < 1e-3
    metadata = read_onnx_metadata(exported)
    assert json.loads(metadata["patch_size"]) == [16, 16, 8] and metadata["window_overlap"] == "0.25"
    assert json.loads(metadata["volume"])["schemes"] == ["zscore"]
    source = root / "imagesTr" / "vol_001.nii.gz"
    maps = {}
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    for name, model in (("run", out), ("onnx", exported)):
        run_in_process("predict", str(model), str(source), "--out", str(tmp_path / name), "--save-probs", "--quiet")
        maps[name] = np.asarray(nib.load(str(tmp_path / name / "vol_001.nii.gz")).dataobj)
        maps[name + "_prob"] = np.asarray(nib.load(str(tmp_path / name / "vol_001_prob_front.nii.gz")).dataobj)
    assert np.abs(maps["run_prob"] - maps["onnx_prob"]).max() < 1e-3
    assert (maps["run"] != maps["onnx"]).mean() < 1e-3
