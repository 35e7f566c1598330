"""The package layout is the architecture: imports lead to files, the top folder holds shared modules only.

docs/architecture.md draws the layout; these tests keep it true as modules move and grow.
"""

from __future__ import annotations

import ast
import importlib
import tomllib
import warnings
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ROOTS = {"segkit": REPO / "toolkit" / "segkit", "segkit_builtins": REPO / "plugins" / "segkit_builtins"}
#: The core's top folder: the shared modules every stage uses, the public testing name, and the
#: deprecated forwarders to components/.
TOP_MODULES = {"__init__", "__main__", "errors", "config", "labels", "tomlio", "fileio", "progress", "memory", "testing",
               "registry", "plugins", "hookspecs"}
DEPRECATED = {"registry": "segkit.components.registry", "plugins": "segkit.components.plugins",
              "hookspecs": "segkit.components.hookspecs"}
LONG = 420  # 'about 400 lines' (../shared/STYLE.md); past it a module says why
CODE_FOLDERS = ("toolkit", "plugins", "tests", "benchmarks", "examples")


def module_file(dotted: str) -> Path | None:
    """The file that ``dotted`` (a segkit or segkit_builtins module) is, or None."""
    top, *rest = dotted.split(".")
    path = ROOTS[top].joinpath(*rest)
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def python_files() -> list[Path]:
    files = []
    for folder in CODE_FOLDERS:
        files += [p for p in (REPO / folder).rglob("*.py") if "build" not in p.parts and ".venv" not in p.parts]
    return sorted(files)


def imported_modules(path: Path) -> list[tuple[int, str, list[str]]]:
    """(line, module, names) of every segkit import in ``path``; names for ``from M import a, b``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module, [alias.name for alias in node.names]))
    return [item for item in found if item[1].split(".")[0] in ROOTS]


def test_every_import_names_a_file_at_that_path() -> None:
    missing = []
    for path in python_files():
        for line, module, names in imported_modules(path):
            if module_file(module) is None:
                missing.append(f"{path.relative_to(REPO)}:{line}: {module}")
                continue
            # `from segkit.components import hookspecs` names a module too: it must be a file there.
            package = module_file(module)
            if package is not None and package.name == "__init__.py":
                for name in names:
                    submodule = package.parent / f"{name}.py"
                    if not submodule.exists() and not (package.parent / name).is_dir():
                        source = package.read_text()
                        if name not in source and name != "*":
                            missing.append(f"{path.relative_to(REPO)}:{line}: {module}.{name}")
    assert not missing, "imports that name no file:\n" + "\n".join(missing)


def test_registry_targets_name_files_and_attributes() -> None:
    registry = tomllib.loads((REPO / "registry.toml").read_text())
    wrong = []
    for kind, components in registry.items():
        for name, spec in components.items():
            module, _, attr = spec["target"].partition(":")
            if module_file(module) is None or not hasattr(importlib.import_module(module), attr):
                wrong.append(f"{kind}.{name}: {spec['target']}")
    assert not wrong, wrong


def test_packages_sit_under_their_import_names() -> None:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "package-dir" not in pyproject["tool"]["setuptools"], "the src layout needs no renaming"
    import segkit
    import segkit_builtins

    assert Path(segkit.__file__).resolve() == ROOTS["segkit"] / "__init__.py"
    assert Path(segkit_builtins.__file__).resolve() == ROOTS["segkit_builtins"] / "__init__.py"
    assert (ROOTS["segkit_builtins"] / "registry.toml").resolve() == (REPO / "registry.toml").resolve()


def test_core_top_folder_holds_only_the_shared_modules() -> None:
    top = {p.stem for p in ROOTS["segkit"].glob("*.py")}
    assert top <= TOP_MODULES, f"move these into the package of their stage: {sorted(top - TOP_MODULES)}"
    packages = {p.name for p in ROOTS["segkit"].iterdir() if (p / "__init__.py").is_file()}
    assert packages == {"components", "data", "train", "evaluation", "inference", "planning", "cli"}


def test_long_modules_say_why_in_their_docstring() -> None:
    unexplained = []
    for root in ROOTS.values():
        for path in root.rglob("*.py"):
            lines = path.read_text().count("\n")
            docstring = ast.get_docstring(ast.parse(path.read_text())) or ""
            if lines > LONG and "Why it is long:" not in docstring:
                unexplained.append(f"{path.relative_to(REPO)} ({lines} lines)")
    assert not unexplained, f"over {LONG} lines with no 'Why it is long:' in the docstring: {unexplained}"


@pytest.mark.parametrize("old", sorted(DEPRECATED))
def test_old_module_paths_still_work_and_name_the_new_place(old: str) -> None:
    new = importlib.import_module(DEPRECATED[old])
    module = importlib.import_module(f"segkit.{old}")
    name = {"hookspecs": "hookimpl", "plugins": "components_from_toml", "registry": "Registry"}[old]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = getattr(module, name)
    assert value is getattr(new, name)
    assert any(issubclass(w.category, DeprecationWarning) and DEPRECATED[old] in str(w.message) for w in caught)
    with pytest.raises(AttributeError, match="no attribute"):
        getattr(module, "no_such_name")


def test_plugin_author_api_stays_where_the_docs_say() -> None:
    from segkit import hookimpl
    from segkit.components import Registry, components_from_toml, load_plugins
    from segkit.data import SegmentationDataset
    from segkit.errors import DataError
    from segkit.testing import check_components, check_dataset, check_loss, check_metric, check_model

    assert all([hookimpl, Registry, components_from_toml, load_plugins, SegmentationDataset, DataError,
                check_components, check_dataset, check_loss, check_metric, check_model])
