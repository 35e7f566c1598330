"""The built-in losses: hand-computed values and agreement with torch and smp."""

from __future__ import annotations

import importlib
import math
import tomllib
from pathlib import Path

import pytest
import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F

from segkit.testing import check_loss
from segkit_builtins.losses import smp_losses
from segkit_builtins.losses.bce import BCELoss
from segkit_builtins.losses.bce_dice import BCEDiceLoss
from segkit_builtins.losses.dice import SoftDiceLoss

REGISTRY = tomllib.loads((Path(__file__).parents[1] / "registry.toml").read_text())
LOSS_TARGETS = {name: entry["target"] for name, entry in REGISTRY["loss"].items()}


def build(target: str, **params):
    module, attr = target.split(":")
    return getattr(importlib.import_module(module), attr)(**params)


@pytest.fixture
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 1, 8, 8, generator=generator) * 2
    target = (torch.rand(3, 1, 8, 8, generator=generator) > 0.7).float()
    target[1] = 0.0  # one empty image
    return logits, target


@pytest.mark.parametrize("name", sorted(LOSS_TARGETS))
def test_every_registered_loss_conforms(name):
    check_loss(build(LOSS_TARGETS[name]))


@pytest.mark.parametrize("name", sorted(LOSS_TARGETS))
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_losses_compute_in_float32(name, dtype, batch):
    logits, target = batch
    value = build(LOSS_TARGETS[name])(logits.to(dtype), target.to(dtype))
    assert value.dtype == torch.float32
    assert torch.isfinite(value)


def test_bce_by_hand():
    # -log(sigmoid(0)) = log 2 for the lesion pixel; -log(1 - sigmoid(log 3)) = log 4 for the background one
    logits = torch.tensor([0.0, math.log(3.0)]).view(1, 1, 1, 2)
    target = torch.tensor([1.0, 0.0]).view(1, 1, 1, 2)
    assert BCELoss()(logits, target).item() == pytest.approx((math.log(2) + math.log(4)) / 2)
    assert BCELoss(pos_weight=2.0)(logits, target).item() == pytest.approx((2 * math.log(2) + math.log(4)) / 2)


@pytest.mark.parametrize("pos_weight", [None, 3.0])
def test_bce_matches_torch(batch, pos_weight):
    logits, target = batch
    weight = None if pos_weight is None else torch.tensor(pos_weight)
    expected = F.binary_cross_entropy_with_logits(logits, target, pos_weight=weight)
    assert torch.allclose(BCELoss(pos_weight)(logits, target), expected)


def test_soft_dice_by_hand():
    # p = sigmoid(0) = 0.5 on 4 pixels, one lesion pixel: 1 - (2 * 0.5 + 1) / (2 + 1 + 1) = 0.5
    target = torch.tensor([1.0, 0.0, 0.0, 0.0]).view(1, 1, 2, 2)
    assert SoftDiceLoss()(torch.zeros(1, 1, 2, 2), target).item() == pytest.approx(0.5)
    # smooth = 0: 1 - 1 / 3
    assert SoftDiceLoss(smooth=0.0)(torch.zeros(1, 1, 2, 2), target).item() == pytest.approx(2 / 3)


def test_soft_dice_pools_the_whole_batch(batch):
    logits, target = batch
    p = [1 / (1 + math.exp(-v)) for v in logits.flatten().tolist()]
    t = target.flatten().tolist()
    intersection = sum(a * b for a, b in zip(p, t))
    expected = 1 - (2 * intersection + 1.0) / (sum(p) + sum(t) + 1.0)
    assert SoftDiceLoss()(logits, target).item() == pytest.approx(expected, rel=1e-5)


