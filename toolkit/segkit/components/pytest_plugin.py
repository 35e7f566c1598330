"""segkit's pytest plugin: the conformance suite on a plugin package's own components.

pytest loads it wherever segkit is installed (entry point ``segkit`` in the group ``pytest11``).
It imports nothing heavy until a test asks for a component, so other projects' test runs in
the same environment do not pay for it. In a plugin package's tests::

    import pytest

    pytestmark = pytest.mark.segkit_plugin("my-segkit-plugin", params={"dataset:mydata": {"root": "tests/data"}})

    def test_conforms(segkit_component):
        segkit_component.check()

collects one test per component the installed distribution ``my-segkit-plugin`` registers
(``test_conforms[model:my_unet]``, ``test_conforms[loss:my_loss]``, ...), each built through
segkit's registry exactly as ``segkit run`` builds it and checked by :mod:`segkit.components.conformance` (public as :mod:`segkit.testing`).
``params`` maps ``"kind:name"`` to constructor arguments (a dataset's ``root``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

__all__ = ["SegkitComponent"]

MARKER = "segkit_plugin"
FIXTURE = "segkit_component"


@dataclass(frozen=True)
class SegkitComponent:
    """One component of the plugin under test: ``key`` is ``"kind:name"``."""

    distribution: str
    key: str
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return self.key.partition(":")[0]

    @property
    def name(self) -> str:
        return self.key.partition(":")[2]

    def check(self) -> Any:
        """Build it through segkit's registry and run the conformance check for its kind; returns it built."""
        from segkit.components.conformance import check_component

        return check_component(self.key, self.params)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{MARKER}(distribution, params=None): run tests that take '{FIXTURE}' once per segkit component "
        "the installed distribution registers; params maps 'kind:name' to constructor arguments.",
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if FIXTURE not in metafunc.fixturenames:
        return
    marker = metafunc.definition.get_closest_marker(MARKER)
    where = metafunc.definition.nodeid
    if marker is None or not marker.args or not isinstance(marker.args[0], str):
        raise pytest.UsageError(
            f"{where} takes '{FIXTURE}' but names no plugin: mark it (or its module, with pytestmark) "
            f"@pytest.mark.{MARKER}('your-distribution-name')."
        )
    distribution, params = marker.args[0], dict(marker.kwargs.get("params") or {})
    from segkit.components.conformance import component_keys

    keys = component_keys(distribution)
    if not keys:
        raise pytest.UsageError(
            f"{where}: the distribution {distribution!r} registers no segkit components. Is it installed "
            "(pip install -e .), and is the name the one in its pyproject.toml [project] name?"
        )
    unknown = sorted(set(params) - set(keys))
    if unknown:
        raise pytest.UsageError(f"{where}: params name {', '.join(unknown)}, which {distribution!r} does not "
                                f"register; it registers {', '.join(keys)}.")
    metafunc.parametrize(FIXTURE, [SegkitComponent(distribution, key, dict(params.get(key, {}))) for key in keys],
                         ids=keys)
