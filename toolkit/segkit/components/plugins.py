"""Finding and loading plugins: the built-ins, entry points, ``-p`` modules and files.

The order mirrors pytest's: the built-in plugin first (through the very same hook a
third party implements), then every entry point of the group ``segkit`` unless
``SEGKIT_DISABLE_PLUGIN_AUTOLOAD`` is set, then the modules or ``.py`` files named
with ``-p NAME`` or in ``SEGKIT_PLUGINS`` (comma separated). ``-p no:NAME`` blocks
a plugin by its name, module or distribution.

A plugin that fails to import is recorded as *broken*, with its error, and
everything else keeps working.
"""

from __future__ import annotations

import importlib
import importlib.metadata as metadata
import importlib.util
import os
import sys
import tomllib
import traceback
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import pluggy

from segkit.components import hookspecs
from segkit.errors import PluginLoadError

__all__ = [
    "AUTOLOAD_ENV",
    "BUILTIN_PLUGIN",
    "PLUGINS_ENV",
    "PluginInfo",
    "LoadedPlugins",
    "components_from_toml",
    "load_plugins",
    "parse_plugin_args",
]

BUILTIN_PLUGIN = "segkit_builtins"
LOCAL_FILE = "local file"
AUTOLOAD_ENV = "SEGKIT_DISABLE_PLUGIN_AUTOLOAD"
PLUGINS_ENV = "SEGKIT_PLUGINS"


@dataclass(frozen=True)
class PluginInfo:
    """Where a plugin came from: its name, module, distribution and version."""

    name: str
    module: str
    distribution: str
    version: str
    error: str | None = None

    @property
    def label(self) -> str:
        """``distribution version`` (or the file path of a ``-p file.py`` plugin), as shown in ``segkit list``."""
        if self.distribution == LOCAL_FILE:
            return self.module
        return f"{self.distribution} {self.version}"


@dataclass
class LoadedPlugins:
    """The outcome of plugin loading: the manager, the loaded plugins and the broken ones."""

    manager: pluggy.PluginManager
    loaded: list[tuple[PluginInfo, Any]] = field(default_factory=list)
    broken: list[PluginInfo] = field(default_factory=list)
    blocked: frozenset[str] = frozenset()


