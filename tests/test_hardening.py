"""Bad files and careless paths through the real CLI: a clear error, no traceback, no input or work lost."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from segkit.tomlio import read_toml


def segkit(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m segkit ARGS`` in a subprocess, as a user runs it."""
    return subprocess.run([sys.executable, "-m", "segkit", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


def _write_folder(root: Path, count: int = 8) -> None:
    """A tiny folder dataset: count 32x32 RGB PNG images with bright square lesions, two cases."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    for i in range(count):
        image = rng.integers(20, 60, (32, 32, 3), dtype=np.uint8)
        mask = np.zeros((32, 32), np.uint8)
        if i % 2:
            mask[8:16, 10:20] = 255
            image[mask > 0] = 200
        cv2.imwrite(str(root / "images" / f"p{i % 2}_{i}.png"), image)
        cv2.imwrite(str(root / "masks" / f"p{i % 2}_{i}.png"), mask)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 1-epoch run of a width-4 tutorial U-Net on a folder dataset given by a *relative* --data-root."""
    base = tmp_path_factory.mktemp("hardening")
    _write_folder(base / "data")
    result = segkit("run", "--dataset", "folder", "--data-root", "data", "--set", "model.width=4", "--epochs", "1",
                    "--batch-size", "4", "--set", "split.test_fraction=0", "--out", "run", "--quiet", cwd=base)
    assert result.returncode == 0, result.stderr[-3000:]
    return base / "run"


def test_a_relative_data_root_is_stored_absolute(tiny_run: Path, tmp_path: Path) -> None:
    root = read_toml(tiny_run / "config.toml")["dataset"]["root"]
    assert Path(root).is_absolute() and Path(root) == tiny_run.parent / "data"
    # so evaluate works from any other folder
    result = segkit("evaluate", str(tiny_run), "--split", "val", "--quiet", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.mark.parametrize("damage", ["empty", "truncated"])
def test_a_damaged_checkpoint_is_one_clear_error_everywhere(tiny_run: Path, tmp_path: Path, damage: str) -> None:
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    best = run / "checkpoints" / "best.pt"
    best.write_bytes(b"" if damage == "empty" else best.read_bytes()[:3000])
    images = tiny_run.parent / "data" / "images"
    for args in (["evaluate", str(run)], ["predict", str(run), str(images), "--out", str(tmp_path / "p")],
                 ["export", str(run), "--format", "torchscript", "--out", str(tmp_path / "m.ts")]):
        result = segkit(*args)
        assert result.returncode != 0, args
        assert "Traceback" not in result.stderr, result.stderr[-3000:]
        expected = "is empty (0 bytes)" if damage == "empty" else "truncated or corrupt"
        assert expected in result.stderr and "best.pt" in result.stderr and "--checkpoint" in result.stderr
    # the other checkpoint still works, as the message says
    assert segkit("evaluate", str(run), "--checkpoint", "last", "--split", "val", "--quiet").returncode == 0


def test_predict_never_writes_over_its_inputs(tiny_run: Path, tmp_path: Path) -> None:
    images = tmp_path / "scans"
    shutil.copytree(tiny_run.parent / "data" / "images", images)
    before = {p.name: p.read_bytes() for p in images.iterdir()}
    result = segkit("predict", str(tiny_run), str(images), "--out", str(images), "--overwrite")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "would replace an input image" in result.stderr and "choose another --out" in result.stderr
    assert {p.name: p.read_bytes() for p in images.iterdir()} == before  # nothing written, nothing replaced
    # another folder is fine
    assert segkit("predict", str(tiny_run), str(images), "--out", str(tmp_path / "masks"), "--quiet").returncode == 0
