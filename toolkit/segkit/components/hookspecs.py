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

    - ``kind``: one of ``dataset``, ``model``, ``loss``, ``metric``, ``planner``;
    - ``name``: the name users type (``--model NAME``), unique within its kind;
    - ``target``: ``"package.module:attr"``, the callable that builds the component
      from keyword parameters; it is imported only when the component is used;
    - ``summary``: one line for ``segkit list``.

    Do not import torch or your component modules here: listing must stay fast.
    :func:`segkit.components.plugins.components_from_toml` reads such declarations from a
    TOML file, the way the built-ins do.
    """


# --- training lifecycle: called on the process that writes the run directory (rank 0) -----------------------
# Implement any of these in a plugin to send a run's progress anywhere (a tracker, a chat, a dashboard).
# Arguments are plain Python values (str, int, float, dict); a hook that raises is reported once as a
# warning and not called again for that run, so a broken logger never stops training.


@hookspec
def segkit_run_start(run_dir: str, config: dict[str, Any], resumed: bool) -> None:
    """A run starts (``resumed``: continues from its last.pt); ``config`` is the resolved configuration."""


@hookspec
def segkit_epoch_end(run_dir: str, epoch: int, row: dict[str, Any]) -> None:
    """An epoch ended; ``row`` is its metrics.csv row (``epoch``, ``train_loss``, ``val_loss``, ``lr``, ``val_*``)."""


@hookspec
def segkit_checkpoint_saved(run_dir: str, path: str, kind: str, epoch: int) -> None:
    """A checkpoint was written completely: ``kind`` is ``best`` or ``last``."""


@hookspec
def segkit_run_end(run_dir: str, summary: dict[str, Any]) -> None:
    """A run finished; ``summary`` is what summary.json holds."""
