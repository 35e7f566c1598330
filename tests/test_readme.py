"""The README's two commands are the ones CI and users run."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def readme_commands() -> list[str]:
    lines = (REPO / "README.md").read_text().splitlines()
    return [line.strip() for line in lines if line.startswith("    python3 -m venv")]


def test_readme_starts_with_the_two_commands() -> None:
    commands = readme_commands()
    assert len(commands) == 2
    main_job, tests = commands
    assert "segkit run --model unet --loss bce_dice" in main_job
    assert "pytest" in tests


def test_ci_runs_the_readme_test_command_word_for_word() -> None:
    ci = (REPO / ".ci" / "run").read_text().splitlines()
    assert readme_commands()[1] in [line.strip() for line in ci]


def test_the_readme_says_how_long_the_tests_take_and_where_the_report_is() -> None:
    import re

    lines = (REPO / "README.md").read_text().splitlines()
    test_command = next(k for k, line in enumerate(lines) if line.strip() == readme_commands()[1])
    assert re.search(r"about \d+ minutes", " ".join(lines[test_command - 3:test_command]))  # said just before it
    first = next(k for k, line in enumerate(lines) if line.strip() == readme_commands()[0])
    after_first = " ".join(lines[first + 1:test_command])
    assert "report.html" in after_first and "segkit report runs/<run>" in after_first


def test_docs_linked_from_the_readme_exist() -> None:
    import re

    for target in re.findall(r"\]\(([^)#]+)\)", (REPO / "README.md").read_text()):
        assert (REPO / target).exists(), target


# --- the README's install for machines without a GPU ----------------------------------------------------------
# Offline, the real indexes cannot be reached; what is tested is pip's own resolution of the README's commands
# (run as written, with the two indexes swapped for local folders) on wheels with the same pins: a CPU torch
# 2.0.0+cpu and its torchvision on the "CPU index", a newer torch and a torchvision that requires it on "PyPI",
# and a package that needs torch and torchvision, as segkit does through smp and timm.

CPU_INDEX = "--index-url https://download.pytorch.org/whl/cpu"


def _wheel(folder: Path, name: str, version: str, requires: tuple[str, ...] = ()) -> None:
    """A minimal pure-Python wheel of ``name`` ``version`` that requires ``requires``."""
    folder.mkdir(parents=True, exist_ok=True)
    info = f"{name}-{version}.dist-info"
    files = {f"{name}/__init__.py": f"__version__ = {version!r}\n",
             f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
                                 + "".join(f"Requires-Dist: {r}\n" for r in requires),
             f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: segkit-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    files[f"{info}/RECORD"] = "".join(f"{path},,\n" for path in files) + f"{info}/RECORD,,\n"
    with zipfile.ZipFile(folder / f"{name}-{version}-py3-none-any.whl", "w") as archive:
        for path, text in files.items():
            archive.writestr(path, text)


def _cpu_install_commands() -> list[str]:
    lines = (REPO / "README.md").read_text().splitlines()
    return [line.strip() for line in lines if line.startswith("    .venv/bin/pip ")]


def _installed_torch(commands: list[str], folder: Path) -> str:
    """Run ``commands`` (README lines) in a new environment in ``folder``, offline; the torch they leave."""
    indexes = folder.parent
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder / ".venv")], check=True)
    pip = folder / ".venv" / "bin" / "pip"  # the environment's pip: this interpreter's pip aimed at it
    pip.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m pip --python "{folder}/.venv/bin/python" '
                   '--disable-pip-version-check -q "$@"\n')
    pip.chmod(0o755)
    env = {**os.environ, "PIP_CONFIG_FILE": os.devnull, "PIP_NO_CACHE_DIR": "1"}
    for command in commands:
        offline = (command.replace(CPU_INDEX, f"--no-index --find-links {indexes / 'cpu'}")
                   .replace(" install . ", f" install --no-index --find-links {indexes / 'pypi'} needs-torchvision "))
        done = subprocess.run(["bash", "-c", offline], cwd=folder, env=env, capture_output=True, text=True)
        assert done.returncode == 0, f"{offline}\n{done.stderr[-2000:]}"
    installed = [path.name for path in (folder / ".venv").glob("lib/python*/site-packages/torch-*.dist-info")]
    assert len(installed) == 1, installed
    return installed[0].removesuffix(".dist-info").replace("-", "==")


def test_the_readme_install_without_a_gpu_keeps_the_cpu_torch(tmp_path: Path) -> None:
    version = subprocess.run([sys.executable, "-m", "pip", "--version"], capture_output=True, text=True)
    if version.returncode != 0 or tuple(int(n) for n in version.stdout.split()[1].split(".")[:2]) < (22, 3):
        pytest.skip(f"pip 22.3 or newer (for --python) is needed here: {version.stdout or version.stderr}")
    commands = _cpu_install_commands()
    assert len(commands) == 3 and CPU_INDEX in commands[0] and " torch torchvision " in commands[0]
    assert commands[2].endswith(" install . -c constraints.txt") and "> constraints.txt" in commands[1]
    quickstart = (REPO / "docs" / "quickstart.md").read_text()
    assert all(f"    {command}\n" in quickstart for command in commands)  # the same advice where users look
    _wheel(tmp_path / "cpu", "torch", "2.0.0+cpu")
    _wheel(tmp_path / "cpu", "torchvision", "0.15.0+cpu", ("torch==2.0.0",))
    _wheel(tmp_path / "pypi", "torch", "2.1.0")  # the newer (CUDA) build
    _wheel(tmp_path / "pypi", "torchvision", "0.16.0", ("torch==2.1.0",))
    _wheel(tmp_path / "pypi", "torchvision", "0.15.0", ("torch==2.0.0",))
    _wheel(tmp_path / "pypi", "needs_torchvision", "1.0", ("torch>=2.0", "torchvision"))

    assert _installed_torch(commands, tmp_path / "readme") == "torch==2.0.0+cpu"
    # The README's former advice, torch alone from the CPU index then 'pip install .', loses it here too:
    former = [f".venv/bin/pip install torch {CPU_INDEX}", ".venv/bin/pip install . -c /dev/null"]
    assert _installed_torch(former, tmp_path / "former") == "torch==2.1.0"


def test_user_facing_files_speak_to_users_not_of_the_tracker() -> None:
    """configs/, docs/ and the README are read by users: no "the issue asks", "issue 28" or "the tracker"."""
    import re

    internal = re.compile(r"\bthe issue\b|\bissues?\s+\d+|\bissue's\b|\bthe tracker\b", re.IGNORECASE)
    found = []
    for path in [REPO / "README.md", *(REPO / "docs").glob("*.md"), *(REPO / "configs").glob("*.toml")]:
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            if internal.search(line) and "kornia issue" not in line:  # an upstream library's issue is a reference
                found.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    assert not found, "\n".join(found)
