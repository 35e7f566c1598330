"""The built-in models: the tutorial U-Net and the smp architectures."""

from __future__ import annotations

import inspect
import tomllib
from pathlib import Path

import pytest
import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F

from segkit.errors import ConfigError, UnknownNameError
from segkit.testing import check_model
from segkit_builtins.models import smp_models
from segkit_builtins.models.unet import UNet

REGISTRY = tomllib.loads((Path(__file__).parents[1] / "registry.toml").read_text())
ARCHS = sorted(smp.MODEL_ARCHITECTURES_MAPPING)
# small encoders keep the suite fast; DPT takes only ViT-style timm encoders
SMALL_ENCODER = {"dpt": "tu-vit_tiny_patch16_224"}


@pytest.fixture(autouse=True, scope="module")
def _few_threads():
    threads = torch.get_num_threads()
    torch.set_num_threads(min(threads, 2))
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def smp_model_cache() -> dict[str, torch.nn.Module]:
    return {}


def small_smp_model(arch: str, cache: dict[str, torch.nn.Module]) -> torch.nn.Module:
    if arch not in cache:
        factory = getattr(smp_models, f"smp_{arch}")
        cache[arch] = factory(encoder_name=SMALL_ENCODER.get(arch, "resnet18"))
    return cache[arch]


def unet_parameters(w: int, in_channels: int = 3, classes: int = 1) -> int:
    """The tutorial U-Net's parameter count, by hand: a k x k conv i->o has i*o*k*k + o."""

    def conv(i: int, o: int, k: int = 3) -> int:
        return i * o * k * k + o

    def double(i: int, o: int) -> int:
        return conv(i, o) + conv(o, o)

    encoder = double(in_channels, w) + double(w, 2 * w) + double(2 * w, 4 * w) + double(4 * w, 8 * w)
    decoder = double(12 * w, 4 * w) + double(6 * w, 2 * w) + double(3 * w, w)
    return encoder + decoder + conv(w, classes, 1)


def n_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# --- the tutorial U-Net ---------------------------------------------------------------


def test_unet_has_the_tutorial_parameter_count():
    assert unet_parameters(64) == 7_782_913
    assert n_parameters(UNet()) == 7_782_913


def test_unet_width_and_channels():
    model = UNet(in_channels=1, classes=2, width=8)
    assert n_parameters(model) == unet_parameters(8, in_channels=1, classes=2)
    assert model(torch.rand(2, 1, 32, 24)).shape == (2, 2, 32, 24)


def test_unet_conforms_and_returns_logits():
    torch.manual_seed(0)
    model = UNet(width=8)
    check_model(model)
    assert not any(isinstance(m, torch.nn.Sigmoid) for m in model.modules())
    with torch.no_grad():
        model.conv_last.bias.fill_(-3.0)  # logits far below 0 are impossible for probabilities
        assert (model(torch.rand(1, 3, 16, 16)) < 0).all()


@pytest.mark.parametrize("size", [(61, 59), (8, 9), (1, 1)])
def test_unet_pads_right_bottom_and_crops(size):
    torch.manual_seed(0)
    model = UNet(width=4).eval()
    x = torch.rand(1, 3, *size)
    h, w = size
    padded = F.pad(x, (0, -w % 8, 0, -h % 8), mode="replicate")
    with torch.no_grad():
        expected = model(padded)[..., :h, :w]
        assert torch.equal(model(x), expected)


# --- smp architectures -----------------------------------------------------------------


@pytest.mark.parametrize("arch", ARCHS)
def test_every_smp_architecture_is_registered(arch):
    entry = REGISTRY["model"].get(f"smp_{arch}")
    assert entry is not None, f"registry.toml lacks [model.smp_{arch}]"
    assert entry["target"] == f"segkit_builtins.models.smp_models:smp_{arch}"
    factory = getattr(smp_models, f"smp_{arch}")
    assert factory.__name__ == f"smp_{arch}"
    assert "Shape:" in factory.__doc__
    parameters = inspect.signature(factory).parameters
    assert list(parameters)[:4] == ["encoder_name", "encoder_weights", "in_channels", "classes"]
    assert parameters["encoder_weights"].default is None
    assert parameters["in_channels"].default == 3 and parameters["classes"].default == 1
    assert parameters["encoder_name"].default == ("resnet34" if arch != "dpt" else smp_models.DEFAULT_DPT_ENCODER)


@pytest.mark.parametrize("arch", ARCHS)
def test_smp_model_builds_and_pads_odd_sizes(arch, smp_model_cache):
    model = small_smp_model(arch, smp_model_cache)
    check_model(model, size=(64, 64), odd_size=(70, 90))


