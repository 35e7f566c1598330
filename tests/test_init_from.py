"""Fine-tuning: --init-from a run or checkpoint loads the tensors that fit, re-initialises and names the rest,
and refuses a source of another model before anything is written."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from clihelp import segkit
from conftest import TINY_TRAIN_ARGS
from segkit.components.registry import get_registry
from segkit.errors import ConfigError
from segkit.runs.checkpoint import load_checkpoint
from segkit.train.init_from import load_initial_weights


def test_matching_tensors_load_and_a_new_head_and_first_layer_are_named(trained_run: Path) -> None:
    source = load_checkpoint(trained_run / "checkpoints" / "best.pt")["model_state"]
    torch.manual_seed(5)
    model = get_registry().build("model", "unet", width=8, batch_norm=True, in_channels=1, classes=3)
    report = load_initial_weights(model, str(trained_run), "unet")
    state = model.state_dict()
    moved = [name for name, tensor in state.items()
             if name in source and source[name].shape == tensor.shape and not torch.equal(source[name], tensor)]
    assert moved == []  # every tensor that fits is the source's
    renamed = {name for name, _shape, _was in report.fresh}
    first_and_last = {name for name, tensor in state.items() if name in source and source[name].shape != tensor.shape}
    assert renamed == first_and_last and len(renamed) >= 2  # the 1-channel input conv and the 3-label head
    assert report.loaded == report.total - len(renamed) and report.loaded > 10
    line = report.describe()
    assert "re-initialised for this run:" in line and "was" in line and str(trained_run) in line


def test_a_source_of_another_model_is_refused_before_anything_is_written(trained_run: Path, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from segkit.cli import cli

    out = tmp_path / "finetune"
    data = ["--epochs", "1", "--set", "dataset.count=48", "--set", "dataset.size=32", "--batch-size", "8", "--quiet"]
    for extra, expected in (
            (["--model", "smp_unet", "--set", "model.encoder_name=resnet18", "--init-from", str(trained_run)],
             "holds a 'unet' model, and this run trains 'smp_unet'"),
            (["--init-from", str(tmp_path / "nowhere")], "does not exist")):
        result = CliRunner().invoke(cli, ["run", *data, *extra, "--out", str(out)])
        assert result.exit_code == 2 and isinstance(result.exception, SystemExit), result.output
        assert result.stderr.startswith("error: ") and expected in result.stderr and not out.exists()


def test_a_fine_tuned_run_says_what_it_loaded_and_records_its_source(trained_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "finetune"
    loud = [a for a in TINY_TRAIN_ARGS if a != "--quiet"]
    result = segkit("run", *loud, "--set", "dataset.classes=3", "--init-from",
                    str(trained_run / "checkpoints" / "best.pt"), "--out", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "initialised from" in result.stderr and "re-initialised for this run:" in result.stderr
    assert str(trained_run) in (out / "config.toml").read_text()


def test_no_tensor_fitting_is_a_config_error(trained_run: Path) -> None:
    model = get_registry().build("model", "unet", width=16, batch_norm=True)  # the source is width 8
    with pytest.raises(ConfigError, match="only 0% of this unet model's weights fit"):
        load_initial_weights(model, str(trained_run), "unet")
