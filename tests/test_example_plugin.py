"""The real, pip-installed example plugin (examples/segkit-example-plugin) seen through segkit.

The other plugin tests fake their entry points; this one needs the package installed
for real, as a user would: ``pip install --no-deps --no-build-isolation ./examples/segkit-example-plugin``.
Without it the whole module is skipped.
"""

from __future__ import annotations

import importlib.metadata as metadata
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from clihelp import REPO, segkit
from segkit.components.plugins import load_plugins
from segkit.components.registry import Registry

PLUGIN = "example"
DISTRIBUTION = "segkit-example-plugin"
MODEL = "example_tinyunet"
LOSS = "example_log_cosh_dice"
# Neither inherited setting may change what these tests see.
PLAIN_ENV = {"SEGKIT_PLUGINS": "", "SEGKIT_DISABLE_PLUGIN_AUTOLOAD": ""}


def _installed_entry_point() -> metadata.EntryPoint | None:
    for entry_point in metadata.entry_points(group="segkit", name=PLUGIN):
        if entry_point.dist is not None and entry_point.dist.metadata["Name"] == DISTRIBUTION:
            return entry_point
    return None


pytestmark = pytest.mark.skipif(
    _installed_entry_point() is None,
    reason=f"{DISTRIBUTION} is not installed; run "
    f"'pip install --no-deps --no-build-isolation {REPO / 'examples' / DISTRIBUTION}'",
)


def fresh_registry(*plugins: str, environ: dict[str, str] | None = None) -> Registry:
    """A registry built now, independent of the process's cache and environment."""
    return Registry.from_plugins(load_plugins(plugins, environ=environ or {}))


def list_json(*args: str, env: dict[str, str] | None = None) -> list[dict[str, str]]:
    result = segkit("list", "--json", *args, env={**PLAIN_ENV, **(env or {})})
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_entry_point_names_the_light_plugin_module() -> None:
    entry_point = _installed_entry_point()
    assert entry_point is not None and entry_point.value == "segkit_example.plugin"


def test_segkit_list_shows_the_components_with_plugin_and_distribution() -> None:
    result = segkit("list", env=PLAIN_ENV)
    assert result.returncode == 0, result.stderr
    rows = {line.split()[0]: line for line in result.stdout.splitlines() if line.startswith("  ")}
    for name in (MODEL, LOSS):
        assert name in rows, result.stdout
        assert f"{PLUGIN} ({DISTRIBUTION} " in rows[name]
    assert "unet" in rows and "bce_dice" in rows, "the built-ins are still listed"
    assert "warning" not in result.stderr, result.stderr


def test_segkit_list_json_rows() -> None:
    rows = {(row["kind"], row["name"]): row for row in list_json()}
    version = metadata.version(DISTRIBUTION)
    assert rows[("model", MODEL)] == {
        "kind": "model",
        "name": MODEL,
        "summary": rows[("model", MODEL)]["summary"],
        "plugin": PLUGIN,
        "distribution": DISTRIBUTION,
        "version": version,
        "target": "segkit_example.models:TinyUNet",
    }
    assert rows[("loss", LOSS)]["plugin"] == PLUGIN
    assert rows[("loss", LOSS)]["distribution"] == DISTRIBUTION
    assert rows[("loss", LOSS)]["target"] == "segkit_example.losses:LogCoshDiceLoss"
    assert all(row["summary"] for row in rows.values())


def test_segkit_list_plugins_reports_it_healthy() -> None:
    result = segkit("list", "plugins", "--json", env=PLAIN_ENV)
    assert result.returncode == 0, result.stderr
    plugins = {row["name"]: row for row in json.loads(result.stdout)}
    assert plugins[PLUGIN]["distribution"] == DISTRIBUTION
    assert plugins[PLUGIN]["module"] == "segkit_example.plugin"
    assert plugins[PLUGIN]["error"] is None


def test_listing_imports_neither_torch_nor_the_component_modules() -> None:
    code = (
        "import sys; from segkit.components.registry import get_registry; "
        f"get_registry().get('model', {MODEL!r}); "
        "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('segkit_example')))"
    )
    env = {**os.environ, **PLAIN_ENV}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "['segkit_example', 'segkit_example.plugin']"


def test_registry_builds_a_working_model_and_loss() -> None:
    torch = pytest.importorskip("torch")
    registry = fresh_registry()
    model = registry.build("model", MODEL, in_channels=1, classes=2, width=4)
    model.eval()
    with torch.no_grad():
        logits = model(torch.rand(1, 1, 37, 50))  # odd sizes are padded and cropped back
    assert logits.shape == (1, 2, 37, 50)
    loss = registry.build("loss", LOSS)
    target = (torch.rand(1, 2, 37, 50) > 0.5).float()
    value = loss(logits, target)
    assert value.ndim == 0 and torch.isfinite(value)


def test_segkit_info_describes_it() -> None:
    info = fresh_registry().get("model", MODEL).describe()
    assert info["plugin"] == PLUGIN and info["distribution"] == DISTRIBUTION
    assert {p["name"] for p in info["parameters"]} >= {"in_channels", "classes", "width"}
    assert Path(info["file"]).name == "models.py"
    assert "logits" in info["doc"]


@pytest.mark.parametrize("block", [PLUGIN, DISTRIBUTION, "segkit_example.plugin"])
def test_blocked_by_name_distribution_or_module(block: str) -> None:
    loaded = load_plugins([f"no:{block}"], environ={})
    assert PLUGIN not in {info.name for info, _ in loaded.loaded}
    assert not loaded.broken
    registry = Registry.from_plugins(loaded)
    assert MODEL not in registry.names("model") and "unet" in registry.names("model")


def test_cli_p_no_blocks_it() -> None:
    names = {row["name"] for row in list_json("-p", f"no:{PLUGIN}")}
    assert MODEL not in names and LOSS not in names and "unet" in names


def test_autoload_switch_hides_it_and_p_brings_it_back() -> None:
    off = {"SEGKIT_DISABLE_PLUGIN_AUTOLOAD": "1"}
    names = {row["name"] for row in list_json(env=off)}
    assert MODEL not in names and "unet" in names
    rows = {row["name"]: row for row in list_json("-p", "segkit_example.plugin", env=off)}
    assert rows[MODEL]["distribution"] == DISTRIBUTION
    assert MODEL not in fresh_registry(environ=off).names("model")


@pytest.mark.slow
def test_trains_through_segkit_run(tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = segkit(
        "run", "--model", MODEL, "--loss", LOSS, "--epochs", "1",
        "--set", "dataset.count=32", "--set", "model.width=8", "--image-size", "64",
        "--device", "cpu", "--workers", "0", "--out", str(out), "--quiet",
        env=PLAIN_ENV, timeout=180,
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary, "summary.json is empty"
    config = (out / "config.toml").read_text()
    assert f'name = "{MODEL}"' in config and f'name = "{LOSS}"' in config
