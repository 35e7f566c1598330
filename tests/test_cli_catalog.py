"""segkit list / info / encoders through the real command line, and its error messages."""

from __future__ import annotations

import json

from clihelp import segkit


def test_list_groups_every_kind_with_summary_and_plugin() -> None:
    result = segkit("list")
    assert result.returncode == 0, result.stderr
    for heading in ("dataset (", "model (", "loss (", "metric (", "planner ("):
        assert heading in result.stdout
    for name in ("unet", "smp_unet", "smp_deeplabv3plus", "bce_dice", "jaccard", "focal", "dice", "iou", "synthetic", "lgg"):
        assert f"  {name} " in result.stdout
    assert "segkit 0.1.0" in result.stdout


def test_list_json_has_the_documented_keys() -> None:
    result = segkit("list", "--json")
    rows = json.loads(result.stdout)
    assert all({"kind", "name", "summary", "plugin"} <= set(row) for row in rows)
    kinds = {row["kind"] for row in rows}
    assert kinds == {"dataset", "model", "loss", "metric", "augmentation", "volume_format", "planner"}


def test_list_one_kind_with_a_filter() -> None:
    result = segkit("list", "models", "--filter", "smp_deeplab*", "--json")
    names = [row["name"] for row in json.loads(result.stdout)]
    assert names == ["smp_deeplabv3", "smp_deeplabv3plus"]


def test_list_encoders_with_a_filter() -> None:
    result = segkit("list", "encoders", "--filter", "*resnet34*")
    assert result.returncode == 0, result.stderr
    names = result.stdout.split()
    assert "resnet34" in names
    assert any(name.startswith("tu-") for name in names)


def test_info_shows_parameters_defaults_types_plugin_and_file() -> None:
    result = segkit("info", "model", "unet")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "width" in out and "64" in out and "in_channels" in out and "int" in out
    assert "plugins/segkit_builtins/models/unet.py" in out
    assert "builtins (segkit 0.1.0)" in out
    data = json.loads(segkit("info", "loss", "bce_dice", "--json").stdout)
    assert {p["name"] for p in data["parameters"]} >= {"bce_weight", "dice_weight"}


def test_unknown_model_suggests_the_close_name() -> None:
    result = segkit("info", "model", "unte")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "unknown model 'unte'. Did you mean 'unet' or 'unet3d'?" in result.stderr
    assert "See 'segkit list model'." in result.stderr


def test_unknown_kind_and_option_value_suggest() -> None:
    kind = segkit("list", "modle")
    assert kind.returncode == 2 and "Did you mean 'model'?" in kind.stderr
    option = segkit("run", "--optimizer", "adamm", "--epochs", "1")
    assert option.returncode == 2 and "Did you mean 'adam'" in option.stderr and "Traceback" not in option.stderr


def test_unknown_run_component_is_caught_before_work(tmp_path) -> None:
    result = segkit("run", "--model", "unte", "--out", str(tmp_path / "run"))
    assert result.returncode == 2
    assert "Did you mean 'unet'" in result.stderr
    assert not (tmp_path / "run").exists()


def test_python_dash_m_and_version() -> None:
    result = segkit("--version")
    assert result.returncode == 0 and "0.1.0" in result.stdout
