"""The component registry: datasets, models, losses, metrics, augmentations, volume formats and planners.

Components are declared by plugins (see :mod:`segkit.components.hookspecs`) as
``"module:attr"`` targets; a target is imported only when its component is
described in detail or built, so listing stays cheap.
"""

from __future__ import annotations

import fnmatch
import importlib
import inspect
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from segkit.errors import ConfigError, DuplicateComponentError, PluginLoadError, unknown_name
from segkit.components.params import Parameter, check_params, signature_parameters
from segkit.components.cases import CASES_PARAMETER, parse_cases, select_cases
from segkit.components.plugins import AUTOLOAD_ENV, PLUGINS_ENV, LoadedPlugins, PluginInfo, load_plugins

__all__ = ["KINDS", "Component", "Registry", "current_registry", "get_registry", "normalize_kind", "use_registry"]

KINDS: tuple[str, ...] = ("dataset", "model", "loss", "metric", "augmentation", "volume_format", "planner")
"""The kinds of component. An ``augmentation`` is a batch transform ``train.transforms`` names; a
``volume_format`` reads (and writes) one kind of volume file, chosen by suffix; a ``planner`` turns a
dataset's fingerprint into a run configuration (``segkit plan``)."""


def normalize_kind(kind: str, extra: Iterable[str] = ()) -> str:
    """Accept ``model`` or ``models`` (``loss`` or ``losses``); raise the standard unknown-name error otherwise."""
    choices = [*KINDS, *extra]
    for singular in (kind, kind.removesuffix("s"), kind.removesuffix("es")):
        if singular in choices:
            return singular
    raise unknown_name("kind", kind, choices, "See 'segkit list'.")


@dataclass(frozen=True)
class Component:
    """One registered component: its kind, name, target, summary and source plugin."""

    kind: str
    name: str
    target: str
    summary: str
    plugin: PluginInfo

    @property
    def qualified(self) -> str:
        return f"{self.kind} {self.name!r}"

    def load(self) -> Callable[..., Any]:
        """Import and return the target; a clear :class:`PluginLoadError` when that fails."""
        module_name, _, attr = self.target.partition(":")
        try:
            obj: Any = importlib.import_module(module_name)
            for part in attr.split("."):
                obj = getattr(obj, part)
        except Exception as exc:
            raise PluginLoadError(
                f"{self.qualified} from plugin {self.plugin.name!r} ({self.plugin.label}) could not be loaded: "
                f"target {self.target!r} failed with {type(exc).__name__}: {exc}. "
                "Check that the plugin and its dependencies are installed."
            ) from exc
        if not callable(obj):
            raise PluginLoadError(f"{self.qualified}: target {self.target!r} is not callable.")
        return obj

    def parameters(self) -> list[Parameter]:
        """The target's keyword parameters with their types and defaults, and those segkit adds for its kind."""
        target = self.load()
        return [*signature_parameters(target), *self._common_parameters(target)]

    def _common_parameters(self, target: Callable[..., Any]) -> list[Parameter]:
        """Parameters every component of this kind takes, handled by segkit: a dataset's ``cases``."""
        if self.kind != "dataset" or any(p.name == CASES_PARAMETER for p in signature_parameters(target)):
            return []
        return [Parameter(CASES_PARAMETER, list[str] | str | None, None)]

    def _checked(self, target: Callable[..., Any], params: dict[str, Any]) -> tuple[dict[str, Any], Any]:
        """The target's checked parameters, and the ids of ``cases`` (None: every case) when segkit handles it."""
        common = self._common_parameters(target)
        checked = check_params(self.qualified, target, params, self._hint, extra=common)
        if not common:
            return checked, None
        return checked, parse_cases(checked.pop(CASES_PARAMETER, None), f"parameter 'cases' of {self.qualified}")

    @property
    def _hint(self) -> str:
        where = "Pass the data's location with --data-root, or see" if self.kind == "dataset" else "See"
        return f"{where} 'segkit info {self.kind} {self.name}'."

    def data_root_parameter(self) -> str:
        """The parameter ``--data-root`` sets: ``path`` where the target takes one (a table file), else ``root``."""
        names = {p.name for p in self.parameters()}
        for candidate in ("path", "root"):
            if candidate in names:
                return candidate
        raise ConfigError(
            f"{self.qualified} takes no data root; drop --data-root (see 'segkit info {self.kind} {self.name}')."
        )

    def check_params(self, params: dict[str, Any]) -> dict[str, Any]:
        """Validate parameters against the target's signature, before any work (``cases`` read into a list)."""
        checked, cases = self._checked(self.load(), params)
        return checked if cases is None else {**checked, CASES_PARAMETER: cases}

    def build(self, **params: Any) -> Any:
        """Check ``params`` and call the target with them; a dataset keeps only the items of its ``cases``."""
        target = self.load()
        checked, cases = self._checked(target, params)
        built = target(**checked)
        if cases is None:
            return built
        return select_cases(built, cases, self.name)

    def describe(self) -> dict[str, Any]:
        """Everything ``segkit info`` shows: summary, docstring, parameters, plugin and file."""
        target = self.load()
        try:
            source = inspect.getsourcefile(target)
        except TypeError:
            source = None
        return {
            "kind": self.kind,
            "name": self.name,
            "summary": self.summary,
            "target": self.target,
            "plugin": self.plugin.name,
            "distribution": self.plugin.distribution,
            "version": self.plugin.version,
            "file": source,
            "doc": inspect.getdoc(target) or "",
            "parameters": [
                {"name": p.name, "type": p.type_label, "default": None if p.required else p.default, "required": p.required}
                for p in [*signature_parameters(target), *self._common_parameters(target)]
            ],
        }

    def as_row(self) -> dict[str, str]:
        return {
            "kind": self.kind,
            "name": self.name,
            "summary": self.summary,
            "plugin": self.plugin.name,
            "distribution": self.plugin.distribution,
            "version": self.plugin.version,
            "target": self.target,
        }


