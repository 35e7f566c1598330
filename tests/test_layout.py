"""The package layout is the architecture: imports lead to files, the top folder holds shared modules only.

docs/architecture.md draws the layout; these tests keep it true as modules move and grow.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import shutil
import subprocess
import tomllib
import warnings
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ROOTS = {"segkit": REPO / "toolkit" / "segkit", "segkit_builtins": REPO / "plugins" / "segkit_builtins"}
#: The core's top folder: the shared modules every stage uses, the public testing name, and the
#: deprecated forwarders to components/.
TOP_MODULES = {"__init__", "__main__", "errors", "config", "labels", "tomlio", "fileio", "progress", "memory", "testing",
               "registry", "plugins", "hookspecs", "device"}
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


def test_no_source_file_is_ignored_by_git() -> None:
    """A package folder named like an output folder (``runs/``) must not fall under .gitignore: the
    files exist here but a clean clone, CI and every user would lack them."""
    if not (REPO / ".git").exists() or shutil.which("git") is None:
        pytest.skip("not a git checkout (an installed copy or an sdist): nothing to compare with .gitignore")
    sources = [str(p.relative_to(REPO)) for p in python_files()] + ["registry.toml", "pyproject.toml"]
    result = subprocess.run(["git", "check-ignore", "--no-index", "--stdin"], input="\n".join(sources),
                            cwd=REPO, capture_output=True, text=True)
    ignored = result.stdout.split()
    assert not ignored, "these source files are git-ignored (fix .gitignore):\n" + "\n".join(ignored)


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
    assert packages == {"components", "data", "train", "evaluation", "inference", "planning", "cli", "runs", "figures",
                        "scoring"}


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


LONGEST_FUNCTION = 100
"""Lines of the longest function in the toolkit: past it a function wants its steps named."""


def test_no_function_in_the_toolkit_runs_past_a_hundred_lines() -> None:
    long = []
    for path in ROOTS["segkit"].rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length >= LONGEST_FUNCTION:
                    long.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name} ({length} lines)")
    assert not long, f"functions of {LONGEST_FUNCTION} lines or more; name their steps: {long}"


def test_a_run_reads_in_one_screen_as_named_steps() -> None:
    """segkit.train.runner.train and RunSession.run, the run itself, each under 80 lines."""
    from segkit.train import runner, session

    for module, name in ((runner, "train"), (session.RunSession, "run")):
        source = inspect.getsource(getattr(module, name))
        assert source.count("\n") < 80, f"{name} is {source.count(chr(10))} lines"


#: The stages of the core, each importing only itself and the stages after it (docs/architecture.md): the
#: commands, the planner, scoring a model, training it, using it, the run directory, the data, the shared
#: figures and scores, the configuration, the registry, and the top folder's shared modules.
STAGES = ("cli", "planning", "evaluation", "train", "inference", "runs", "data", "figures", "scoring", "config",
          "components", "shared")
SHARED = {"errors", "labels", "tomlio", "fileio", "progress", "memory", "device"}
#: The public names at the top (the package itself, python -m segkit, the deprecated forwarders, segkit.testing):
#: they re-export from every stage and are imported by none of them, except for the version.
FACADES = {"segkit", "segkit.__main__", "segkit.registry", "segkit.plugins", "segkit.hookspecs", "segkit.testing"}


def _stage(dotted: str) -> str:
    parts = dotted.split(".")
    if len(parts) == 1 or dotted in FACADES:
        return "facade"
    if parts[1] == "config":
        return "config"
    return "shared" if parts[1] in SHARED else parts[1]


def _core_imports() -> list[tuple[str, str, int]]:
    """(importing module, imported module, line) of every segkit import in the core, at any depth of the file."""
    found = []
    for path in ROOTS["segkit"].rglob("*.py"):
        module = ".".join(("segkit", *path.relative_to(ROOTS["segkit"]).with_suffix("").parts)).removesuffix(".__init__")
        if module in FACADES:
            continue
        for line, target, names in imported_modules(path):
            if target.split(".")[0] != "segkit":
                continue
            if target == "segkit":
                targets = [f"segkit.{name}" for name in names if name != "__version__"]  # the version is metadata
            else:
                targets = [target]
            found += [(module, t, line) for t in targets]
    return found


def test_stages_import_one_way() -> None:
    against = []
    for module, target, line in _core_imports():
        source, destination = _stage(module), _stage(target)
        assert source in STAGES, f"{module} is in no stage; add its package to STAGES"
        if destination == "facade":
            against.append(f"{module}:{line} imports {target}, a public facade")
        elif destination != source and STAGES.index(destination) < STAGES.index(source):
            against.append(f"{module}:{line} ({source}) imports {target} ({destination})")
    assert not against, "imports against the stage order " + " > ".join(STAGES) + ":\n" + "\n".join(against)


def test_no_circle_closes_across_packages() -> None:
    graph: dict[str, set[str]] = {}
    for module, target, _line in _core_imports():
        source, destination = _stage(module), _stage(target)
        if source != destination and destination != "facade":
            graph.setdefault(source, set()).add(destination)

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        return any(nxt == goal or (nxt not in seen and reaches(nxt, goal, seen | {nxt})) for nxt in graph.get(start, ()))

    circles = sorted(f"{a} -> {b} -> ... -> {a}" for a, targets in graph.items() for b in targets if reaches(b, a, {b}))
    assert not circles, circles
