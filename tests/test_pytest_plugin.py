"""segkit's pytest plugin lets a plugin author run the conformance suite on their own package,
and a broken plugin installed beside segkit fails its own checks, never segkit's suite.

The broken plugin is installed for real, as pip would leave it: a package and its
``.dist-info`` (with the ``segkit`` entry point) on the path of the pytest subprocesses.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from importlib import metadata
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "segkit-example-plugin"

PARTS = '''
import torch


class Probabilities(torch.nn.Module):
    """Breaks the model contract: returns sigmoid probabilities, not logits."""

    def __init__(self, in_channels: int = 3, classes: int = 1) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(in_channels, classes, 3, padding=1)

    def forward(self, x):
        return torch.sigmoid(self.conv(x))


class NeedsRoot(torch.utils.data.Dataset):
    """A dataset that cannot be built without its folder."""

    def __init__(self, root: str) -> None:
        self.root = root
'''

PLUGIN = '''
from segkit.components.hookspecs import hookimpl


@hookimpl
def segkit_components():
    return [
        {"kind": "model", "name": "broken_probabilities", "target": "broken_segkit_plugin.parts:Probabilities",
         "summary": "returns probabilities"},
        {"kind": "dataset", "name": "broken_needs_root", "target": "broken_segkit_plugin.parts:NeedsRoot",
         "summary": "needs a root"},
    ]
'''


@pytest.fixture(scope="module")
def broken_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding an installed third-party plugin whose components break segkit's contracts."""
    site = tmp_path_factory.mktemp("site")
    package = site / "broken_segkit_plugin"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "parts.py").write_text(PARTS)
    (package / "plugin.py").write_text(PLUGIN)
    info = site / "broken_segkit_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-segkit-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[segkit]\nbroken = broken_segkit_plugin.plugin\n")
    (info / "top_level.txt").write_text("broken_segkit_plugin\n")
    return site


def pytest_run(*args: str, cwd: Path, site: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    if site is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), env.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def test_the_pytest_plugin_is_registered_with_pytest() -> None:
    [entry_point] = [e for e in metadata.entry_points(group="pytest11") if e.name == "segkit"]
    assert entry_point.value == "segkit.components.pytest_plugin"


@pytest.mark.skipif(not any(e.value == "segkit_example.plugin" for e in metadata.entry_points(group="segkit")),
                    reason="segkit-example-plugin is not installed; pip install ./examples/segkit-example-plugin")
def test_a_plugin_package_runs_the_conformance_suite_on_its_own_components() -> None:
    result = pytest_run("-v", "tests/test_conformance.py", cwd=EXAMPLE)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "test_conforms[loss:example_log_cosh_dice] PASSED" in result.stdout
    assert "test_conforms[model:example_tinyunet] PASSED" in result.stdout


def test_the_suite_fails_each_broken_component_of_the_authors_plugin_by_name(broken_site: Path,
                                                                             tmp_path: Path) -> None:
    (tmp_path / "test_broken.py").write_text(textwrap.dedent('''
        import pytest
        pytestmark = pytest.mark.segkit_plugin("broken-segkit-plugin")

        def test_conforms(segkit_component):
            segkit_component.check()
    '''))
    result = pytest_run("-v", "test_broken.py", cwd=tmp_path, site=broken_site)
    assert result.returncode == 1, result.stdout[-3000:] + result.stderr[-2000:]
    assert "test_conforms[dataset:broken_needs_root] FAILED" in result.stdout
    assert "test_conforms[model:broken_probabilities] FAILED" in result.stdout
    assert "dataset:broken_needs_root from broken-segkit-plugin needs root" in result.stdout
    assert "looks like probabilities" in result.stdout


@pytest.mark.parametrize(("marker", "message"), [
    ("", "names no plugin: mark it"),
    ('pytestmark = pytest.mark.segkit_plugin("no-such-plugin")', "registers no segkit components. Is it installed"),
])
def test_a_wrong_use_of_the_fixture_says_what_to_do(tmp_path: Path, marker: str, message: str) -> None:
    (tmp_path / "test_use.py").write_text(f"import pytest\n{marker}\n\ndef test_conforms(segkit_component):\n"
                                          "    segkit_component.check()\n")
    result = pytest_run("test_use.py", cwd=tmp_path)
    assert result.returncode != 0 and message in result.stdout + result.stderr


def test_a_broken_plugin_installed_beside_segkit_does_not_fail_segkits_suite(broken_site: Path) -> None:
    listed = subprocess.run([sys.executable, "-m", "segkit", "list", "models"], capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(broken_site)}, timeout=120)
    assert "broken_probabilities" in listed.stdout  # it is installed and segkit sees it
    collected = pytest_run("--collect-only", "-q", "tests/test_conformance.py", cwd=REPO, site=broken_site)
    assert collected.returncode == 0, collected.stdout[-3000:]
    assert "broken_probabilities" not in collected.stdout and "broken_needs_root" not in collected.stdout
    result = pytest_run("-q", "tests/test_conformance.py", "-k", "not test_model_conforms", cwd=REPO,
                        site=broken_site)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
