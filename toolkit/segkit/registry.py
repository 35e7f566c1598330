"""Deprecated: ``segkit.registry`` moved to :mod:`segkit.components.registry`.

Kept so that plugins written against the old layout keep working; each name read from here
warns once with its new place. Import from ``segkit.components`` (or ``segkit``) instead.
"""

from __future__ import annotations

from segkit.components import _moved

__getattr__ = _moved.forwarder("segkit.registry", "segkit.components.registry")


def __dir__() -> list[str]:
    return _moved.names("segkit.components.registry")
