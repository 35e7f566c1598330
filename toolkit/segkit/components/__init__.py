"""The component machinery: how segkit finds, describes, checks and builds components.

    hookspecs       the pluggy hook specification a plugin implements (imports nothing heavy)
    plugins         plugin loading: built-ins, entry points (group "segkit"), -p / -p no:, env variables
    registry        components by kind and name: list, filter, info, build
    params          a target's parameters from its signature; type checks of user values
    conformance     the checks every component must pass (public as :mod:`segkit.testing`)
    pytest_plugin   the pytest11 plugin: ``segkit_plugin`` marker and ``segkit_component`` fixture

What a plugin author needs is re-exported here; none of it imports torch::

    from segkit import hookimpl
    from segkit.components import components_from_toml, load_plugins, Registry
"""

from __future__ import annotations

from segkit.components.hookspecs import hookimpl
from segkit.components.plugins import components_from_toml, load_plugins
from segkit.components.registry import KINDS, Component, Registry, get_registry

__all__ = ["KINDS", "Component", "Registry", "components_from_toml", "get_registry", "hookimpl", "load_plugins"]
