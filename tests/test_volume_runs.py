"""3D runs end to end: a 3D U-Net trained on patches of volumes, validated and evaluated on whole volumes."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from clihelp import run_in_process, segkit, segkit_here
from volumes import HIPPOCAMPUS, hippocampus_subset, write_msd

TINY_3D_MODEL = ("--model", "unet3d", "--set", "model.width=4", "--set", "model.stages=3", "--loss", "ce_dice",
                 "--batch-size", "2", "--device", "cpu", "--quiet")
TINY_3D = (*TINY_3D_MODEL, "--set", "train.patch_size=[16,16,8]", "--set", "train.window_overlap=0.25")


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


def test_after_the_last_epoch_each_validation_volume_is_predicted_once(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The final validation predicts every validation volume with the best weights; predictions.png and
    cases.png show slices it kept (each volume was predicted three more times before)."""
    from segkit.train.loop import Trainer

    predicted: list[int] = []
    infer = Trainer.infer

    def counting(self: Trainer, model: object, images: object) -> object:
        predicted.append(images.shape[0])
        return infer(self, model, images)

    monkeypatch.setattr(Trainer, "infer", counting)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    root = write_msd(tmp_path / "data", cases=4, shape=(20, 24, 12))
    out = tmp_path / "run"
    run_in_process("run", "--dataset", "msd", "--data-root", str(root), *TINY_3D, "--epochs", "1",
                   "--set", "split.val_fraction=0.5", "--set", "split.test_fraction=0", "--out", str(out))
    splits = pd.read_csv(out / "splits.csv")
    validation = splits.loc[splits["split"] == "val", "case"].nunique()
    assert validation == 2
    assert sum(predicted) == 2 * validation  # epoch 1's validation and the final one; the figures add none
    assert (out / "predictions.png").is_file() and (out / "cases.png").is_file()


