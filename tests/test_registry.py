"""The registry API: listing with globs, lookups, building, and where --data-root goes."""

from __future__ import annotations

import pytest

from segkit.errors import ConfigError, UnknownNameError
from segkit.components.registry import get_registry, normalize_kind


def test_list_filters_with_globs_and_accepts_plural_kinds() -> None:
    registry = get_registry()
    assert [c.name for c in registry.list("models", "smp_unet*")] == ["smp_unet", "smp_unetplusplus"]
    assert normalize_kind("losses") == "loss"
    with pytest.raises(UnknownNameError, match="Did you mean 'metric'"):
        normalize_kind("metrik")


def test_build_checks_parameters_against_the_signature() -> None:
    registry = get_registry()
    model = registry.build("model", "unet", width=4)
    assert sum(p.numel() for p in model.parameters()) < 7_782_913
    with pytest.raises(UnknownNameError, match="Did you mean 'width'"):
        registry.build("model", "unet", widht=4)


@pytest.mark.parametrize(("dataset", "parameter"), [("lgg", "root"), ("folder", "root"), ("csv", "path")])
def test_data_root_goes_to_the_dataset_location_parameter(dataset: str, parameter: str) -> None:
    assert get_registry().get("dataset", dataset).data_root_parameter() == parameter


def test_a_dataset_without_a_location_rejects_data_root() -> None:
    with pytest.raises(ConfigError, match="takes no data root"):
        get_registry().get("dataset", "synthetic").data_root_parameter()
