"""model.unet3d (the nnU-Net-style U-Net, 2D or 3D) and deep supervision's loss.

Small networks (width 4, 3-4 stages) on 16^3 and odd-sized volumes, so each check takes
well under a second on one core.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from clihelp import run_in_process
from segkit.components.registry import get_registry
from segkit.errors import ConfigError
from segkit.testing import check_model, check_volume_model
from segkit.train.deep_supervision import downsample_target, level_weights, supervised_loss
from segkit_builtins.losses.cross_entropy import CEDiceLoss

REGISTRY = get_registry()
SMALL = {"width": 4, "stages": 3}


def build(**params):
    torch.manual_seed(0)
    return REGISTRY.build("model", "unet3d", **{**SMALL, **params})


def test_conforms_in_3d_at_even_and_odd_sizes() -> None:
    model = build(in_channels=2, classes=3)
    assert model.spatial_dims == 3 and model.size_multiples == (4, 4, 4)
    check_volume_model(model, in_channels=2, classes=3)


def test_the_same_network_in_2d() -> None:
    model = build(spatial_dims=2, in_channels=3, classes=2)
    assert model.spatial_dims == 2
    assert not any(isinstance(m, (torch.nn.Conv3d, torch.nn.ConvTranspose3d)) for m in model.modules())
    check_model(model, in_channels=3, classes=2)


def test_a_volume_model_checked_on_images_says_which_check_to_use() -> None:
    with pytest.raises(AssertionError, match="spatial_dims=3.*check_volume_model"):
        check_model(build(), in_channels=1)


def test_anisotropic_kernels_and_strides() -> None:
    model = build(stages=4, kernel_sizes=[[1, 3, 3], [1, 3, 3], 3, 3], strides=[1, [1, 2, 2], [2, 2, 2], [2, 2, 2]])
    assert model.size_multiples == (4, 8, 8)
    assert model.encoder[0][0][0].kernel_size == (1, 3, 3) and model.encoder[1][0][0].stride == (1, 2, 2)
    assert model.upsamplers[-1].stride == (1, 2, 2)  # stage 2 -> 1 undoes stage 2's stride
    check_volume_model(model, in_channels=1, classes=1, size=(4, 16, 16), odd_size=(5, 17, 19))


def test_channels_double_per_stage_up_to_max_width() -> None:
    assert build(stages=5, max_width=16).channels == (4, 8, 16, 16, 16)


def test_deep_supervision_tuple_in_training_and_logits_in_eval() -> None:
    model = build(stages=4, classes=2, deep_supervision=True)
    check_volume_model(model, in_channels=1, classes=2)  # both modes
    x = torch.rand(1, 1, 17, 19, 21)
    outputs = model.train()(x)
    assert [tuple(o.shape[2:]) for o in outputs] == [(17, 19, 21), (9, 10, 11), (5, 5, 6)]
    assert isinstance(model.eval()(x), torch.Tensor)


def test_odd_inputs_are_replicate_padded_and_cropped_back() -> None:
    model = build().eval()
    x = torch.rand(1, 1, 9, 10, 13)
    padded = F.pad(x, (0, 3, 0, 2, 0, 3), mode="replicate")  # to 12 x 12 x 16, multiples of 4
    with torch.no_grad():
        assert torch.equal(model(x), model(padded)[..., :9, :10, :13])


@pytest.mark.parametrize("params, name", [
    ({"spatial_dims": 4}, "spatial_dims"),
    ({"width": 0}, "width"),
    ({"max_width": 2}, "max_width"),
    ({"stages": 0}, "stages"),
    ({"kernel_sizes": [3, 2, 3]}, "kernel_sizes"),
    ({"kernel_sizes": [3, 3]}, "kernel_sizes"),
    ({"kernel_sizes": [[3, 3], 3, 3]}, "kernel_sizes"),
    ({"strides": [2, 2, 2]}, "strides"),
    ({"strides": [1, [0, 2, 2], 2]}, "strides"),
    ({"norm": "group"}, "norm"),
    ({"dropout": 1.0}, "dropout"),
    ({"dropout": -0.1}, "dropout"),
    ({"deep_supervision": "yes"}, "deep_supervision"),
    ({"in_channels": 0}, "in_channels"),
    ({"classes": 0}, "classes"),
])
def test_bad_parameters_are_one_line_errors_naming_them(params: dict, name: str) -> None:
    with pytest.raises(ConfigError) as error:
        build(**params)
    message = str(error.value)
    assert name in message and "\n" not in message, message


def test_wrong_input_rank_is_refused() -> None:
    with pytest.raises(ValueError, match=r"\(N, C, D, H, W\)"):
        build()(torch.rand(1, 1, 16, 16))


def test_level_weights_halve_and_drop_the_lowest() -> None:
    assert level_weights(1) == [1.0]
    assert level_weights(2) == pytest.approx([2 / 3, 1 / 3])
    assert level_weights(4) == pytest.approx([4 / 7, 2 / 7, 1 / 7, 0.0])
    assert math.fsum(level_weights(5)) == pytest.approx(1.0)


def test_a_tensor_output_is_the_plain_loss() -> None:
    logits, target = torch.randn(2, 1, 8, 8, 8), (torch.rand(2, 1, 8, 8, 8) > 0.5).float()
    loss, main = supervised_loss(F.binary_cross_entropy_with_logits, logits, target)
    assert main is logits and torch.equal(loss, F.binary_cross_entropy_with_logits(logits, target))


def test_binary_targets_are_downsampled_by_nearest_neighbour_per_level() -> None:
    torch.manual_seed(0)
    target = (torch.rand(2, 1, 8, 8, 8) > 0.5).float()
    outputs = (torch.randn(2, 1, 8, 8, 8), torch.randn(2, 1, 4, 4, 4), torch.randn(2, 1, 2, 2, 2))
    loss, main = supervised_loss(F.binary_cross_entropy_with_logits, outputs, target)
    # by hand: every second voxel from the first (nearest neighbour at scale 2); the lowest level weighs 0
    expected = (2 / 3) * F.binary_cross_entropy_with_logits(outputs[0], target) + (
        1 / 3) * F.binary_cross_entropy_with_logits(outputs[1], target[:, :, ::2, ::2, ::2])
    assert main is outputs[0] and torch.allclose(loss, expected)


def test_label_value_targets_and_class_indices_both_work() -> None:
    torch.manual_seed(0)
    labels = torch.randint(0, 3, (2, 8, 8, 8))
    outputs = (torch.randn(2, 3, 8, 8, 8), torch.randn(2, 3, 4, 4, 4))
    ce_dice = CEDiceLoss(mode="multiclass")
    loss, _ = supervised_loss(ce_dice, outputs, labels[:, None].float())  # Labels.loss_target's (N, 1, ...) values
    half = labels[:, None, ::2, ::2, ::2].float()
    assert torch.allclose(loss, (2 / 3) * ce_dice(outputs[0], labels[:, None].float()) + (1 / 3) * ce_dice(outputs[1], half))
    loss, _ = supervised_loss(F.cross_entropy, outputs, labels)  # (N, D, H, W) long class indices
    expected = (2 / 3) * F.cross_entropy(outputs[0], labels) + (1 / 3) * F.cross_entropy(outputs[1], labels[:, ::2, ::2, ::2])
    assert torch.allclose(loss, expected)
    assert downsample_target(labels, (4, 4, 4)).dtype == torch.long


def test_a_deep_supervised_model_trains_through_segkit_run(tmp_path: Path) -> None:
    out = tmp_path / "run"
    run_in_process("run", "--model", "unet3d", "--set", "model.spatial_dims=2", "--set", "model.width=4",
                   "--set", "model.stages=3", "--set", "model.deep_supervision=true", "--epochs", "1",
                   "--set", "dataset.count=16", "--set", "dataset.size=32", "--set", "dataset.slices_per_case=4",
                   "--batch-size", "8", "--augment", "none", "--quiet", "--out", str(out))
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert len(rows) == 1 and math.isfinite(float(rows[0]["train_loss"])), rows


def test_every_parameter_gets_a_gradient_though_the_lowest_level_is_not_scored() -> None:
    model = build(stages=4, deep_supervision=True).train()
    x, target = torch.rand(2, 1, 16, 16, 16), (torch.rand(2, 1, 16, 16, 16) > 0.5).float()
    loss, _ = supervised_loss(F.binary_cross_entropy_with_logits, model(x), target)
    loss.backward()  # DistributedDataParallel without find_unused_parameters needs every gradient
    assert all(p.grad is not None for p in model.parameters())
    lowest_head = model.aux_heads[0]  # from the bottleneck up: the first decoder level's head
    assert all(not p.grad.any() for p in lowest_head.parameters())


def test_without_deep_supervision_every_parameter_is_used() -> None:
    model = build(stages=4).train()
    model(torch.rand(1, 1, 16, 16, 16)).mean().backward()
    assert len(model.aux_heads) == 0 and all(p.grad is not None for p in model.parameters())
