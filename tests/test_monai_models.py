"""MONAI's networks as segkit models (the ``monai`` extra): conformance, options, errors.

Small configurations (4-8 channels, 2-3 levels) on 16^3 and odd-sized volumes.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from clihelp import run_in_process
from segkit.components.registry import get_registry
from segkit.errors import ConfigError, UnknownNameError
from segkit.testing import check_model, check_volume_model
from segkit.train.deep_supervision import supervised_loss

pytest.importorskip("monai.networks.nets")

REGISTRY = get_registry()
LIGHT = {
    "monai_unet": {"channels": [4, 8, 16], "strides": [2, 2], "num_res_units": 1},
    "monai_dynunet": {"strides": [1, 2, 2], "filters": [4, 8, 16]},
    "monai_segresnet": {"init_filters": 8, "blocks_down": [1, 1, 1], "blocks_up": [1, 1]},
}


def build(name: str, **params):
    torch.manual_seed(0)
    return REGISTRY.build("model", name, **{**LIGHT[name], **params})


@pytest.mark.parametrize("name", sorted(LIGHT))
def test_conforms_on_volumes(name: str) -> None:
    model = build(name, in_channels=2, classes=3)
    assert model.spatial_dims == 3
    check_volume_model(model, in_channels=2, classes=3)


@pytest.mark.parametrize("name", sorted(LIGHT))
def test_conforms_on_images_with_spatial_dims_2(name: str) -> None:
    model = build(name, spatial_dims=2, in_channels=3, classes=2)
    check_model(model, in_channels=3, classes=2, size=(32, 32), odd_size=(33, 45))


def test_segkit_names_map_to_monais() -> None:
    network = build("monai_unet", in_channels=2, classes=5).model
    assert (network.dimensions, network.in_channels, network.out_channels) == (3, 2, 5)


def test_anisotropic_dynunet_pads_per_axis() -> None:
    model = build("monai_dynunet", kernel_size=[[1, 3, 3], 3, 3], strides=[1, [1, 2, 2], [2, 2, 2]])
    assert model.size_multiples == (2, 4, 4)
    check_volume_model(model, size=(4, 16, 16), odd_size=(5, 17, 19))


def test_dynunet_deep_supervision_gives_segkit_tuple_in_training_only() -> None:
    model = build("monai_dynunet", deep_supervision=True, deep_supr_num=1)
    check_volume_model(model)
    x, target = torch.rand(2, 1, 17, 16, 16), (torch.rand(2, 1, 17, 16, 16) > 0.5).float()
    outputs = model.train()(x)
    assert isinstance(outputs, tuple) and [o.shape for o in outputs] == [x.shape, x.shape]
    loss, main = supervised_loss(torch.nn.functional.binary_cross_entropy_with_logits, outputs, target)
    assert main is outputs[0] and torch.isfinite(loss)
    assert isinstance(model.eval()(x), torch.Tensor)


def test_monai_options_are_listed_and_a_misspelt_one_is_refused() -> None:
    names = {p.name for p in REGISTRY.get("model", "monai_unet").parameters()}
    assert {"in_channels", "classes", "spatial_dims", "channels", "act", "norm", "dropout"} <= names
    assert not {"out_channels"} & names  # segkit's name is classes
    with pytest.raises(UnknownNameError, match="Did you mean 'channels'"):
        REGISTRY.build("model", "monai_unet", chanels=[4, 8])


def test_a_tuple_option_takes_a_toml_list() -> None:
    model = build("monai_unet", act=["leakyrelu", {"negative_slope": 0.1}])
    assert any(isinstance(m, torch.nn.LeakyReLU) and m.negative_slope == 0.1 for m in model.modules())


def test_options_monai_refuses_are_one_line_config_errors() -> None:
    with pytest.raises(ConfigError, match="monai_segresnet.*divisible by num_groups") as error:
        build("monai_segresnet", init_filters=4)
    assert "\n" not in str(error.value)
    with pytest.raises(ConfigError, match="spatial_dims"):
        build("monai_unet", spatial_dims=4)


def test_info_shows_the_options() -> None:
    output = run_in_process("info", "model", "monai_dynunet")
    assert "deep_supervision" in output and "upsample_kernel_size" in output


def test_without_monai_building_says_how_to_install_it() -> None:
    script = ("import sys; sys.modules['monai'] = None\n"
              "from segkit.components.registry import get_registry\n"
              "from segkit.errors import SegkitError\n"
              "try:\n    get_registry().build('model', 'monai_unet')\n"
              "except SegkitError as error:\n    print(error)\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "pip install 'segkit[monai]'" in result.stdout and result.stdout.count("\n") == 1, result.stdout
