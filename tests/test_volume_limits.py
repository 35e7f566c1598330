"""3D settings that cannot work are refused before any work, in one line that names what would fit.

The runs go through the real CLI in this process (click's CliRunner: every check runs before training, so a
subprocess would add only its start-up); "nothing written" means neither the run directory nor a volume cache
exists afterwards. Memory limits are tested two ways: sizes no machine holds, and (monkeypatched) a machine
with little free memory, where the suggested setting is checked to fit and a finer one not to.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import segkit.memory
from segkit.cli import cli
from segkit.data.preprocess import check_resampling_fits, resampled_shape
from segkit.errors import ConfigError
from segkit.inference.sliding_window import window_starts
from segkit.inference.volume_limits import MAX_WINDOW_REPEATS, check_windows, window_count, window_repeats
from segkit.memory import volume_preprocess_bytes
from volumes import write_msd

PATCH_RUN = ["--dataset", "msd", "--loss", "ce_dice", "--set", "train.patch_size=[16,16,8]", "--batch-size", "2",
             "--device", "cpu", "--epochs", "1", "--quiet"]
TINY_3D = [*PATCH_RUN, "--model", "unet3d", "--set", "model.width=4", "--set", "model.stages=3"]


@pytest.fixture(scope="module")
def msd_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four 20x24x12 volumes of 1 x 1 x 2 mm, one channel."""
    return write_msd(tmp_path_factory.mktemp("msd") / "data", cases=4, shape=(20, 24, 12))


def refused(*args: str, out: Path, cache: Path) -> str:
    """``segkit run ARGS --out OUT``: a one-line error, no traceback, no run directory, no volume cache; its message."""
    result = CliRunner().invoke(cli, ["run", *args, "--out", str(out)])
    assert result.exit_code == 2, result.output[-2000:]
    assert "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert not out.exists(), f"{out} was written"
    assert not list(cache.rglob("cache.json")), "a volume cache was built"
    return lines[0]


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.mark.parametrize(("settings", "expected"), [
    ([*PATCH_RUN, "--model", "smp_unet"], "model 'smp_unet' is a 2D model of images (spatial_dims = 2) but "
                                          "train.patch_size [16, 16, 8] has 3 numbers"),
    ([*TINY_3D, "--set", "model.spatial_dims=2"], "model 'unet3d' is a 2D model of images (spatial_dims = 2)"),
    ([*TINY_3D, "--set", "model.in_channels=2"], "model.in_channels = 2 but the volumes of dataset 'msd' have 1 "
                                                 "channel(s)"),
    ([*TINY_3D, "--set", f"train.patches_per_epoch={10**12}"], "train.patches_per_epoch must be 0 (one patch per "
                                                               "training case) or up to 1,000,000"),
])
def test_a_3d_run_the_model_or_data_cannot_take_is_refused(msd_root: Path, cache: Path, tmp_path: Path,
                                                            settings: list[str], expected: str) -> None:
    assert expected in refused(*settings, "--data-root", str(msd_root), out=tmp_path / "run", cache=cache)


def test_a_patch_too_small_for_the_stages_names_the_smallest_that_works(msd_root: Path, cache: Path,
                                                                        tmp_path: Path) -> None:
    message = refused(*TINY_3D, "--data-root", str(msd_root), "--set", "model.stages=5", out=tmp_path / "run",
                      cache=cache)
    assert "cannot train on patches of 16x16x8 (its stages downsample by 16x16x16)" in message
    assert "Expected more than 1 spatial element" in message and "model.stages" in message
    assert "the smallest patch that works is [16, 16, 32]" in message
    # by the model itself, on real tensors: 16x16x8 (padded to 16^3) leaves one voxel at the deepest stage
    from segkit_builtins.models.unet3d import UNet3D

    model = UNet3D(in_channels=1, classes=3, width=2, stages=5).train()
    with pytest.raises(ValueError, match="Expected more than 1 spatial element"):
        model(torch.zeros(2, 1, 16, 16, 8))
    assert model(torch.zeros(2, 1, 16, 16, 32)).shape == (2, 3, 16, 16, 32)


