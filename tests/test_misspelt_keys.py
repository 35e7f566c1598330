"""A misspelt key of any component kind is refused before any work, with a did-you-mean.

Parameters a target hands on through ``**kwargs`` (the smp models' ``decoder_channels``) are
listed by ``segkit info`` and checked like the target's own.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
from click.testing import CliRunner

from segkit.cli import cli
from segkit.components.params import accepts_extra, check_params, passthrough_signature, signature_parameters
from segkit.components.registry import get_registry
from segkit.errors import UnknownNameError

SMP_MODELS = [c.name for c in get_registry().list("model") if c.name.startswith("smp_")]


def run_refused(tmp_path: Path, *args: str) -> str:
    """``segkit run ARGS`` must fail with exit status 2 and leave no run directory; its output."""
    out = tmp_path / "run"
    result = CliRunner().invoke(cli, ["run", *args, "--epochs", "1", "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert not out.exists()
    return result.output


@pytest.mark.parametrize("args, typo, suggestion", [
    (("--model", "smp_unet", "--set", "model.decoder_chanels=[64,32,16,8,8]"), "decoder_chanels", "decoder_channels"),
    (("--model", "smp_fpn", "--set", "model.encoder_dept=3"), "encoder_dept", "encoder_depth"),
    (("--model", "unet", "--set", "model.widht=8"), "widht", "width"),
    (("--loss", "bce_dice", "--set", "loss.smoth=1.0"), "smoth", "smooth"),
    (("--set", "dataset.cont=4"), "cont", "count"),
    (("--set", "metrics.names=['dcie']"), "dcie", "dice"),
    (("--set", "metrics.treshold=0.4"), "treshold", "threshold"),
])
def test_misspelt_key_is_refused_before_any_work(tmp_path, args, typo, suggestion):
    output = run_refused(tmp_path, *args)
    assert f"'{typo}'" in output and f"Did you mean '{suggestion}'" in output
    assert "Traceback" not in output


@pytest.mark.parametrize("name", SMP_MODELS)
def test_info_lists_the_smp_class_parameters(name):
    result = CliRunner().invoke(cli, ["info", "model", name, "--json"])
    assert result.exit_code == 0, result.output
    listed = {p["name"] for p in __import__("json").loads(result.output)["parameters"]}
    assert {"encoder_name", "encoder_weights", "in_channels", "classes", "encoder_depth"} <= listed
    assert not listed & {"activation", "aux_params", "kwargs"}


def test_smp_unet_decoder_channels_reach_smp():
    import segmentation_models_pytorch as smp

    channels = [64, 32, 16, 8, 8]
    model = get_registry().build("model", "smp_unet", decoder_channels=channels)
    expected = smp.Unet(encoder_name="resnet34", encoder_weights=None, decoder_channels=channels)
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in expected.parameters())
    assert sum(p.numel() for p in model.parameters()) != sum(
        p.numel() for p in smp.Unet(encoder_name="resnet34", encoder_weights=None).parameters())


def test_smp_parameter_types_are_checked():
    component = get_registry().get("model", "smp_unet")
    with pytest.raises(Exception, match="decoder_channels.*must be Sequence\\[int\\]"):
        component.check_params({"decoder_channels": 64})
    assert component.check_params({"decoder_channels": [64, 32, 16, 8, 8]}) == {"decoder_channels": [64, 32, 16, 8, 8]}


@pytest.mark.parametrize("name", ["precision", "recall"])
def test_metric_without_parameters_accepts_none(name):
    with pytest.raises(UnknownNameError, match="empty_scor"):
        get_registry().build("metric", name, empty_scor=1.0)


def test_passthrough_signature_lists_and_checks_the_wrapped_parameters():
    def library_model(depth: int = 5, channels: tuple[int, ...] = (8, 4), activation: str | None = None,
                      **kwargs: object) -> None:
        pass

    def target(in_channels: int = 3, **kwargs: object) -> dict:
        return library_model(**kwargs)

    assert accepts_extra(target)
    target.__signature__ = passthrough_signature(target, library_model, exclude=("activation",),
                                                 extra=[inspect.Parameter("extra", inspect.Parameter.KEYWORD_ONLY,
                                                                          default=1, annotation=int)])
    assert not accepts_extra(target)
    assert [(p.name, p.type_label, p.default) for p in signature_parameters(target)] == [
        ("in_channels", "int", 3), ("depth", "int", 5), ("channels", "tuple[int]", (8, 4)), ("extra", "int", 1)]
    assert check_params("model 'x'", target, {"depth": 3, "channels": [2, 1]}) == {"depth": 3, "channels": (2, 1)}
    with pytest.raises(UnknownNameError, match="Did you mean 'depth'"):
        check_params("model 'x'", target, {"dept": 3})
    with pytest.raises(UnknownNameError, match="activation"):
        check_params("model 'x'", target, {"activation": "sigmoid"})