@dataclass
class Registry:
    """Components by kind and name, plus the plugins they came from."""

    components: dict[tuple[str, str], Component] = field(default_factory=dict)
    plugins: list[PluginInfo] = field(default_factory=list)
    broken: list[PluginInfo] = field(default_factory=list)
    manager: Any = None  # the pluggy PluginManager the plugins came from, for the training lifecycle hooks

    @classmethod
    def from_plugins(cls, loaded: LoadedPlugins) -> Registry:
        """Ask every loaded plugin for its components and check them."""
        registry = cls(plugins=[info for info, _ in loaded.loaded], broken=list(loaded.broken), manager=loaded.manager)
        for info, module in loaded.loaded:
            hook = getattr(module, "segkit_components", None)
            if hook is None:
                continue
            try:
                declared = hook() or []
            except Exception as exc:
                registry.broken.append(
                    PluginInfo(info.name, info.module, info.distribution, info.version, f"{type(exc).__name__}: {exc}")
                )
                continue
            for entry in declared:
                registry.add(registry._component_from(entry, info))
        return registry

    @staticmethod
    def _component_from(entry: dict[str, Any], plugin: PluginInfo) -> Component:
        missing = [key for key in ("kind", "name", "target") if not entry.get(key)]
        if missing:
            raise PluginLoadError(
                f"plugin {plugin.name!r} ({plugin.label}) declares a component without {', '.join(missing)}: {entry!r}."
            )
        kind = entry["kind"]
        if kind not in KINDS:
            raise PluginLoadError(
                f"plugin {plugin.name!r} ({plugin.label}) declares {entry['name']!r} of unknown kind {kind!r}; "
                f"kinds are {', '.join(KINDS)}."
            )
        if ":" not in entry["target"]:
            raise PluginLoadError(
                f"plugin {plugin.name!r}: target {entry['target']!r} of {kind} {entry['name']!r} must be 'module:attr'."
            )
        return Component(kind, entry["name"], entry["target"], str(entry.get("summary", "")).strip(), plugin)

    def add(self, component: Component) -> None:
        """Register one component; a second one with the same kind and name is an error naming both plugins."""
        key = (component.kind, component.name)
        existing = self.components.get(key)
        if existing is not None:
            raise DuplicateComponentError(
                f"{component.qualified} is registered twice: by plugin {existing.plugin.name!r} ({existing.plugin.label}, "
                f"{existing.target}) and by plugin {component.plugin.name!r} ({component.plugin.label}, {component.target}). "
                f"Uninstall one of them or block it with '-p no:{component.plugin.name}'."
            )
        self.components[key] = component

    def list(self, kind: str | None = None, pattern: str | None = None) -> list[Component]:
        """Components sorted by kind then name, optionally of one kind and matching a glob."""
        kinds = KINDS if kind is None else (normalize_kind(kind),)
        found = [
            c
            for c in self.components.values()
            if c.kind in kinds and (pattern is None or fnmatch.fnmatchcase(c.name, pattern))
        ]
        return sorted(found, key=lambda c: (KINDS.index(c.kind), c.name))

    def names(self, kind: str) -> list[str]:
        return [c.name for c in self.list(kind)]

    def get(self, kind: str, name: str) -> Component:
        """The component ``name`` of ``kind``; an unknown name gets suggestions."""
        kind = normalize_kind(kind)
        component = self.components.get((kind, name))
        if component is not None:
            return component
        hint = f"See 'segkit list {kind}'."
        if self.broken:
            hint += " Note: " + "; ".join(
                f"plugin {p.name!r} ({p.label}) failed to load ({p.error}), so its components are missing"
                for p in self.broken
            ) + "."
        raise unknown_name(kind, name, self.names(kind), hint)

    def build(self, kind: str, name: str, **params: Any) -> Any:
        """Build component ``name`` of ``kind`` with ``params``."""
        return self.get(kind, name).build(**params)


@cache
def _cached_registry(plugins: tuple[str, ...], plugins_env: str, autoload_env: str) -> Registry:
    environ = {PLUGINS_ENV: plugins_env, AUTOLOAD_ENV: autoload_env}
    return Registry.from_plugins(load_plugins(plugins, environ=environ))


def get_registry(plugins: Sequence[str] = ()) -> Registry:
    """The registry for these ``-p`` values and the current plugin environment variables (cached per process)."""
    return _cached_registry(tuple(plugins), os.environ.get(PLUGINS_ENV, ""), os.environ.get(AUTOLOAD_ENV, ""))


_current: Registry | None = None


def use_registry(registry: Registry | None) -> None:
    """Make ``registry`` the one :func:`current_registry` returns (the CLI sets the registry of its ``-p`` plugins);
    None goes back to :func:`get_registry`'s."""
    global _current
    _current = registry


def current_registry() -> Registry:
    """The registry code far from the command line asks (which reader reads a ``.nrrd``?): the one the running
    command uses (:func:`use_registry`), else the default plugins' (:func:`get_registry`)."""
    return _current if _current is not None else get_registry()

