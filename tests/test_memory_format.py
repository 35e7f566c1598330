"""segkit predict's model layout: 3D models run channels-last on the CPU, with the same logits."""

from __future__ import annotations

import torch

from segkit.device import has_3d_weights
from segkit.inference.memory_format import prefer_channels_last


def _net3d() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv3d(2, 8, 3, padding=1), torch.nn.InstanceNorm3d(8), torch.nn.LeakyReLU(),
                               torch.nn.Conv3d(8, 3, 1)).eval()


def test_a_3d_model_on_the_cpu_is_converted_and_predicts_the_same_logits():
    model = _net3d()
    image = torch.randn(1, 2, 12, 16, 20)
    with torch.no_grad():
        before = model(image)
    converted = prefer_channels_last(model, "cpu")
    assert converted is model
    assert model[0].weight.is_contiguous(memory_format=torch.channels_last_3d)
    assert not model[0].weight.is_contiguous()
    with torch.no_grad():
        after = model(image)
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-5)


def test_torchscript_3d_models_are_recognised():
    scripted = torch.jit.trace(_net3d(), torch.randn(1, 2, 8, 8, 8))
    assert has_3d_weights(scripted)
    prefer_channels_last(scripted, torch.device("cpu"))
    weight = next(p for p in scripted.parameters() if p.dim() == 5)
    assert weight.is_contiguous(memory_format=torch.channels_last_3d) and not weight.is_contiguous()


def test_2d_models_other_devices_and_functions_are_left_alone():
    model2d = torch.nn.Conv2d(3, 4, 3)
    assert prefer_channels_last(model2d, "cpu") is model2d and model2d.weight.is_contiguous()
    model3d = _net3d()
    assert prefer_channels_last(model3d, "meta") is model3d and model3d[0].weight.is_contiguous()

    def function(x: torch.Tensor) -> torch.Tensor:
        return x

    assert prefer_channels_last(function, "cpu") is function