@pytest.mark.parametrize("arch", ["fpn", "pan", "dpt"])
def test_smp_padding_equals_manual_padding(arch, smp_model_cache):
    model = small_smp_model(arch, smp_model_cache).eval()
    x = torch.rand(1, 3, 40, 50)
    size = model.size_multiple
    target_h, target_w = max(-(-40 // size) * size, model.min_size), max(-(-50 // size) * size, model.min_size)
    padded = F.pad(x, (0, target_w - 50, 0, target_h - 40), mode="replicate")
    with torch.no_grad():
        assert torch.allclose(model(x), model.model(padded)[..., :40, :50], atol=1e-6)


def test_smp_in_channels_and_classes():
    model = smp_models.smp_linknet(encoder_name="resnet18", in_channels=1, classes=3)
    assert model(torch.rand(2, 1, 32, 32)).shape == (2, 3, 32, 32)


def test_smp_kwargs_reach_smp():
    model = smp_models.smp_unet(encoder_name="resnet18", encoder_depth=3, decoder_channels=(32, 16, 8))
    assert model.size_multiple == 8
    assert model(torch.rand(2, 3, 20, 20)).shape == (2, 1, 20, 20)


def test_imagenet_weights_are_refused():
    with pytest.raises(ConfigError, match="never downloads"):
        smp_models.smp_unet(encoder_name="resnet18", encoder_weights="imagenet")


def test_missing_weights_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        smp_models.smp_unet(encoder_name="resnet18", encoder_weights=str(tmp_path / "nope.pth"))


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_local_encoder_weights_round_trip(tmp_path, suffix):
    source = smp_models.smp_fpn(encoder_name="resnet18")
    state = {k: v.contiguous() for k, v in source.model.encoder.state_dict().items()}
    path = tmp_path / f"encoder{suffix}"
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, str(path))
    else:
        torch.save(state, path)
    loaded = smp_models.smp_fpn(encoder_name="resnet18", encoder_weights=str(path))
    for key, value in loaded.model.encoder.state_dict().items():
        assert torch.equal(value, state[key]), key


def test_whole_model_and_timm_state_dicts_load_into_the_encoder(tmp_path):
    import timm

    source = smp_models.smp_linknet(encoder_name="resnet18")
    torch.save(source.model.state_dict(), tmp_path / "model.pt")  # keys "encoder.*", "decoder.*"
    loaded = smp_models.smp_linknet(encoder_name="resnet18", encoder_weights=str(tmp_path / "model.pt"))
    assert torch.equal(loaded.model.encoder.conv1.weight, source.model.encoder.conv1.weight)

    classifier = timm.create_model("resnet18")  # has an fc head the encoder lacks
    torch.save(classifier.state_dict(), tmp_path / "timm.pth")
    loaded = smp_models.smp_linknet(encoder_name="tu-resnet18", encoder_weights=str(tmp_path / "timm.pth"))
    assert torch.equal(loaded.model.encoder.model.conv1.weight, classifier.conv1.weight)


def test_weights_for_another_encoder_are_refused(tmp_path):
    source = smp_models.smp_linknet(encoder_name="resnet18")
    torch.save(source.model.encoder.state_dict(), tmp_path / "r18.pth")
    with pytest.raises(ConfigError, match="do not match the encoder"):
        smp_models.smp_linknet(encoder_name="resnet34", encoder_weights=str(tmp_path / "r18.pth"))


@pytest.mark.parametrize(("name", "suggestion"), [("resnet3", "resnet34"), ("tu-resnet81", "tu-resnet18")])
def test_unknown_encoder_suggests_a_name(name, suggestion):
    with pytest.raises(UnknownNameError, match=f"Did you mean .*'{suggestion}'") as error:
        smp_models.smp_unet(encoder_name=name)
    assert "segkit list encoders" in str(error.value)


def test_dpt_needs_a_timm_encoder():
    with pytest.raises(ConfigError, match="tu-"):
        smp_models.smp_dpt(encoder_name="resnet18")


def test_activation_is_refused():
    with pytest.raises(ConfigError, match="logits"):
        smp_models.smp_fpn(encoder_name="resnet18", activation="sigmoid")


def test_list_encoders_filters_with_globs():
    every = smp_models.list_encoders()
    resnets = smp_models.list_encoders("*resnet*")
    assert {"resnet18", "resnet34", "tu-resnet18", "tu-resnet50"} <= set(resnets)
    assert all("resnet" in name for name in resnets)
    assert set(resnets) < set(every)
    assert set(smp.encoders.get_encoder_names()) <= set(every)
    assert smp_models.list_encoders("tu-vit_tiny_patch16_*")
    assert smp_models.list_encoders("no-such-encoder*") == []


def test_check_model_rejects_a_model_that_ignores_odd_sizes():
    class Cropping(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 1, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.conv(x)[..., :64, :64]

    with pytest.raises(AssertionError, match=r"output shape \(2, 1, 64, 64\) for input \(2, 3, 70, 90\)"):
        check_model(Cropping())
