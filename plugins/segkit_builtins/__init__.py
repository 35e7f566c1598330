"""segkit's built-in plugin: the tutorial's U-Net, smp models, losses, metrics and datasets.

It registers its components through the same ``segkit_components`` hook a
third-party plugin implements, by reading ``registry.toml`` (shipped inside the
wheel), so listing them never imports torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from segkit.components.hookspecs import hookimpl
from segkit.components.plugins import components_from_toml

REGISTRY_FILE = Path(__file__).with_name("registry.toml")


@hookimpl
def segkit_components() -> list[dict[str, Any]]:
    """The built-in components, as declared in registry.toml."""
    return components_from_toml(REGISTRY_FILE)
