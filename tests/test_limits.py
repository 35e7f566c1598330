"""Numbers that cannot work are refused before any work, in one line that says what would fit.

Each command runs through the real CLI (click's CliRunner in this process: the checks run
before training, so a subprocess would add only its start-up); "nothing written" means the
run directory does not exist afterwards.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from clihelp import segkit
from segkit.cli import cli

#: The small synthetic run of conftest's trained_run: the checks must refuse before any of it trains.
SMALL = ["--set", "dataset.count=16", "--set", "dataset.size=32", "--set", "model.width=8", "--epochs", "1",
         "--augment", "none", "--quiet"]


def refused(*args: str, out: Path | None = None) -> str:
    """Run ``segkit ARGS`` (``--out OUT`` for run), check it is a one-line error with nothing written; its message."""
    extra = ["--out", str(out)] if out is not None else []
    result = CliRunner().invoke(cli, [*args, *extra])
    assert result.exit_code == 2, result.output[-2000:]
    assert "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    if out is not None:
        assert not out.exists(), f"{out} was written"
    return lines[0]


@pytest.mark.parametrize(("settings", "expected"), [
    (["--set", "train.epochs=1000000000000"], "at most 100000"),
    (["--epochs", "100001"], "train.max_minutes"),
    (["--seed", str(2**70)], "train.seed must be between 0 and 2**63 - 1"),
    (["--set", f"split.seed={2**33}"], "split.seed must be between 0 and 2**32 - 1"),
    (["--optimizer", "sgd", "--set", "train.momentum=-1"], "train.momentum (SGD) must be in [0, 1)"),
    (["--set", "train.lr=inf"], "train.lr must be a finite number"),
    (["--set", "train.weight_decay=nan"], "train.weight_decay must be a finite number"),
    (["--set", "train.max_minutes=inf"], "train.max_minutes must be a finite number"),
    (["--set", "model.width=1e400"], "'width' of model 'unet': inf is not a finite number"),
    (["--set", f"dataset.seed={2**64}"], "does not fit a 64-bit integer"),
])
def test_impossible_settings_are_refused_before_work(tmp_path: Path, settings: list[str], expected: str) -> None:
    assert expected in refused("run", *SMALL, *settings, out=tmp_path / "run")


def test_a_training_step_beyond_memory_says_what_would_fit(tmp_path: Path) -> None:
    # a model whose weights alone are hundreds of TiB: no machine holds it
    message = refused("run", *SMALL, "--set", "model.width=100000", out=tmp_path / "wide")
    assert "weights with their gradients and optimizer state" in message and "model alone does not fit" in message
    # a batch that no memory holds: the largest batch that would fit is named
    message = refused("run", *SMALL, "--batch-size", str(10**8), out=tmp_path / "batch")
    assert "of activations per 32x32 image times a batch of 100000000" in message
    fits = int(message.split("--batch-size ")[1].split()[0])
    assert 1 <= fits < 10**8
    # an image size whose one image does not fit: a smaller size is suggested
    message = refused("run", *SMALL, "--image-size", "100000", "--batch-size", "1", out=tmp_path / "size")
    assert "Not even one 100000x100000 image fits" in message
    side = int(message.split("--image-size ")[1].split()[0])
    assert 32 <= side < 100000
    # 2.5D context multiplies the model's input channels: a model too wide for any input is named as such
    message = refused("run", *SMALL, "--set", "dataset.slices_per_case=16", "--set", "dataset.context=15",
                      "--set", "model.width=20000", out=tmp_path / "context")
    assert "model alone does not fit" in message and "dataset.context" in message


def test_an_image_size_beyond_any_memory_is_refused_before_opencv_resizes(tmp_path: Path) -> None:
    # 10^9 x 10^9 pixels: more elements than the meta device describes, so the activations are measured on a
    # 256x256 image and scaled by area; OpenCV would otherwise be asked for 3e18 bytes mid-epoch
    message = refused("run", *SMALL, "--image-size", str(10**9), out=tmp_path / "run")
    assert "EiB of activations per 1000000000x1000000000 image times a batch of 8" in message
    side = int(message.split("--image-size ")[1].split()[0])
    assert 32 <= side < 10**9


def test_resizing_a_batch_beyond_memory_names_the_batch_that_fits(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    import segkit.memory
    from segkit.errors import ConfigError
    from segkit.inference.predictor import resize_images
    from segkit.memory import image_batch_bytes

    free = image_batch_bytes(2, 3, 64, 64) + 1  # by hand: 2 x 3 x 64 x 64 x (1 + 4 + 4) bytes
    assert free == 221_185
    monkeypatch.setattr(segkit.memory, "available_bytes", lambda device=None: free)
    with pytest.raises(ConfigError, match=r"resizing a batch of 4 image\(s\) of 3 channel\(s\) to the model's 64x64 "
                                          r"needs at least .*; use --batch-size 2 or less"):
        resize_images(torch.zeros(4, 3, 8, 8), (64, 64))
    assert resize_images(torch.zeros(2, 3, 8, 8), (64, 64)).shape == (2, 3, 64, 64)


def test_a_context_beyond_every_case_is_refused(tmp_path: Path) -> None:
    message = refused("run", *SMALL, "--set", "dataset.slices_per_case=4", "--set", "dataset.context=100000000",
                      out=tmp_path / "context")
    assert "the longest has 4 slice(s), so context 3 already stacks all of it" in message


def test_a_dataset_beyond_memory_is_refused_before_it_is_built(tmp_path: Path) -> None:
    message = refused("run", *SMALL, "--set", "dataset.count=1000000000000", out=tmp_path / "count")
    assert "use count" in message and "or less" in message
    message = refused("run", *SMALL, "--set", "dataset.size=1000000", out=tmp_path / "size")
    assert "use size" in message


def test_resume_refuses_epochs_no_run_can_train(trained_run: Path) -> None:
    before = (trained_run / "config.toml").read_text()
    message = refused("run", "--resume", str(trained_run), "--epochs", str(10**12))
    assert "--epochs = 1000000000000 is more than any run can train" in message
    assert (trained_run / "config.toml").read_text() == before


def test_cv_with_more_folds_than_cases_writes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "cv"
    message = refused("cv", *SMALL, "--set", "dataset.slices_per_case=4", "--folds", str(10**9), out=out)
    assert "--folds 1000000000 needs at least 1000000000 cases" in message and "has 4" in message


def test_a_cv_whose_first_fold_never_trained_does_not_block_the_corrected_command(tmp_path: Path) -> None:
    out = tmp_path / "cv"
    tiny = [*SMALL, "--set", "dataset.slices_per_case=4", "--folds", "2"]
    result = CliRunner().invoke(cli, ["cv", *tiny, "--batch-size", str(10**8), "--out", str(out)])
    assert result.exit_code == 2 and "--batch-size" in result.output  # refused in fold 0, after cv.json
    result = CliRunner().invoke(cli, ["cv", *tiny, "--batch-size", "8", "--fold", "0", "--out", str(out)])
    assert result.exit_code == 0, result.output[-2000:]
    assert (out / "fold-0" / "summary.json").is_file()


def test_inspect_samples_and_evaluate_tolerance_must_mean_something(trained_run: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["inspect", "synthetic", "--samples", "0", "--out", str(tmp_path / "g.png")])
    assert result.exit_code == 2 and "1<=x<=100" in result.output and not (tmp_path / "g.png").exists()
    listing = sorted(p.name for p in (trained_run / "evaluation").iterdir()) \
        if (trained_run / "evaluation").is_dir() else []
    message = refused("evaluate", str(trained_run), "--tolerance", "inf", "--quiet")
    assert "--tolerance must be a finite distance" in message
    after = sorted(p.name for p in (trained_run / "evaluation").iterdir()) \
        if (trained_run / "evaluation").is_dir() else []
    assert after == listing


def test_an_unreachable_mlflow_server_is_refused_at_start(tmp_path: Path) -> None:
    pytest.importorskip("mlflow")
    with socket_on_a_closed_port() as port:
        out = tmp_path / "run"
        result = segkit("run", *SMALL, "--logger", "mlflow", "--out", str(out), timeout=60,
                        env={"MLFLOW_TRACKING_URI": f"http://127.0.0.1:{port}"})
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert f"the tracking server http://127.0.0.1:{port} does not answer" in result.stderr
    assert not out.exists()


class socket_on_a_closed_port:
    """A local port that nothing listens on while the block runs (bound, never listening)."""

    def __enter__(self) -> int:
        import socket

        self.socket = socket.socket()
        self.socket.bind(("127.0.0.1", 0))
        return int(self.socket.getsockname()[1])

    def __exit__(self, *_exc: object) -> None:
        self.socket.close()