def test_per_image_soft_dice_weighs_a_small_object_as_much_as_a_large_one():
    # image 0: a 12-pixel object found exactly; image 1: a 1-pixel object missed (its 16 pixels near 0)
    target = torch.zeros(2, 1, 4, 4)
    target[0, 0, :3] = 1.0
    target[1, 0, 0, 0] = 1.0
    logits = torch.where(target[:1] > 0, 20.0, -20.0)
    logits = torch.cat([logits, torch.full((1, 1, 4, 4), -20.0)])
    pooled = SoftDiceLoss(smooth=0.0)(logits, target).item()
    per_image = SoftDiceLoss(smooth=0.0, per_image=True)(logits, target).item()
    assert pooled == pytest.approx(1 - 24 / 25, abs=1e-4)  # the missed pixel is 1 of 13
    assert per_image == pytest.approx((0 + 1) / 2, abs=1e-4)  # the missed object is half the images
    with_bce = BCEDiceLoss(smooth=0.0, per_image=True)(logits, target).item()
    assert with_bce == pytest.approx(F.binary_cross_entropy_with_logits(logits, target).item() + per_image, rel=1e-5)


def test_per_image_soft_dice_of_one_image_is_the_pooled_one(batch):
    logits, target = batch
    assert SoftDiceLoss(per_image=True)(logits[:1], target[:1]).item() == pytest.approx(
        SoftDiceLoss()(logits[:1], target[:1]).item(), rel=1e-6)


def test_soft_dice_of_an_empty_batch_predicted_empty_is_near_zero():
    logits = torch.full((2, 1, 4, 4), -20.0)
    assert SoftDiceLoss()(logits, torch.zeros(2, 1, 4, 4)).item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize(("bce_weight", "dice_weight"), [(1.0, 1.0), (0.3, 2.0), (0.0, 1.0)])
def test_bce_dice_weights(batch, bce_weight, dice_weight):
    logits, target = batch
    expected = (
        bce_weight * F.binary_cross_entropy_with_logits(logits, target)
        + dice_weight * SoftDiceLoss(smooth=0.5)(logits, target)
    )
    value = BCEDiceLoss(bce_weight, dice_weight, smooth=0.5)(logits, target)
    assert value.item() == pytest.approx(expected.item(), rel=1e-6)


def test_bce_dice_by_hand():
    logits = torch.zeros(1, 1, 2, 2)
    target = torch.tensor([1.0, 0.0, 0.0, 0.0]).view(1, 1, 2, 2)
    # BCE: every pixel costs log 2; soft Dice: 0.5 (see test_soft_dice_by_hand)
    assert BCEDiceLoss()(logits, target).item() == pytest.approx(math.log(2) + 0.5)


@pytest.mark.parametrize(
    ("factory", "options", "reference"),
    [
        (smp_losses.jaccard, {}, lambda: smp.losses.JaccardLoss("binary", from_logits=True)),
        (smp_losses.jaccard, {"smooth": 1.0, "log_loss": True},
         lambda: smp.losses.JaccardLoss("binary", smooth=1.0, log_loss=True)),
        (smp_losses.focal, {}, lambda: smp.losses.FocalLoss("binary")),
        (smp_losses.focal, {"alpha": 0.25, "gamma": 3.0},
         lambda: smp.losses.FocalLoss("binary", alpha=0.25, gamma=3.0)),
        (smp_losses.tversky, {}, lambda: smp.losses.TverskyLoss("binary")),
        (smp_losses.tversky, {"alpha": 0.3, "beta": 0.7, "gamma": 1.5},
         lambda: smp.losses.TverskyLoss("binary", alpha=0.3, beta=0.7, gamma=1.5)),
        (smp_losses.lovasz, {}, lambda: smp.losses.LovaszLoss("binary")),
        (smp_losses.lovasz, {"per_image": True}, lambda: smp.losses.LovaszLoss("binary", per_image=True)),
    ],
)
def test_smp_losses_equal_smp(batch, factory, options, reference):
    logits, target = batch
    assert torch.allclose(factory(**options)(logits, target), reference()(logits, target))


def test_tversky_with_equal_weights_is_dice_without_smoothing(batch):
    logits, target = batch
    expected = SoftDiceLoss(smooth=0.0)(logits, target)
    assert smp_losses.tversky()(logits, target).item() == pytest.approx(expected.item(), rel=1e-5)


def test_check_loss_rejects_bad_losses():
    with pytest.raises(AssertionError, match="scalar"):
        check_loss(torch.nn.BCEWithLogitsLoss(reduction="none"))
    with pytest.raises(AssertionError, match="lower must be better"):
        check_loss(lambda logits, target: -F.binary_cross_entropy_with_logits(logits, target))
