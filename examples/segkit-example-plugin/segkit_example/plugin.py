"""The segkit hook implementation of segkit-example-plugin.

segkit imports this module (the entry point ``example`` in the group ``segkit``)
every time it starts, even for ``segkit list``, so it imports only segkit's light
plugin API: no torch, and not the modules that hold the components. Each component
is declared by a ``"module:attr"`` string in ``components.toml`` that segkit
imports only when the component is described or built.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from segkit import hookimpl
from segkit.components import components_from_toml

COMPONENTS_FILE = Path(__file__).with_name("components.toml")


@hookimpl
def segkit_components() -> list[dict[str, Any]]:
    """The example components, as declared in components.toml."""
    return components_from_toml(COMPONENTS_FILE)