def test_a_window_overlap_near_one_is_refused_with_its_window_count(msd_root: Path, cache: Path,
                                                                     tmp_path: Path) -> None:
    message = refused(*TINY_3D, "--data-root", str(msd_root), "--set", "train.window_overlap=0.999",
                      out=tmp_path / "run", cache=cache)
    # by hand: strides of 0.016, 0.016 and 0.008 voxels leave 4, 8 and 4 voxels: 251 x 501 x 501 windows
    assert "train.window_overlap = 0.999 slides 63,001,251 windows of 16x16x8 over case 'vol_000'" in message
    assert "use train.window_overlap = 0.9 or less (144 windows" in message


def test_window_counts_agree_with_the_sliding_windows_placement() -> None:
    for shape, patch, overlap in [((20, 24, 12), (16, 16, 8), 0.9), ((33, 7, 50), (16, 16, 8), 0.5),
                                  ((64, 64, 64), (16, 16, 16), 0.75), ((10, 10, 10), (16, 16, 16), 0.99)]:
        placed = math.prod(len(window_starts(max(s, p), p, overlap)) for s, p in zip(shape, patch, strict=True))
        assert window_count(shape, patch, overlap) == placed
    assert window_repeats((64, 64, 64), (16, 16, 16), 0.5) == 7 ** 3 / 4 ** 3
    check_windows((64, 64, 64), (16, 16, 16), 0.75, what="a volume")  # 13^3 windows: 34 repeats, allowed
    assert window_repeats((64, 64, 64), (16, 16, 16), 0.9) > MAX_WINDOW_REPEATS  # 31^3 windows
    with pytest.raises(ConfigError, match=r"slides 29,791 windows of 16x16x16 over a volume .* 0.8 or less"):
        check_windows((64, 64, 64), (16, 16, 16), 0.9, what="a volume")


def test_a_target_spacing_no_machine_holds_is_refused_before_the_cache(msd_root: Path, cache: Path,
                                                                      tmp_path: Path) -> None:
    message = refused(*TINY_3D, "--data-root", str(msd_root), "--set", "train.target_spacing=[0.001,0.001,0.001]",
                      out=tmp_path / "run", cache=cache)
    assert "case 'vol_000' (20x24x12 voxels of [1, 1, 2] mm, 20000x24000x24000 once resampled" in message
    assert "TiB; this machine has" in message and "of host memory available" in message
    spacing = float(message.split("the smallest train.target_spacing that fits is [")[1].split(",")[0])
    assert 0.001 < spacing < 1


def test_the_smallest_target_spacing_named_fits_and_a_finer_one_does_not(monkeypatch: pytest.MonkeyPatch) -> None:
    free = 8 * 2**20
    monkeypatch.setattr(segkit.memory, "available_bytes", lambda device=None: free)
    with pytest.raises(ConfigError) as refusal:
        check_resampling_fits((20, 24, 12), (1.0, 1.0, 2.0), (0.1, 0.1, 0.1), 2)
    message = str(refusal.value)
    assert "to 200x240x240 voxels, which needs at least" in message and "8.0 MiB of host memory available" in message
    named = float(message.split("the smallest target spacing that fits is [")[1].split(",")[0])

    def needed(spacing: float) -> int:
        voxels = math.prod(resampled_shape((20, 24, 12), (1.0, 1.0, 2.0), (spacing,) * 3))
        return volume_preprocess_bytes(20 * 24 * 12, voxels, 2)

    assert needed(named) <= free < needed(named * 0.99)
    # the guard sits where the arrays are made: resampling itself refuses before allocating
    from segkit.data.preprocess import resample_case

    with pytest.raises(ConfigError, match="the smallest target spacing that fits"):
        resample_case(np.zeros((2, 20, 24, 12), np.float32), np.zeros((20, 24, 12), np.uint8), (1, 1, 2),
                      (0.1, 0.1, 0.1))
