"""Tests of segkit-example-plugin: segkit's conformance checks on its own components.

Run from this folder after installing the package: ``pytest``.
"""

from __future__ import annotations

import math

import pytest
import torch
from segkit.errors import ConfigError
from segkit.components import components_from_toml
from segkit.testing import check_loss, check_model

from segkit_example import plugin
from segkit_example.losses import LogCoshDiceLoss, log_cosh
from segkit_example.models import TinyUNet


@pytest.mark.parametrize(("in_channels", "classes", "depth"), [(3, 1, 3), (1, 2, 2)])
def test_tinyunet_conforms(in_channels: int, classes: int, depth: int) -> None:
    torch.manual_seed(0)
    check_model(TinyUNet(in_channels=in_channels, classes=classes, width=8, depth=depth), in_channels, classes)


def test_log_cosh_dice_conforms() -> None:
    check_loss(LogCoshDiceLoss())


def test_log_cosh_dice_values_by_hand() -> None:
    target = torch.tensor([1.0, 1.0, 0.0, 0.0]).reshape(1, 1, 2, 2)
    # sigmoid(0) = 0.5 everywhere: sum(p t) = 1, sum(p) = 2, sum(t) = 2, dice = 3 / 5 with smooth 1.
    value = LogCoshDiceLoss()(torch.zeros(1, 1, 2, 2), target)
    assert value.item() == pytest.approx(math.log(math.cosh(1 - 3 / 5)), rel=1e-6)
    # An empty target predicted empty is perfect.
    assert LogCoshDiceLoss()(torch.full((1, 1, 2, 2), -30.0), torch.zeros(1, 1, 2, 2)).item() == pytest.approx(0, abs=1e-6)


def test_log_cosh_is_stable_for_large_values() -> None:
    x = torch.tensor([0.0, 0.5, 1.0, 100.0, 1e4])
    expected = [math.log(math.cosh(v)) for v in (0.0, 0.5, 1.0)] + [100 - math.log(2), 1e4 - math.log(2)]
    assert log_cosh(x).tolist() == pytest.approx(expected, rel=1e-6)


def test_loss_accepts_half_precision_logits() -> None:
    target = torch.zeros(2, 1, 8, 8)
    target[0, 0, 2:5, 2:5] = 1
    value = LogCoshDiceLoss()(torch.randn(2, 1, 8, 8).half(), target)
    assert value.dtype == torch.float32 and torch.isfinite(value)


def test_bad_parameters_are_user_errors() -> None:
    with pytest.raises(ConfigError, match="width"):
        TinyUNet(width=0)
    with pytest.raises(ConfigError, match="smooth"):
        LogCoshDiceLoss(smooth=-1.0)


def test_declarations_point_at_real_targets() -> None:
    declared = plugin.segkit_components()
    assert declared == components_from_toml(plugin.COMPONENTS_FILE)
    assert {(d["kind"], d["name"]) for d in declared} == {("model", "example_tinyunet"), ("loss", "example_log_cosh_dice"),
                                                         ("augmentation", "example_cutout3d"),
                                                         ("volume_format", "example_npz")}
    for entry in declared:
        assert entry["name"].startswith("example_"), "prefix names so they never collide with other plugins"
        assert entry["summary"]
        module_name, _, attr = entry["target"].partition(":")
        assert callable(getattr(__import__(module_name, fromlist=[attr]), attr))


def test_segkit_finds_the_installed_plugin() -> None:
    from segkit.components import Registry, load_plugins

    registry = Registry.from_plugins(load_plugins(environ={}))
    component = registry.get("model", "example_tinyunet")
    assert component.plugin.name == "example"
    assert component.plugin.distribution == "segkit-example-plugin"
    model = registry.build("model", "example_tinyunet", in_channels=1, classes=1, width=4)
    assert model(torch.rand(2, 1, 20, 30)).shape == (2, 1, 20, 30)


def test_every_component_of_the_installed_package_conforms() -> None:
    from segkit.testing import check_components

    assert check_components("segkit-example-plugin") == ["volume_format:example_npz", "augmentation:example_cutout3d",
                                                         "loss:example_log_cosh_dice", "model:example_tinyunet"]
