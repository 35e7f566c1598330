"""The segkit plugin hook specification.

A plugin is a module (or object) with functions marked ``@segkit.hookimpl``.
This module holds only signatures and docstrings and imports nothing heavy, so
loading plugins to list their components never imports torch.
"""

from __future__ import annotations

from typing import Any

import pluggy

PROJECT_NAME = "segkit"
ENTRY_POINT_GROUP = "segkit"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def segkit_components() -> list[dict[str, Any]]:
    """Declare the components this plugin contributes.

    Return a list of mappings, one per component, with the keys

    - ``kind``: one of ``dataset``, ``model``, ``loss``, ``metric``;
    - ``name``: the name users type (``--model NAME``), unique within its kind;
    - ``target``: ``"package.module:attr"``, the callable that builds the component
      from keyword parameters; it is imported only when the component is used;
    - ``summary``: one line for ``segkit list``.

    Do not import torch or your component modules here: listing must stay fast.
    :func:`segkit.plugins.components_from_toml` reads such declarations from a
    TOML file, the way the built-ins do.
    """
