"""segkit: a plugin-based image segmentation toolkit.

The public API, importable without torch::

    from segkit import get_registry, hookimpl
    registry = get_registry()
    model = registry.build("model", "unet", width=32)

Heavy parts (training, evaluation, prediction) live in their own modules and are
imported when used: ``segkit.train``, ``segkit.evaluation.evaluate``, ``segkit.inference.predict``.
"""

from __future__ import annotations

__version__ = "0.1.0"

from segkit.errors import (  # noqa: E402
    CheckpointError,
    ConfigError,
    DataError,
    DuplicateComponentError,
    PluginLoadError,
    SegkitError,
    TrainingError,
    UnknownNameError,
)
from segkit.components.hookspecs import hookimpl  # noqa: E402
from segkit.components.registry import KINDS, Component, Registry, get_registry  # noqa: E402

__all__ = [
    "KINDS",
    "CheckpointError",
    "Component",
    "ConfigError",
    "DataError",
    "DuplicateComponentError",
    "PluginLoadError",
    "Registry",
    "SegkitError",
    "TrainingError",
    "UnknownNameError",
    "__version__",
    "get_registry",
    "hookimpl",
]