def test_a_3d_run_trains_with_the_channels_last_setting_cuda_runs_get(tmp_path: Path) -> None:
    """Channels-last is a 4D format: a CUDA run (train.channels_last = "cuda", the default) of a 3D model
    once failed on its first batch; "always" takes the same path on a CPU."""
    root = write_msd(tmp_path / "data", cases=4, shape=(20, 24, 12))
    out = tmp_path / "run"
    result = segkit("run", "--dataset", "msd", "--data-root", str(root), *TINY_3D, "--epochs", "1",
                    "--set", 'train.channels_last="always"', "--out", str(out), env=_environment(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((out / "summary.json").read_text())["epochs_run"] == 1


@pytest.mark.parametrize("how", ["2d data", "context", "patch too large", "memory", "3d model, 2d images",
                                 "3d model, no patch", "3d model, 2d patches", "2d model, 3d patch of images"])
def test_settings_a_3d_run_cannot_use_are_refused_before_anything_is_written(tmp_path: Path, how: str) -> None:
    root = write_msd(tmp_path / "data", cases=4, shape=(20, 24, 12))
    args = ["--dataset", "msd", "--data-root", str(root), *TINY_3D, "--epochs", "1"]
    expected = {"2d data": "serves 2D images", "context": "2.5D", "patch too large": "patch",
                "memory": "of activations per 16x16x8 patch times a batch of 100000000",
                "3d model, 2d images": "model 'unet3d' is a 3D model of volumes (spatial_dims = 3), but this run feeds "
                                       "it 2D images; dataset 'synthetic' serves 2D images: choose a 2D model",
                "3d model, no patch": "give train.patch_size three numbers",
                "3d model, 2d patches": "but this run feeds it 2D patches ([16, 16]); dataset 'synthetic' serves 2D "
                                        "images: choose a 2D model",
                # the data, not the model, is what is wrong: once "use a 3D model", which could not help either
                "2d model, 3d patch of images": "patches of volumes, but dataset 'synthetic' serves 2D images"}[how]
    if how == "2d data":
        args = ["--dataset", "synthetic", *TINY_3D, "--epochs", "1"]
    elif how == "3d model, 2d images":  # once a traceback from the model's first forward pass, in epoch 1
        args = ["--dataset", "synthetic", *TINY_3D_MODEL, "--epochs", "1"]
    elif how == "3d model, no patch":
        args = ["--dataset", "msd", "--data-root", str(root), *TINY_3D_MODEL, "--epochs", "1"]
    elif how == "3d model, 2d patches":
        args = ["--dataset", "synthetic", *TINY_3D_MODEL, "--set", "train.patch_size=[16,16]", "--epochs", "1"]
    elif how == "2d model, 3d patch of images":
        args = ["--dataset", "synthetic", "--model", "smp_unet", "--set", "train.patch_size=[16,16,8]", "--epochs", "1",
                "--device", "cpu", "--quiet"]
    elif how == "context":
        args += ["--set", "dataset.context=1"]
    elif how == "memory":  # checked from the model's footprint on the meta device, before any cache is built
        args += ["--batch-size", "100000000"]
    else:
        args += ["--set", "train.patch_size=[32,32,32]"]
    out = tmp_path / "run"
    result = segkit_here("run", *args, "--out", str(out), env=_environment(tmp_path))
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


#: Edits of a 3D checkpoint's preprocessing (beyond the window, checked with it): (where, value, the refusal).
VOLUME_EDITS = [
    (("volume", "target_spacing"), "abc", "field 'preprocessing.volume.target_spacing' is 'abc' but must be three "
                                          "positive voxel sizes"),
    (("volume", "target_spacing"), [1.0, -1.0, 1.0], "'preprocessing.volume.target_spacing' is [1.0, -1.0, 1.0]"),
    (("volume", "schemes"), ["mri"], "'preprocessing.volume.schemes' is ['mri'] but must list 1 of zscore, ct, none"),
    (("volume", "schemes"), ["zscore", "zscore"], "'preprocessing.volume.schemes' is ['zscore', 'zscore']"),
    (("volume", "stats"), [{"low": 0.0}], "'preprocessing.volume.stats' holds {'low': 0.0} for channel 0"),
    (("volume", "stats"), [{"low": 5.0, "high": 1.0, "mean": 0.0, "std": 1.0}], "its low must not exceed its high"),
    (("volume",), "zscore", "'preprocessing.volume' is 'zscore' but must be a table"),
    (("slice_axis",), 7, "'preprocessing.slice_axis' is 7 but must be 0, 1 or 2"),
    (("slice_shape",), "32x32", "'preprocessing.slice_shape' is '32x32' but must be two sizes >= 1"),
]


@pytest.mark.parametrize(("where", "value", "expected"), VOLUME_EDITS)
def test_an_edited_3d_checkpoint_field_is_named_when_read(patch_run: tuple[Path, Path], tmp_path: Path,
                                                          where: tuple[str, ...], value: object, expected: str) -> None:
    import torch

    from segkit.errors import CheckpointError
    from segkit.runs.checkpoint import load_checkpoint, save_checkpoint

    payload = torch.load(patch_run[1] / "checkpoints" / "best.pt", weights_only=True)
    assert payload["preprocessing"]["volume"]["schemes"] == ["zscore"]
    record = payload["preprocessing"]
    for key in where[:-1]:
        record = record[key]
    record[where[-1]] = value
    save_checkpoint(tmp_path / "edited.pt", {k: v for k, v in payload.items() if k != "format"})
    with pytest.raises(CheckpointError) as refusal:
        load_checkpoint(tmp_path / "edited.pt")
    assert expected in str(refusal.value) and "edited" in str(refusal.value)


def test_predict_export_and_evaluate_name_an_edited_target_spacing(patch_run: tuple[Path, Path],
                                                                    tmp_path: Path) -> None:
    import shutil

    import torch

    from click.testing import CliRunner

    from segkit.cli import cli
    from segkit.runs.checkpoint import save_checkpoint

    root, out = patch_run
    run = tmp_path / "run"
    shutil.copytree(out, run)
    payload = torch.load(run / "checkpoints" / "best.pt", weights_only=True)
    payload["preprocessing"]["volume"]["target_spacing"] = [0.5, 0.5, 0.5]  # not the run's train.target_spacing
    save_checkpoint(run / "checkpoints" / "best.pt", {k: v for k, v in payload.items() if k != "format"})
    for args in (["predict", str(run), str(root / "imagesTr" / "vol_000.nii.gz"), "--out", str(tmp_path / "m")],
                 ["export", str(run), "--format", "torchscript", "--out", str(tmp_path / "m.ts")],
                 ["evaluate", str(run), "--quiet"]):
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 2 and "Traceback" not in result.output, result.output[-2000:]
        assert ("field 'preprocessing.volume.target_spacing' is [0.5, 0.5, 0.5] but the run trained with "
                "train.target_spacing = []") in result.output, args[0]
    assert not (tmp_path / "m").exists() and not (tmp_path / "m.ts").exists()


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
    _edited_onnx_fields_are_named(exported, tmp_path)
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


def _edited_onnx_fields_are_named(exported: Path, tmp_path: Path) -> None:
    """A 3D export whose volume metadata was edited is refused naming the field (a part of the export test, which
    pays for the export)."""
    import onnx

    from segkit.errors import CheckpointError
    from segkit.inference.export import load_onnx_predictor

    for key, value, expected in [("volume", '{"schemes": ["zscore"], "target_spacing": [0, 1, 1]}',
                                  "metadata field 'volume.target_spacing' is [0, 1, 1]"),
                                 ("volume", '{"schemes": ["ct"], "stats": null}', "'volume.stats' is missing"),
                                 ("volume", "{not json", "metadata field 'volume' is '{not json', which is not JSON"),
                                 ("slice_axis", "3", "metadata field 'slice_axis' is 3")]:
        model = onnx.load(str(exported))
        for prop in model.metadata_props:
            if prop.key == key:
                prop.value = value
        onnx.save(model, str(tmp_path / "edited.onnx"))
        with pytest.raises(CheckpointError, match="the file's metadata was edited") as refusal:
            load_onnx_predictor(tmp_path / "edited.onnx")
        assert expected in str(refusal.value)
