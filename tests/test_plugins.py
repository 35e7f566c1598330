"""Plugin loading: entry points, -p modules and files, blocking, broken plugins, duplicates."""

from __future__ import annotations

import importlib.metadata as metadata
import json
import sys
import textwrap
from pathlib import Path

import pytest

from clihelp import segkit, write_plugin
from segkit.errors import DuplicateComponentError, PluginLoadError, UnknownNameError
from segkit.components.plugins import components_from_toml, load_plugins, parse_plugin_args
from segkit.components.registry import Registry

PLUGIN_WITH_MODEL = textwrap.dedent(
    """
    from segkit import hookimpl

    @hookimpl
    def segkit_components():
        return [{"kind": "model", "name": "{name}", "target": "{module}:build", "summary": "a model from a test plugin"}]

    def build(in_channels: int = 3, classes: int = 1, depth: int = 2):
        '''A 1x1 convolution, for tests.'''
        import torch
        return torch.nn.Conv2d(in_channels, classes, 1)
    """
)


def plugin_source(name: str, module: str) -> str:
    return PLUGIN_WITH_MODEL.replace("{name}", name).replace("{module}", module)


@pytest.fixture
def plugin_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def fake_entry_points(monkeypatch: pytest.MonkeyPatch, *points: metadata.EntryPoint) -> None:
    """Make importlib.metadata report ``points`` for the group 'segkit'."""
    real = metadata.entry_points

    def entry_points(**kwargs):
        if kwargs.get("group") == "segkit":
            return metadata.EntryPoints(points)
        return real(**kwargs)

    monkeypatch.setattr(metadata, "entry_points", entry_points)


def registry_for(*plugins: str, **kwargs) -> Registry:
    return Registry.from_plugins(load_plugins(plugins, environ={}, **kwargs))


def test_builtins_come_through_the_hook_from_registry_toml() -> None:
    registry = registry_for(autoload=False)
    declared = components_from_toml(Path(__file__).resolve().parents[1] / "registry.toml")
    assert {(d["kind"], d["name"]) for d in declared} == set(registry.components)
    assert all(c.plugin.name == "builtins" and c.plugin.distribution == "segkit" for c in registry.list())


