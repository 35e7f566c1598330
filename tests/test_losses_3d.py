"""The built-in losses, the label helpers and the metric accumulator on volumes (N, C, D, H, W).

Expected values come from MONAI (a peer library) or are counted by hand with numpy.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from segkit.components.registry import get_registry
from segkit.scoring.metrics import MetricAccumulator
from segkit.labels import Labels

REGISTRY = get_registry()
SHAPE = (2, 6, 7, 8)  # N, D, H, W


def volumes(channels: int, classes: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random logits (N, channels, D, H, W) and label values (N, 1, D, H, W) in 0 .. classes-1."""
    generator = torch.Generator().manual_seed(seed)
    n, *spatial = SHAPE
    logits = torch.randn((n, channels, *spatial), generator=generator)
    labels = torch.randint(0, classes, (n, 1, *spatial), generator=generator).float()
    return logits, labels


def test_bce_dice_on_volumes_is_the_same_loss_as_on_the_flattened_images() -> None:
    loss = REGISTRY.build("loss", "bce_dice")
    logits, target = volumes(1, 2)
    flat = loss(logits.flatten(2, 3), target.flatten(2, 3))  # pooled over every voxel either way
    assert torch.allclose(loss(logits, target), flat)


def test_ce_dice_on_volumes_matches_monai_dice_ce() -> None:
    monai_losses = pytest.importorskip("monai.losses")
    logits, labels = volumes(3, 3)
    ours = REGISTRY.build("loss", "ce_dice", mode="multiclass", smooth=1e-5, batch_dice=True)
    peer = monai_losses.DiceCELoss(to_onehot_y=True, softmax=True, include_background=False, smooth_nr=1e-5,
                                   smooth_dr=1e-5, batch=True)
    assert torch.allclose(ours(logits, labels), peer(logits, labels.long()), atol=1e-6)


def test_ce_dice_per_image_on_volumes_matches_monai() -> None:
    monai_losses = pytest.importorskip("monai.losses")
    logits, labels = volumes(3, 3, seed=1)
    ours = REGISTRY.build("loss", "ce_dice", mode="multiclass", smooth=1e-5, batch_dice=False)
    peer = monai_losses.DiceCELoss(to_onehot_y=True, softmax=True, include_background=False, smooth_nr=1e-5,
                                   smooth_dr=1e-5, batch=False)
    assert torch.allclose(ours(logits, labels), peer(logits, labels.long()), atol=1e-6)


def loss_cases(name: str) -> list[tuple[str, dict]]:
    modes = {p.name for p in REGISTRY.get("loss", name).parameters()}
    return [("binary", {})] + ([("multiclass", {"mode": "multiclass"}), ("multilabel", {"mode": "multilabel"})]
                               if "mode" in modes else [])


@pytest.mark.parametrize("name, mode, params", [(n, m, p) for n in REGISTRY.names("loss") for m, p in loss_cases(n)])
def test_every_built_in_loss_takes_volumes(name: str, mode: str, params: dict) -> None:
    labels = Labels(("background", "a", "b"), mode) if mode != "binary" else Labels()
    logits, values = volumes(labels.out_channels, labels.classes)
    target = labels.loss_target(values)
    logits.requires_grad_(True)
    value = REGISTRY.build("loss", name, **params)(logits, target)
    value.backward()
    assert value.ndim == 0 and torch.isfinite(value) and torch.isfinite(logits.grad).all()


def counts_by_hand(predicted: np.ndarray, actual: np.ndarray) -> np.ndarray:
    """Per-image [tp, fp, fn, tn] of boolean arrays (N, ...)."""
    axes = tuple(range(1, predicted.ndim))
    return np.stack([(predicted & actual).sum(axes), (predicted & ~actual).sum(axes),
                     (~predicted & actual).sum(axes), (~predicted & ~actual).sum(axes)], axis=-1)


def test_binary_dice_and_iou_on_volumes() -> None:
    logits, target = volumes(1, 2)
    accumulator = MetricAccumulator({"dice": REGISTRY.build("metric", "dice"), "iou": REGISTRY.build("metric", "iou")},
                                    labels=Labels())
    accumulator.update(logits, target, ["a", "b"])
    expected = counts_by_hand(logits.numpy() >= 0, target.numpy() > 0.5)
    assert np.array_equal(accumulator.counts().numpy(), expected)
    tp, fp, fn, _ = expected.sum(0)
    result = accumulator.compute()
    assert result["global"]["dice"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
    assert result["global"]["iou"] == pytest.approx(tp / (tp + fp + fn))


@pytest.mark.parametrize("mode", ["multiclass", "multilabel"])
def test_per_label_dice_and_iou_on_volumes(mode: str) -> None:
    labels = Labels(("background", "anterior", "posterior"), mode)
    logits, values = volumes(labels.out_channels, 3)
    accumulator = MetricAccumulator({"dice": REGISTRY.build("metric", "dice"), "iou": REGISTRY.build("metric", "iou")},
                                    labels=labels)
    accumulator.update(logits, values, ["a", "b"])
    truth = values.numpy()[:, 0]
    if mode == "multiclass":
        winner = logits.numpy().argmax(1)
        predicted = [winner == k for k in (1, 2)]
    else:
        predicted = [logits.numpy()[:, k] >= 0 for k in (0, 1)]
    expected = np.stack([counts_by_hand(predicted[i], truth == i + 1) for i in range(2)], axis=1)
    assert np.array_equal(accumulator.counts().numpy(), expected)
    result = accumulator.compute()
    for k, name in enumerate(labels.foreground):
        tp, fp, fn, _ = expected[:, k].sum(0)
        assert result["per_class"][name]["global"]["dice"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
        assert result["per_class"][name]["global"]["iou"] == pytest.approx(tp / (tp + fp + fn))


def test_label_maps_of_volumes() -> None:
    labels = Labels(("background", "a", "b"), "multiclass")
    values = volumes(3, 3)[1]
    masks = labels.truth_masks(values)
    assert masks.shape == (2, 2, *SHAPE[1:])
    assert torch.equal(labels.label_map(masks), values[:, 0].long())
