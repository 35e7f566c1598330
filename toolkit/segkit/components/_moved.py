"""Forwarding old module paths to their new homes, with a DeprecationWarning that names the new place."""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable
from typing import Any


def forwarder(old: str, new: str) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``old`` that returns ``new``'s attribute and warns where it moved."""

    def __getattr__(name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(f"module {old!r} has no attribute {name!r}")
        module = importlib.import_module(new)
        try:
            value = getattr(module, name)
        except AttributeError:
            raise AttributeError(f"module {old!r} has no attribute {name!r} (it moved to {new!r})") from None
        warnings.warn(f"{old}.{name} moved to {new}.{name}; import it from there "
                      f"(the old path will be removed in a later release)", DeprecationWarning, stacklevel=2)
        return value

    return __getattr__


def names(new: str) -> list[str]:
    """The public names of ``new``, for ``dir()`` of the old module."""
    module = importlib.import_module(new)
    return sorted(getattr(module, "__all__", None) or [n for n in vars(module) if not n.startswith("_")])
