"""Shared fixtures: a few real LGG patients copied into a temporary folder."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

LGG_ROOT = Path(__file__).resolve().parents[1].parent / "shared/data/lgg/kaggle_3m"


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist (``-n N``), each worker and the runs it starts compute on one thread.

    N workers already keep N cores busy; torch's default of one thread per core in every worker
    would oversubscribe them. Set here, before any test imports torch or starts a subprocess.
    """
    if os.environ.get("PYTEST_XDIST_WORKER"):
        for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[variable] = "1"
        import torch

        torch.set_num_threads(1)
# Three small patients (20 slices each), all with lesion and lesion-free slices.
LGG_PATIENTS = ("TCGA_CS_6667_20011105", "TCGA_HT_7602_19951103", "TCGA_HT_8107_19980708")


@pytest.fixture(scope="session")
def lgg_root() -> Path:
    """The shared kaggle_3m folder; the test is skipped when it is absent."""
    if not all((LGG_ROOT / p).is_dir() for p in LGG_PATIENTS):
        pytest.skip(f"real LGG data not found at {LGG_ROOT} (see shared/data/lgg/README.md)")
    return LGG_ROOT


@pytest.fixture(scope="session")
def lgg_small(lgg_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A read-only kaggle_3m copy with three patients and data.csv; tests must not change it."""
    root = tmp_path_factory.mktemp("lgg") / "kaggle_3m"
    for patient in LGG_PATIENTS:
        shutil.copytree(lgg_root / patient, root / patient)
    if (lgg_root / "data.csv").is_file():
        shutil.copy(lgg_root / "data.csv", root / "data.csv")
    return root


@pytest.fixture
def lgg_copy(lgg_small: Path, tmp_path: Path) -> Path:
    """A private kaggle_3m copy with three patients that a test may break."""
    root = tmp_path / "kaggle_3m"
    shutil.copytree(lgg_small, root)
    return root


# --- trained runs for evaluate, predict and export tests --------------------------------------------

TINY_TRAIN_ARGS = ("--epochs", "1", "--set", "dataset.count=48", "--set", "dataset.size=32",
                   "--set", "dataset.slices_per_case=4", "--set", "model.width=8", "--batch-size", "8",
                   "--augment", "none", "--quiet")


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real run: the tutorial U-Net (width 8) trained 1 epoch on 48 synthetic 32x32 slices (12 cases of 4)."""
    from click.testing import CliRunner

    from segkit.cli import cli

    out = tmp_path_factory.mktemp("trained") / "tiny"
    result = CliRunner().invoke(cli, ["run", *TINY_TRAIN_ARGS, "--out", str(out)])
    assert result.exit_code == 0, result.output[-3000:]
    return out


def clone_run(source: Path, target: Path, model: dict | None = None, image_size: int | None = None,
              seed: int = 1) -> Path:
    """A run directory like ``source`` whose checkpoints hold a freshly built model (not trained).

    ``model`` replaces the ``[model]`` section (e.g. an smp model), ``image_size`` the training size.
    """
    import torch

    from segkit.components.registry import get_registry
    from segkit.tomlio import dumps_toml, read_toml
    from segkit.runs.checkpoint import load_checkpoint, save_checkpoint

    config = read_toml(source / "config.toml")
    if model is not None:
        config["model"] = dict(model)
    if image_size is not None:
        config["train"]["image_size"] = image_size
    target.mkdir(parents=True)
    (target / "config.toml").write_text(dumps_toml(config))
    shutil.copy(source / "splits.csv", target / "splits.csv")
    payload = load_checkpoint(source / "checkpoints" / "best.pt")
    torch.manual_seed(seed)
    spec = config["model"]
    network = get_registry().build("model", spec["name"], **{k: v for k, v in spec.items() if k != "name"})
    payload.update(config=config, model_state=network.state_dict())
    payload["preprocessing"] = {**payload["preprocessing"], "image_size": config["train"]["image_size"],
                                "in_channels": spec.get("in_channels", 3)}
    for name in ("best.pt", "last.pt"):
        save_checkpoint(target / "checkpoints" / name, payload)
    return target


@pytest.fixture(scope="session")
def resized_run(trained_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained U-Net (width 8, another seed) 'trained' at image size 48, sharing trained_run's data and split."""
    return clone_run(trained_run, tmp_path_factory.mktemp("resized") / "run", image_size=48, seed=3)


@pytest.fixture(scope="session")
def smp_run(trained_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained smp U-Net with a resnet18 encoder saved as a run directory."""
    model = {"name": "smp_unet", "encoder_name": "resnet18", "in_channels": 3, "classes": 1}
    return clone_run(trained_run, tmp_path_factory.mktemp("smp") / "run", model=model, seed=0)


@pytest.fixture(scope="session", autouse=True)
def private_segkit_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Runs started by the tests (subprocesses included) remember data checks here, not in ~/.cache."""
    path = tmp_path_factory.mktemp("segkit-cache")
    os.environ["SEGKIT_CACHE_DIR"] = str(path)
    return path


@pytest.fixture(scope="session")
def volume_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real 2D run on volumes: the tutorial U-Net (width 4) trained 12 short epochs (~2 s) on the slices of 4 synthetic
    Decathlon cases (``tests/volumes.write_msd``: 20x24x12 voxels, spacing 1x1x2 mm, labels front/back), one
    of them for validation (see its splits.csv). The data stay at ``<run>/../data``."""
    from clihelp import run_in_process
    from volumes import write_msd

    home = tmp_path_factory.mktemp("volume-run")
    root = write_msd(home / "data", cases=4)
    out = home / "run"
    run_in_process("run", "--dataset", "msd", "--data-root", str(root), "--model", "unet", "--set", "model.width=4",
                   "--loss", "ce_dice", "--epochs", "12", "--lr", "0.01", "--batch-size", "4", "--augment", "none",
                   "--set", "split.val_fraction=0.25", "--set", "split.test_fraction=0", "--quiet", "--out", str(out))
    return out
