"""3D runs on volumes resampled to a target spacing: trained on the target grid, scored and predicted on each case's own."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from clihelp import run_in_process, segkit
from segkit.data.preprocess import resample_image, resize_probabilities
from segkit.errors import CheckpointError
from segkit.inference.whole_volume import volume_probabilities
from segkit.inference.predictor import Member, Predictor
from volumes import write_msd

TINY_3D = ("--model", "unet3d", "--set", "model.width=4", "--set", "model.stages=3", "--loss", "ce_dice",
           "--set", "train.patch_size=[16,16,8]", "--set", "train.window_overlap=0.25", "--batch-size", "2",
           "--device", "cpu", "--quiet")


def test_softmax_probabilities_brought_back_to_a_grid_still_sum_to_one() -> None:
    logits = torch.randn(3, 10, 12, 24)
    back = resize_probabilities(torch.softmax(logits, dim=0), (20, 24, 12))
    assert back.shape == (3, 20, 24, 12)
    assert torch.allclose(back.sum(dim=0), torch.ones(20, 24, 12), atol=1e-5)


def test_a_ramp_resampled_to_half_the_voxel_size_keeps_its_values_in_mm() -> None:
    z = np.arange(12, dtype=np.float32) * 2.0  # mm at the voxel centres, spacing 2 along z
    image = np.broadcast_to(z, (1, 4, 5, 12)).copy()
    fine = resample_image(image, (1.0, 1.0, 2.0), (1.0, 1.0, 1.0))
    assert fine.shape == (1, 4, 5, 24)
    centres = (np.arange(24) + 0.5) * 1.0 - 1.0  # the fine voxels' centres in the same mm frame
    interior = slice(1, 23)
    assert np.allclose(fine[0, 0, 0, interior], centres[interior], atol=1e-4)


def _ramp_member(target: list[float] | None) -> Member:
    """A '3D model' whose logits are its input, recorded as trained on volumes at ``target`` spacing."""
    return Member(name="identity", source=f"ramp@{target}", image_size=0, in_channels=1, threshold=0.5,
                  run=lambda x: x,
                  info={"model": torch.nn.Identity(), "config": {"train": {"patch_size": [4, 5, 8]}},
                        "preprocessing": {"volume": {"target_spacing": target}}})


def test_a_model_trained_at_a_target_spacing_predicts_on_the_volumes_own_grid() -> None:
    image = torch.from_numpy(np.broadcast_to(np.linspace(-3, 3, 12, dtype=np.float32), (1, 4, 5, 12)).copy())
    plain = volume_probabilities(Predictor([_ramp_member(None)]), image)
    resampled = volume_probabilities(Predictor([_ramp_member([1.0, 1.0, 1.0])]), image, spacing=(1.0, 1.0, 2.0))
    assert resampled.shape == plain.shape == (1, 4, 5, 12)
    assert torch.allclose(resampled[..., 1:-1], plain[..., 1:-1], atol=1e-3)  # the edges clamp, the rest agrees
    with pytest.raises(CheckpointError, match="needs the voxel spacing"):
        volume_probabilities(Predictor([_ramp_member([1.0, 1.0, 1.0])]), image)


@pytest.fixture(scope="module")
def resampled_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    home = tmp_path_factory.mktemp("resampled")
    root = write_msd(home / "data", cases=5, shape=(20, 24, 12), spacing=(1.0, 1.0, 2.0))
    out, cache = home / "run", home / "cache"
    saved = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(cache)
    try:
        run_in_process("run", "--dataset", "msd", "--data-root", str(root), *TINY_3D, "--epochs", "1",
                       "--set", "train.target_spacing=[1,1,1]", "--set", "split.val_fraction=0.2",
                       "--set", "split.test_fraction=0.2", "--out", str(out))
    finally:
        if saved is None:
            os.environ.pop("XDG_CACHE_HOME", None)
        else:
            os.environ["XDG_CACHE_HOME"] = saved
    return root, out, cache


def test_a_run_trains_on_the_target_grid_and_records_it(resampled_run: tuple[Path, Path, Path]) -> None:
    _root, out, cache = resampled_run
    payload = torch.load(out / "checkpoints" / "last.pt", map_location="cpu", weights_only=False)
    assert payload["preprocessing"]["volume"]["target_spacing"] == [1.0, 1.0, 1.0]
    records = [json.loads(p.read_text()) for p in cache.rglob("cache.json")]
    trained = [r for r in records if r["settings"]["target_spacing"] == [1.0, 1.0, 1.0]]
    assert len(trained) == 1
    assert {tuple(c["shape"]) for c in trained[0]["cases"].values()} == {(20, 24, 24)}  # z: 12 voxels of 2 mm -> 24


def test_evaluate_and_predict_answer_on_the_cases_own_grid(resampled_run: tuple[Path, Path, Path], tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    import nibabel as nib

    root, out, cache = resampled_run
    result = segkit("evaluate", str(out), "--split", "test", "--json", env={"XDG_CACHE_HOME": str(cache)})
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["n_cases"] == 1
    source = root / "imagesTr" / "vol_000.nii.gz"
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    run_in_process("predict", str(out), str(source), "--out", str(tmp_path / "masks"), "--quiet")
    written, original = nib.load(str(tmp_path / "masks" / "vol_000.nii.gz")), nib.load(str(source))
    assert written.shape == original.shape == (20, 24, 12)
    assert np.allclose(written.affine, original.affine)


def test_evaluate_and_predict_refuse_a_grid_whose_arrays_do_not_fit(resampled_run: tuple[Path, Path, Path],
                                                                    tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """On a machine with 200,000 bytes free: 20x24x12 voxels on the model's 1 mm grid are 20x24x24, whose
    sliding-window sum, weights and probabilities of 3 channels need 391,680 bytes (segkit.memory)."""
    from click.testing import CliRunner

    import segkit.memory
    from segkit.cli import cli

    root, out, cache = resampled_run
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    monkeypatch.setattr(segkit.memory, "available_bytes", lambda device=None: 200_000)
    masks = tmp_path / "masks"
    for args in (["evaluate", str(out), "--split", "test", "--quiet"],
                 ["predict", str(out), str(root / "imagesTr" / "vol_000.nii.gz"), "--out", str(masks), "--quiet"]):
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 2, result.output[-2000:]
        assert "Traceback" not in result.output
        message = result.output.strip().splitlines()[-1]
        assert "(20x24x12 voxels) on the model's grid of [1, 1, 1] mm (its train.target_spacing: 20x24x24 voxels) " \
               "needs at least" in message and "; this machine has 0.2 MiB of host memory available" in message
        if args[0] == "evaluate":  # whole probability maps; predict makes its label map slab by slab, needing less
            assert "needs at least 0.4 MiB" in message and "a model trained with train.target_spacing = [" in message
    assert not list(masks.glob("*")), "predict wrote a file"


@pytest.mark.parametrize(("settings", "expected"), [
    (["train.target_spacing=[1,1]", "train.patch_size=[16,16,8]"], "three positive voxel sizes"),
    (["train.target_spacing=[1,0,1]", "train.patch_size=[16,16,8]"], "three positive voxel sizes"),
    (["train.target_spacing=[1,1,1]"], "set train.patch_size too"),
])
def test_a_bad_target_spacing_is_a_config_error(settings: list[str], expected: str) -> None:
    """Config errors stop a run before it writes anything (tests/test_volume_runs.py runs that path)."""
    from segkit.components.registry import get_registry
    from segkit.config import resolve_config, validate_config
    from segkit.errors import ConfigError

    with pytest.raises(ConfigError, match=expected):
        validate_config(resolve_config(sets=settings), get_registry())
