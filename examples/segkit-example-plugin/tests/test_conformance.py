"""segkit's conformance suite on this package: one test per component it registers.

``segkit_component`` and the ``segkit_plugin`` marker come from segkit's pytest plugin, which
pytest loads wherever segkit is installed. A new component in components.toml is tested here
the moment it is declared.
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.segkit_plugin("segkit-example-plugin")


def test_conforms(segkit_component) -> None:
    segkit_component.check()