def test_entry_point_plugin_is_loaded_with_its_distribution(plugin_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_plugin(plugin_dir, "ep_plugin", plugin_source("ep_model", "ep_plugin"))
    fake_entry_points(monkeypatch, metadata.EntryPoint("ep", "ep_plugin", "segkit"))
    registry = registry_for()
    component = registry.get("model", "ep_model")
    assert component.plugin.name == "ep"
    assert component.build(in_channels=1).in_channels == 1


def test_autoload_switch_and_blocking(plugin_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_plugin(plugin_dir, "ep_plugin2", plugin_source("ep_model2", "ep_plugin2"))
    fake_entry_points(monkeypatch, metadata.EntryPoint("ep2", "ep_plugin2", "segkit"))
    assert ("model", "ep_model2") not in registry_for(autoload=False).components
    env_off = Registry.from_plugins(load_plugins((), environ={"SEGKIT_DISABLE_PLUGIN_AUTOLOAD": "1"}))
    assert ("model", "ep_model2") not in env_off.components
    assert ("model", "ep_model2") not in registry_for("no:ep2").components
    assert ("model", "unet") not in registry_for("no:builtins").components


def test_broken_entry_point_is_reported_and_the_rest_works(plugin_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_plugin(plugin_dir, "broken_plugin", "import does_not_exist_anywhere\n")
    fake_entry_points(monkeypatch, metadata.EntryPoint("broken", "broken_plugin", "segkit"))
    registry = registry_for()
    assert registry.get("model", "unet")
    assert [p.name for p in registry.broken] == ["broken"]
    assert "does_not_exist_anywhere" in registry.broken[0].error
    with pytest.raises(UnknownNameError, match="plugin 'broken'.*failed to load"):
        registry.get("model", "from_broken")


def test_component_whose_target_fails_gives_a_clear_error(plugin_dir: Path) -> None:
    write_plugin(plugin_dir, "bad_target", textwrap.dedent(
        """
        from segkit import hookimpl

        @hookimpl
        def segkit_components():
            return [{"kind": "loss", "name": "ghost", "target": "no_such_module_xyz:Loss", "summary": "missing"}]
        """
    ))
    registry = registry_for("bad_target")
    assert registry.get("loss", "ghost").summary == "missing"
    with pytest.raises(PluginLoadError, match="loss 'ghost' from plugin 'bad_target'.*no_such_module_xyz"):
        registry.build("loss", "ghost")


def test_duplicate_names_are_an_error_naming_both_plugins(plugin_dir: Path) -> None:
    write_plugin(plugin_dir, "dup_plugin", plugin_source("unet", "dup_plugin"))
    with pytest.raises(DuplicateComponentError, match="'builtins'.*'dup_plugin'"):
        registry_for("dup_plugin")


def test_two_distributions_with_one_entry_point_name(plugin_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_plugin(plugin_dir, "first_ep", plugin_source("first_model", "first_ep"))
    write_plugin(plugin_dir, "second_ep", plugin_source("second_model", "second_ep"))
    fake_entry_points(monkeypatch, metadata.EntryPoint("same", "first_ep", "segkit"),
                      metadata.EntryPoint("same", "second_ep", "segkit"))
    registry = registry_for()
    assert ("model", "first_model") in registry.components
    assert "already taken" in registry.broken[0].error


def test_naming_an_autoloaded_module_with_p_is_harmless(plugin_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_plugin(plugin_dir, "twice_ep", plugin_source("twice_model", "twice_ep"))
    fake_entry_points(monkeypatch, metadata.EntryPoint("twice", "twice_ep", "segkit"))
    registry = registry_for("twice_ep")
    assert not registry.broken and ("model", "twice_model") in registry.components


def test_plugin_args_parsing() -> None:
    assert parse_plugin_args(["a", "no:b", "c,no:d", ""]) == (["a", "c"], {"b", "d"})


def test_missing_plugin_module_is_a_user_error() -> None:
    with pytest.raises(PluginLoadError, match="not found"):
        load_plugins(["surely_not_a_module_name"], environ={})


# -- through the real command line ------------------------------------------------------------------


def test_cli_loads_a_plugin_file(tmp_path: Path) -> None:
    path = write_plugin(tmp_path, "file_plugin", plugin_source("file_model", "segkit_local_plugin_file_plugin"))
    result = segkit("list", "model", "--json", "-p", str(path))
    assert result.returncode == 0, result.stderr
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert rows["file_model"]["plugin"] == "file_plugin"
    info = segkit("-p", str(path), "info", "model", "file_model")
    assert info.returncode == 0, info.stderr
    assert "depth" in info.stdout and "A 1x1 convolution" in info.stdout


def test_cli_plugins_from_environment_variable(tmp_path: Path) -> None:
    path = write_plugin(tmp_path, "env_plugin", plugin_source("env_model", "segkit_local_plugin_env_plugin"))
    result = segkit("list", "model", "--filter", "env_*", env={"SEGKIT_PLUGINS": str(path)})
    assert result.returncode == 0, result.stderr
    assert "env_model" in result.stdout


def test_cli_broken_plugin_file_does_not_break_list(tmp_path: Path) -> None:
    path = write_plugin(tmp_path, "crashing", "raise RuntimeError('plugin exploded on import')\n")
    result = segkit("list", "-p", str(path))
    assert result.returncode == 0, result.stderr
    assert "unet" in result.stdout
    assert "crashing" in result.stderr and "plugin exploded on import" in result.stderr
    plugins = segkit("list", "plugins", "--json", "-p", str(path))
    broken = [row for row in json.loads(plugins.stdout) if row["error"]]
    assert broken and broken[0]["name"] == "crashing"


def test_cli_duplicate_plugin_exits_2_naming_both(tmp_path: Path) -> None:
    path = write_plugin(tmp_path, "dupfile", plugin_source("unet", "segkit_local_plugin_dupfile"))
    result = segkit("list", "-p", str(path))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "'builtins'" in result.stderr and "'dupfile'" in result.stderr


def test_list_does_not_import_torch() -> None:
    code = (
        "import sys\n"
        "from segkit.cli import cli\n"
        "cli.main(['list'], standalone_mode=False)\n"
        "cli.main(['list', '--json'], standalone_mode=False)\n"
        "heavy = [m for m in ('torch', 'segmentation_models_pytorch', 'cv2', 'albumentations', 'monai') if m in sys.modules]\n"
        "print('HEAVY', heavy, file=sys.stderr)\n"
        "sys.exit(1 if heavy else 0)\n"
    )
    import subprocess

    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
