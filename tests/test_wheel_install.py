"""Packaging: the segkit wheel installs into a fresh environment and works outside the repository.

What this proves, and why it is not covered elsewhere: the test suite imports segkit
from the editable install, which reads ``registry.toml`` straight from the repository.
Here the wheel is built from a copy of the sources, installed into a new virtual
environment, and ``segkit list`` runs from a folder outside the repository, so the
built-ins can only appear if ``segkit_builtins/registry.toml`` ships inside the wheel.

Offline and quick (about 10-20 s): the build uses the setuptools already installed
(no build isolation), and the new environment reaches torch and the other
dependencies through a ``.pth`` file naming the development environment's
site-packages instead of installing them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from clihelp import REPO

pytestmark = pytest.mark.slow

# Never copied into the build tree: environments, caches, build outputs, run results.
_IGNORED_ANYWHERE = shutil.ignore_patterns(
    ".git", ".venv", "venv", "build", "dist", "*.egg-info", "__pycache__", "*.pyc",
    ".pytest_cache", ".whl", "shared", "examples",
)


def IGNORED(folder: str, names: list[str]) -> set[str]:  # noqa: N802 - used like shutil.ignore_patterns' result
    """What copytree leaves out: the patterns anywhere, and run results (``runs/``) at the top only, since
    ``toolkit/segkit/runs`` is the package that owns run directories."""
    ignored = set(_IGNORED_ANYWHERE(folder, names))
    if Path(folder).resolve() == REPO.resolve() and "runs" in names:
        ignored.add("runs")
    return ignored


def run(*args: str | Path, cwd: Path, env: dict[str, str] | None = None, timeout: float = 120) -> str:
    result = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{' '.join(map(str, args))} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The segkit wheel, built from a copy of the repository (the repository is left untouched)."""
    pytest.importorskip("setuptools", reason="building the wheel offline needs setuptools in this environment")
    root = tmp_path_factory.mktemp("wheel")
    source = root / "src"
    shutil.copytree(REPO, source, ignore=IGNORED, symlinks=True)
    out = root / "dist"
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
        "--wheel-dir", out, source, cwd=root, timeout=180)
    wheels = list(out.glob("segkit-*.whl"))
    assert len(wheels) == 1, f"expected one segkit wheel, found {wheels}"
    return wheels[0]


@pytest.fixture(scope="module")
def venv_python(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A new virtual environment with the wheel installed; the heavy dependencies come from this one's site-packages."""
    venv = tmp_path_factory.mktemp("venv") / "env"
    run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=venv.parent)
    python = venv / "bin" / "python"
    site_packages = Path(run(python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))", cwd=venv.parent).strip())
    # Appended after the new environment's own site-packages, so the installed wheel wins over the editable segkit.
    (site_packages / "_segkit_test_dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    run(sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index",
        "--ignore-installed", wheel, cwd=venv.parent)
    return python


def clean_env() -> dict[str, str]:
    """The current environment without anything that could point Python back at the repository."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.update(SEGKIT_PLUGINS="", SEGKIT_DISABLE_PLUGIN_AUTOLOAD="1", PYTHONNOUSERSITE="1")
    return env


def test_wheel_contents(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    assert "segkit_builtins/registry.toml" in names
    assert "segkit/cli/__init__.py" in names
    assert "segkit/__init__.py" in names and "segkit_builtins/__init__.py" in names
    assert not [n for n in names if n.startswith(("tests/", "toolkit/", "plugins/", "examples/"))], names
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "segkit = segkit.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_registry_toml_in_the_wheel_is_the_real_file(wheel: Path) -> None:
    shipped = zipfile.ZipFile(wheel).read("segkit_builtins/registry.toml").decode()
    assert shipped == (REPO / "registry.toml").read_text(), "the wheel must hold the file, not a symlink to it"


def test_installed_package_lives_in_site_packages(venv_python: Path, tmp_path: Path) -> None:
    code = (
        "import json, pathlib, segkit, segkit_builtins; "
        "print(json.dumps([segkit.__file__, segkit_builtins.__file__, "
        "str(pathlib.Path(segkit_builtins.__file__).with_name('registry.toml').resolve())]))"
    )
    files = [Path(f) for f in json.loads(run(venv_python, "-c", code, cwd=tmp_path, env=clean_env()))]
    venv = venv_python.parents[1].resolve()
    for path in files:
        assert path.resolve().is_relative_to(venv), f"{path} is not inside the new environment {venv}"
        assert not path.resolve().is_relative_to(REPO.resolve()), f"{path} comes from the repository"
    assert files[2].is_file()


def test_segkit_list_from_outside_the_repository(venv_python: Path, tmp_path: Path) -> None:
    segkit = venv_python.parent / "segkit"
    assert segkit.is_file(), "the wheel must install the 'segkit' console script"
    env = clean_env()
    table = run(segkit, "list", cwd=tmp_path, env=env)
    for name in ("unet", "smp_unet", "bce_dice", "dice", "synthetic", "lgg"):
        assert f"  {name} " in table, table
    plugins = json.loads(run(segkit, "list", "plugins", "--json", cwd=tmp_path, env=env))
    assert [(p["name"], p["error"]) for p in plugins] == [("builtins", None)]
    rows = json.loads(run(segkit, "list", "model", "--json", cwd=tmp_path, env=env))
    assert {"unet", "smp_unet"} <= {row["name"] for row in rows}


def test_example_plugin_wheel_installs_beside_it(venv_python: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    """The example plugin, built as a wheel too, ships components.toml and is found by its entry point."""
    root = tmp_path_factory.mktemp("example")
    source = root / "src"
    shutil.copytree(REPO / "examples" / "segkit-example-plugin", source, ignore=IGNORED)
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
        "--wheel-dir", root / "dist", source, cwd=root, timeout=180)
    (example_wheel,) = (root / "dist").glob("segkit_example_plugin-*.whl")
    assert "segkit_example/components.toml" in zipfile.ZipFile(example_wheel).namelist()
    run(sys.executable, "-m", "pip", "--python", venv_python, "install", "--no-deps", "--no-index",
        "--ignore-installed", example_wheel, cwd=root)
    env = {**clean_env(), "SEGKIT_DISABLE_PLUGIN_AUTOLOAD": ""}
    segkit = venv_python.parent / "segkit"
    plugins = {p["name"]: p for p in json.loads(run(segkit, "list", "plugins", "--json", cwd=root, env=env))}
    assert plugins["example"]["distribution"] == "segkit-example-plugin" and plugins["example"]["error"] is None
    rows = {row["name"]: row for row in json.loads(run(segkit, "list", "--json", cwd=root, env=env))}
    assert rows["example_tinyunet"]["plugin"] == "example" and "unet" in rows
    info = json.loads(run(segkit, "info", "model", "example_tinyunet", "--json", cwd=root, env=env, timeout=180))
    assert Path(info["file"]).resolve().is_relative_to(venv_python.parents[1].resolve()), info["file"]
