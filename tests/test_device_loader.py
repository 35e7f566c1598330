"""The device-resident data path (train.loader = device): same batches as the worker path, reproducible, clear limits.

These run on CPU tensors; the last test runs only where CUDA is available.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from clihelp import kill_run_after, run_in_process, segkit
from segkit.errors import DataError
from segkit.train import device_loader
from segkit.train.device_loader import choose_loader

TINY = ["--set", "dataset.count=48", "--set", "dataset.size=32", "--set", "dataset.slices_per_case=4",
        "--set", "model.width=8", "--batch-size", "8", "--quiet"]
KILLABLE = ["--set", "dataset.count=96", "--set", "dataset.size=32", "--set", "model.width=8",
            "--batch-size", "4", "--epochs", "6", "--augment", "heavy", "--loader", "device",
            "--set", "train.foreground_fraction=0.33", "--quiet"]


def test_without_augmentation_both_paths_train_the_same_run(tmp_path: Path) -> None:
    """One sampler, one preprocessing: only where augmentation happens differs between the paths.

    In this process (the comparison is of what the paths compute, not of a process's start).
    """
    runs = {}
    for path in ("workers", "device"):
        out = tmp_path / path
        run_in_process("run", *TINY, "--epochs", "2", "--augment", "none", "--loader", path,
                       "--set", "train.foreground_fraction=0.5", "--out", str(out))
        runs[path] = (out / "metrics.csv").read_text()
    assert runs["device"] == runs["workers"]


def test_a_killed_device_path_run_resumes_to_the_same_metrics(tmp_path: Path) -> None:
    run_in_process("run", *KILLABLE, "--out", str(tmp_path / "reference"))  # the uninterrupted run
    assert '"path": "device"' in (tmp_path / "reference" / "summary.json").read_text()

    killed = tmp_path / "killed"
    kill_run_after(KILLABLE, killed, epochs=2)
    metrics = killed / "metrics.csv"
    resumed = segkit("run", "--resume", str(killed), "--quiet")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert metrics.read_text() == (tmp_path / "reference" / "metrics.csv").read_text()


def _config(loader: str, image_size: int = 0) -> SimpleNamespace:
    return SimpleNamespace(train=SimpleNamespace(loader=loader, image_size=image_size))


def _dataset(count: int = 10, size: int = 32):
    from segkit_builtins.datasets.synthetic import SyntheticDataset

    return SyntheticDataset(count=count, size=size)


def test_a_cache_too_large_for_memory_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(device_loader, "_available_host_bytes", lambda: 1000)
    with pytest.raises(DataError, match=r"train.loader = device needs .* Use train.loader = workers"):
        choose_loader(_config("device"), _dataset(), torch.device("cpu"))


def test_auto_says_which_path_it_took_and_why() -> None:
    choice = choose_loader(_config("auto"), _dataset(), torch.device("cpu"))
    assert choice.path == "workers" and "cpu" in choice.reason
    assert choose_loader(_config("workers"), _dataset(), torch.device("cpu")).path == "workers"
    explicit = choose_loader(_config("device"), _dataset(), torch.device("cpu"))
    assert explicit.path == "device" and "MiB" in explicit.reason


def test_cache_bytes_counts_every_channel_and_the_mask() -> None:
    assert device_loader.cache_bytes(_dataset(count=10, size=32), 0) == 10 * (3 + 1) * 32 * 32
    assert device_loader.cache_bytes(_dataset(count=10, size=32), 64) == 10 * (3 + 1) * 64 * 64


def test_the_cache_holds_what_validation_reads() -> None:
    from segkit.data import build_transform

    dataset = _dataset(count=6, size=32)
    cache = device_loader.DeviceCache(dataset, 24, torch.device("cpu"))
    assert cache.images.dtype == torch.uint8 and tuple(cache.images.shape) == (6, 3, 24, 24)
    view = dataset.subset(range(6), transform=build_transform("none", 24))
    for i in range(6):
        image, mask = view[i]
        assert torch.equal(cache.images[i].float() / 255.0, image)
        assert torch.equal(cache.masks[i].float(), mask)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_auto_picks_the_device_path_on_cuda(tmp_path: Path) -> None:
    out = tmp_path / "cuda"
    result = segkit("run", *TINY, "--epochs", "1", "--device", "cuda", "--out", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    assert '"path": "device"' in (out / "summary.json").read_text()