def components_from_toml(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Read component declarations from a TOML file laid out like ``registry.toml``.

    Each table ``[KIND.NAME]`` holds ``target`` and ``summary``.
    """
    with Path(path).open("rb") as handle:
        data = tomllib.load(handle)
    declared = []
    for kind, entries in data.items():
        for name, entry in entries.items():
            declared.append({"kind": kind, "name": name, **entry})
    return declared


def parse_plugin_args(args: Iterable[str]) -> tuple[list[str], set[str]]:
    """Split ``-p`` values into plugins to load and names blocked with ``no:``."""
    wanted: list[str] = []
    blocked: set[str] = set()
    for arg in args:
        for item in (part.strip() for part in arg.split(",")):
            if not item:
                continue
            if item.startswith("no:"):
                blocked.add(item[3:])
            elif item not in wanted:
                wanted.append(item)
    return wanted, blocked


def _distribution_of(module_name: str) -> tuple[str, str]:
    top = module_name.split(".")[0]
    for dist_name in metadata.packages_distributions().get(top, []):
        try:
            return dist_name, metadata.version(dist_name)
        except metadata.PackageNotFoundError:
            continue
    return "local", "-"


def _short_error(exc: BaseException) -> str:
    last = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
    where = f" ({Path(last[0].filename).name}:{last[0].lineno})" if last else ""
    return f"{type(exc).__name__}: {exc}{where}"


def _import_plugin(spec: str) -> ModuleType:
    """Import a plugin named by module name or by path to a ``.py`` file.

    A file's folder goes first on ``sys.path`` (as for ``python my_plugin.py``) and stays there, so
    the plugin imports modules beside it, and so do its ``"module:attr"`` targets when built later.
    """
    if spec.endswith(".py") or os.sep in spec:
        path = Path(spec).expanduser().resolve()
        if not path.is_file():
            raise PluginLoadError(f"plugin file {spec!r} does not exist. Pass a .py file or an importable module name to -p.")
        if str(path.parent) not in sys.path:
            sys.path.insert(0, str(path.parent))
        module_name = f"segkit_local_plugin_{path.stem}"
        module_spec = importlib.util.spec_from_file_location(module_name, path)
        if module_spec is None or module_spec.loader is None:
            raise PluginLoadError(f"cannot load plugin file {spec!r}: not a Python module.")
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[module_name] = module
        module_spec.loader.exec_module(module)
        return module
    if importlib.util.find_spec(spec.split(".")[0]) is None:
        raise PluginLoadError(
            f"plugin module {spec!r} not found. Pass an importable module name or a path to a .py file to -p "
            "(installed plugins load by themselves; see 'segkit list plugins')."
        )
    return importlib.import_module(spec)


def load_plugins(
    plugins: Sequence[str] = (),
    *,
    autoload: bool | None = None,
    environ: os._Environ[str] | dict[str, str] | None = None,
) -> LoadedPlugins:
    """Create the plugin manager and load every plugin that is not blocked.

    ``plugins`` are ``-p`` values (``NAME``, ``path/to/file.py`` or ``no:NAME``);
    ``SEGKIT_PLUGINS`` adds more. ``autoload=None`` follows ``SEGKIT_DISABLE_PLUGIN_AUTOLOAD``.
    """
    env = os.environ if environ is None else environ
    wanted, blocked = parse_plugin_args([*plugins, env.get(PLUGINS_ENV, "")])
    if autoload is None:
        autoload = env.get(AUTOLOAD_ENV, "").strip().lower() in ("", "0", "false", "no")
    manager = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    manager.add_hookspecs(hookspecs)
    result = LoadedPlugins(manager=manager, blocked=frozenset(blocked))

    def is_blocked(*names: str) -> bool:
        return any(name in blocked for name in names)

    def register(info: PluginInfo, load) -> None:
        try:
            module = load()
            if manager.is_registered(module):  # e.g. -p naming a module an entry point already loaded
                return
            manager.register(module, name=info.name)
        except PluginLoadError:
            raise
        except Exception as exc:  # a broken plugin must not break the tool
            result.broken.append(PluginInfo(info.name, info.module, info.distribution, info.version, _short_error(exc)))
            return
        result.loaded.append((info, module))

    if not is_blocked("builtins", BUILTIN_PLUGIN):
        from segkit import __version__

        builtin = PluginInfo("builtins", BUILTIN_PLUGIN, "segkit", __version__)
        register(builtin, lambda: importlib.import_module(BUILTIN_PLUGIN))

    if autoload:
        for entry_point in sorted(metadata.entry_points(group=hookspecs.ENTRY_POINT_GROUP), key=lambda ep: ep.name):
            dist = entry_point.dist
            dist_name = dist.metadata["Name"] if dist is not None else "unknown"
            version = dist.version if dist is not None else "-"
            if is_blocked(entry_point.name, entry_point.module, dist_name):
                continue
            info = PluginInfo(entry_point.name, entry_point.module, dist_name, version)
            if manager.has_plugin(entry_point.name):
                owner = next(p for p, _ in result.loaded if p.name == entry_point.name)
                error = (f"entry point name {entry_point.name!r} is already taken by {owner.label}; "
                         f"uninstall one of the two distributions")
                result.broken.append(PluginInfo(info.name, info.module, info.distribution, info.version, error))
                continue
            register(info, entry_point.load)

    for spec in wanted:
        name = Path(spec).stem if spec.endswith(".py") else spec
        if is_blocked(name, spec) or manager.has_plugin(name):
            continue
        if spec.endswith(".py"):
            dist, version, module = LOCAL_FILE, "-", str(Path(spec).expanduser().resolve())
        else:
            (dist, version), module = _distribution_of(spec), spec
        register(PluginInfo(name, module, dist, version), lambda spec=spec: _import_plugin(spec))
    return result
