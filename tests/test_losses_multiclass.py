"""Multi-class and multi-label losses: hand-computed values, agreement with smp (and MONAI), errors."""

from __future__ import annotations

import math

import pytest
import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F

from segkit.components.registry import get_registry
from segkit_builtins.losses import smp_losses
from segkit_builtins.losses.bce import BCELoss
from segkit_builtins.losses.bce_dice import BCEDiceLoss
from segkit_builtins.losses.cross_entropy import CEDiceLoss, CrossEntropyLoss
from segkit_builtins.losses.modes import LOSS_MODES, check_mode, check_target

SMP_FACTORIES = {
    "jaccard": smp_losses.jaccard,
    "focal": smp_losses.focal,
    "tversky": smp_losses.tversky,
    "lovasz": smp_losses.lovasz,
    "smp_dice": smp_losses.smp_dice,
}


def all_losses(mode: str) -> dict[str, torch.nn.Module]:
    """Every new or mode-taking loss, built in ``mode``."""
    losses = {name: factory(mode=mode) for name, factory in SMP_FACTORIES.items()}
    losses["ce"] = CrossEntropyLoss(mode=mode)
    losses["ce_dice"] = CEDiceLoss(mode=mode)
    losses["ce_dice_per_image"] = CEDiceLoss(mode=mode, batch_dice=False)
    return losses


# --- hand-computed values ------------------------------------------------------------------------

# One 2x2 image, C = 3. Each pixel's logits are the logs of probabilities summing to 1, so the
# softmax gives those probabilities back:
#   pixel  probs (c0, c1, c2)   label
#   (0,0)  0.50 0.25 0.25       0
#   (0,1)  0.25 0.50 0.25       1
#   (1,0)  0.25 0.25 0.50       1
#   (1,1)  0.10 0.20 0.70       2
PROBS = [[0.50, 0.25, 0.25], [0.25, 0.50, 0.25], [0.25, 0.25, 0.50], [0.10, 0.20, 0.70]]
LABELS = [0, 1, 1, 2]


def three_class_image() -> tuple[torch.Tensor, torch.Tensor]:
    logits = torch.tensor(PROBS).log().T.reshape(1, 3, 2, 2)
    target = torch.tensor(LABELS, dtype=torch.float32).reshape(1, 1, 2, 2)
    return logits, target


def test_multiclass_cross_entropy_by_hand():
    logits, target = three_class_image()
    # -log p[label]: log 2, log 2, -log 0.25 = log 4, -log 0.7
    nll = [math.log(2), math.log(2), math.log(4), -math.log(0.7)]
    assert CrossEntropyLoss("multiclass")(logits, target).item() == pytest.approx(sum(nll) / 4, rel=1e-6)
    # weights w = (1, 2, 3) by label (0, 1, 1, 2): sum w nll / sum w = (log 2 + 2 log 2 + 2 log 4 - 3 log 0.7) / 8
    expected = (1 * nll[0] + 2 * nll[1] + 2 * nll[2] + 3 * nll[3]) / (1 + 2 + 2 + 3)
    assert CrossEntropyLoss("multiclass", weight=[1, 2, 3])(logits, target).item() == pytest.approx(expected, rel=1e-6)


def test_multiclass_ce_dice_by_hand():
    logits, target = three_class_image()
    ce = (2 * math.log(2) + math.log(4) - math.log(0.7)) / 4
    # class 1: p = (.25, .5, .25, .2), t = (0, 1, 1, 0): I = .75, P = 1.2, T = 2 -> Dice = 1.5 / 3.2
    # class 2: p = (.25, .25, .5, .7), t = (0, 0, 0, 1): I = .7, P = 1.7, T = 1 -> Dice = 1.4 / 2.7
    # class 0: p = (.5, .25, .25, .1), t = (1, 0, 0, 0): I = .5, P = 1.1, T = 1 -> Dice = 1.0 / 2.1
    dice1, dice2, dice0 = 1.5 / 3.2, 1.4 / 2.7, 1.0 / 2.1
    loss = CEDiceLoss("multiclass", smooth=0.0)
    assert loss(logits, target).item() == pytest.approx(ce + 1 - (dice1 + dice2) / 2, rel=1e-6)
    with_background = CEDiceLoss("multiclass", smooth=0.0, include_background=True)
    assert with_background(logits, target).item() == pytest.approx(ce + 1 - (dice0 + dice1 + dice2) / 3, rel=1e-6)
    weighted = CEDiceLoss("multiclass", ce_weight=0.5, dice_weight=2.0, smooth=0.0)
    assert weighted(logits, target).item() == pytest.approx(0.5 * ce + 2 * (1 - (dice1 + dice2) / 2), rel=1e-6)


def test_multiclass_ce_dice_batch_and_per_image_by_hand():
    first_logits, first_target = three_class_image()
    # a second image: uniform logits (p = 1/3 everywhere), all background
    logits = torch.cat([first_logits, torch.zeros(1, 3, 2, 2)])
    target = torch.cat([first_target, torch.zeros(1, 1, 2, 2)])
    ce = (2 * math.log(2) + math.log(4) - math.log(0.7) + 4 * math.log(3)) / 8
    s = 1.0
    # per image: image 1 as above with smooth 1; image 2: I = 0, P = 4/3, T = 0 for both classes
    per_image = [(1.5 + s) / (3.2 + s), (1.4 + s) / (2.7 + s), s / (4 / 3 + s), s / (4 / 3 + s)]
    value = CEDiceLoss("multiclass", smooth=s, batch_dice=False)(logits, target).item()
    assert value == pytest.approx(ce + 1 - sum(per_image) / 4, rel=1e-6)
    # batch Dice: the sums of the two images, then one Dice per class
    batch = [(1.5 + s) / (3.2 + 4 / 3 + s), (1.4 + s) / (2.7 + 4 / 3 + s)]
    value = CEDiceLoss("multiclass", smooth=s, batch_dice=True)(logits, target).item()
    assert value == pytest.approx(ce + 1 - sum(batch) / 2, rel=1e-6)


def two_label_image() -> tuple[torch.Tensor, torch.Tensor]:
    # K = 2 labels on a 1x2 image; sigmoid(0) = 1/2, sigmoid(log 3) = 3/4
    logits = torch.tensor([[0.0, math.log(3.0)], [math.log(3.0), 0.0]]).reshape(1, 2, 1, 2)
    target = torch.tensor([[1.0, 0.0], [1.0, 1.0]]).reshape(1, 2, 1, 2)
    return logits, target


def test_multilabel_cross_entropy_by_hand():
    logits, target = two_label_image()
    # label 0: -log 1/2 = log 2 (positive), -log(1 - 3/4) = log 4 (negative)
    # label 1: -log 3/4 = log 4/3 (positive), log 2 (positive)
    terms = [math.log(2), math.log(4), math.log(4 / 3), math.log(2)]
    assert CrossEntropyLoss("multilabel")(logits, target).item() == pytest.approx(sum(terms) / 4, rel=1e-6)
    # pos_weight 2 doubles the three positive terms
    expected = (2 * terms[0] + terms[1] + 2 * terms[2] + 2 * terms[3]) / 4
    assert CrossEntropyLoss("multilabel", pos_weight=2.0)(logits, target).item() == pytest.approx(expected, rel=1e-6)


def test_multilabel_ce_dice_by_hand():
    logits, target = two_label_image()
    ce = (2 * math.log(2) + math.log(4) + math.log(4 / 3)) / 4
    # label 0: p = (1/2, 3/4), t = (1, 0): I = 1/2, P = 5/4, T = 1 -> Dice = 1 / 2.25
    # label 1: p = (3/4, 1/2), t = (1, 1): I = 5/4, P = 5/4, T = 2 -> Dice = 2.5 / 3.25
    # (no background channel in multilabel mode: both labels count, include_background or not)
    dice = (1 / 2.25 + 2.5 / 3.25) / 2
    for include_background in (False, True):
        loss = CEDiceLoss("multilabel", smooth=0.0, include_background=include_background)
        assert loss(logits, target).item() == pytest.approx(ce + 1 - dice, rel=1e-6)


def test_binary_ce_dice_per_image_by_hand():
    # image 1: p = 1/2 on 2 pixels, t = (1, 0): Dice = (1 + s) / (1 + 1 + s); image 2: empty, p = (1/2, 1/2)
    logits = torch.zeros(2, 1, 1, 2)
    target = torch.tensor([1.0, 0.0, 0.0, 0.0]).reshape(2, 1, 1, 2)
    s = 1.0
    dice = ((1 + s) / (2 + s) + s / (1 + s)) / 2
    value = CEDiceLoss(smooth=s, batch_dice=False)(logits, target).item()
    assert value == pytest.approx(math.log(2) + 1 - dice, rel=1e-6)


# --- binary mode: the tutorial's losses ------------------------------------------------------------


@pytest.fixture
def binary_batch() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 1, 8, 8, generator=generator) * 2
    target = (torch.rand(3, 1, 8, 8, generator=generator) > 0.7).float()
    target[1] = 0.0
    return logits, target


@pytest.mark.parametrize("pos_weight", [None, 3.0])
def test_binary_ce_is_bce(binary_batch, pos_weight):
    logits, target = binary_batch
    assert torch.equal(CrossEntropyLoss(pos_weight=pos_weight)(logits, target), BCELoss(pos_weight)(logits, target))


@pytest.mark.parametrize(("ce_weight", "dice_weight"), [(1.0, 1.0), (0.3, 2.0)])
def test_binary_ce_dice_with_batch_dice_is_bce_dice(binary_batch, ce_weight, dice_weight):
    logits, target = binary_batch
    expected = BCEDiceLoss(ce_weight, dice_weight, smooth=1.0)(logits, target)
    value = CEDiceLoss(ce_weight=ce_weight, dice_weight=dice_weight, smooth=1.0)(logits, target)
    assert value.item() == pytest.approx(expected.item(), rel=1e-6)


def test_binary_smp_dice_equals_smp(binary_batch):
    logits, target = binary_batch
    expected = smp.losses.DiceLoss("binary", from_logits=True)(logits, target)
    assert torch.allclose(smp_losses.smp_dice()(logits, target), expected)


# --- smp losses in multiclass and multilabel mode equal smp called directly -------------------------


def random_case(mode: str, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    if mode == "multiclass":
        logits = torch.randn(2, 4, 8, 8, generator=generator) * 2
        target = torch.randint(0, 4, (2, 1, 8, 8), generator=generator).float()
        target[1][target[1] == 3] = 2  # class 3 absent from the second image
    else:
        logits = torch.randn(2, 3, 8, 8, generator=generator) * 2
        target = (torch.rand(2, 3, 8, 8, generator=generator) > 0.6).float()
        target[:, 2] = 0.0  # label 2 absent from the batch
    return logits, target


SMP_CASES = [
    ("jaccard", {}, lambda m: smp.losses.JaccardLoss(m, from_logits=True)),
    ("jaccard", {"smooth": 1.0, "log_loss": True}, lambda m: smp.losses.JaccardLoss(m, smooth=1.0, log_loss=True)),
    ("focal", {}, lambda m: smp.losses.FocalLoss(m)),
    ("focal", {"alpha": 0.25, "gamma": 3.0}, lambda m: smp.losses.FocalLoss(m, alpha=0.25, gamma=3.0)),
    ("tversky", {}, lambda m: smp.losses.TverskyLoss(m)),
    ("tversky", {"alpha": 0.3, "beta": 0.7, "gamma": 1.5},
     lambda m: smp.losses.TverskyLoss(m, alpha=0.3, beta=0.7, gamma=1.5)),
    ("lovasz", {}, lambda m: smp.losses.LovaszLoss(m)),
    ("lovasz", {"per_image": True}, lambda m: smp.losses.LovaszLoss(m, per_image=True)),
    ("smp_dice", {}, lambda m: smp.losses.DiceLoss(m, from_logits=True)),
    ("smp_dice", {"smooth": 1.0, "log_loss": True}, lambda m: smp.losses.DiceLoss(m, smooth=1.0, log_loss=True)),
]


@pytest.mark.parametrize("mode", ["multiclass", "multilabel"])
@pytest.mark.parametrize(("name", "options", "reference"), SMP_CASES)
def test_smp_losses_in_mode_equal_smp(mode, name, options, reference):
    logits, target = random_case(mode)
    smp_target = target[:, 0].long() if mode == "multiclass" else target  # (N, H, W) label map for smp
    expected = reference(mode)(logits, smp_target)
    value = SMP_FACTORIES[name](mode=mode, **options)(logits, target)
    assert value.dtype == torch.float32
    assert torch.allclose(value, expected), (value, expected)


def test_smp_dice_zeroes_classes_absent_from_the_batch():
    # smp's Dice: 1 - Dice per class, 0 for a class without target pixels, then the mean over all C
    logits, target = random_case("multiclass")
    target[target == 3] = 2  # class 3 now absent from the whole batch
    probs = logits.softmax(1)
    onehot = F.one_hot(target[:, 0].long(), 4).permute(0, 3, 1, 2).float()
    intersection, total = (probs * onehot).sum((0, 2, 3)), (probs + onehot).sum((0, 2, 3))
    per_class = 1 - 2 * intersection / total
    per_class[3] = 0.0
    value = smp_losses.smp_dice(mode="multiclass")(logits, target)
    assert value.item() == pytest.approx(per_class.mean().item(), rel=1e-5)
    # in multilabel mode predicting an absent label costs nothing at all
    logits, target = random_case("multilabel")
    louder = logits.clone()
    louder[:, 2] += 10.0
    loss = smp_losses.smp_dice(mode="multilabel")
    assert loss(louder, target).item() == pytest.approx(loss(logits, target).item(), rel=1e-6)


# --- ranking, gradients, float32 -------------------------------------------------------------------


def ranking_case(mode: str) -> tuple[torch.Tensor, torch.Tensor]:
    """A target and confident correct logits, 2 images of 16x16: C = 3 classes or K = 2 labels."""
    if mode == "multiclass":
        labels = torch.zeros(2, 1, 16, 16)
        labels[0, 0, 2:8, 3:10] = 1
        labels[0, 0, 9:14, 9:15] = 2
        labels[1, 0, 4:12, 4:12] = 1  # class 2 absent from the second image
        onehot = F.one_hot(labels[:, 0].long(), 3).permute(0, 3, 1, 2).float()
        return labels, 4.0 * (2.0 * onehot - 1.0)
    target = torch.zeros(2, 2, 16, 16)
    target[0, 0, 2:10, 2:10] = 1
    target[0, 1, 6:14, 6:14] = 1  # overlapping labels
    target[1, 0, 3:7, 8:15] = 1  # label 1 absent from the second image
    return target, 4.0 * (2.0 * target - 1.0)


@pytest.mark.parametrize("mode", ["multiclass", "multilabel"])
def test_losses_rank_predictions_and_have_finite_gradients(mode):
    target, good = ranking_case(mode)
    for name, loss in all_losses(mode).items():
        values = {}
        for label, logits in {"correct": good, "uncertain": torch.zeros_like(good), "wrong": -good}.items():
            logits = logits.clone().requires_grad_(True)
            value = loss(logits, target)
            assert value.ndim == 0 and torch.isfinite(value), (name, label, value)
            value.backward()
            assert logits.grad is not None and torch.isfinite(logits.grad).all(), (name, label)
            values[label] = value.item()
        assert values["correct"] < values["uncertain"] < values["wrong"], (name, values)


@pytest.mark.parametrize("mode", LOSS_MODES)
def test_losses_compute_in_float32_under_autocast(mode):
    target, good = ranking_case(mode) if mode != "binary" else (torch.ones(2, 1, 4, 4), torch.randn(2, 1, 4, 4))
    logits = good + torch.randn(good.shape, generator=torch.Generator().manual_seed(0))
    for name, loss in all_losses(mode).items():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            value = loss(logits.bfloat16(), target.bfloat16())
        assert value.dtype == torch.float32, name
        reference = loss(logits.bfloat16().float(), target)
        assert value.item() == pytest.approx(reference.item(), rel=1e-5), name
        assert loss(logits.half(), target.half()).dtype == torch.float32, name


# --- errors ----------------------------------------------------------------------------------------


def test_unknown_mode_is_rejected_listing_the_modes():
    for build in (check_mode, lambda mode: CrossEntropyLoss(mode=mode), lambda mode: CEDiceLoss(mode=mode),
                  *(lambda mode, f=f: f(mode=mode) for f in SMP_FACTORIES.values())):
        with pytest.raises(ValueError, match="unknown loss mode 'softmax'.*'binary', 'multiclass', 'multilabel'"):
            build("softmax")


BAD_PAIRS = [
    # (mode, logits shape, target, message)
    ("multiclass", (2, 3, 4, 4), torch.full((2, 1, 4, 4), 3.0), r"label value 3, which is >= C=3.*0\.\.2"),
    ("multiclass", (2, 3, 4, 4), torch.full((2, 1, 4, 4), -1.0), r"label value -1, which is negative"),
    ("multiclass", (2, 3, 4, 4), torch.full((2, 1, 4, 4), 1.5), r"label value 1.5, which is not an integer"),
    ("multiclass", (2, 3, 4, 4), torch.full((2, 1, 4, 4), float("nan")), r"label value nan"),
    ("multiclass", (2, 3, 4, 4), torch.zeros(2, 3, 4, 4), r"expects target \(2, 1, 4, 4\).*mode='multilabel'"),
    ("multiclass", (2, 3, 4, 4), torch.zeros(2, 4, 4), r"expects target \(2, 1, 4, 4\)"),
    ("multiclass", (2, 1, 4, 4), torch.zeros(2, 1, 4, 4), r"C >= 2.*mode='binary'"),
    ("multilabel", (2, 3, 4, 4), torch.zeros(2, 1, 4, 4), r"same shape \(N, K, H, W\).*mode='multiclass'"),
    ("multilabel", (2, 3, 4, 4), torch.zeros(2, 3, 4, 5), r"got logits \(2, 3, 4, 4\) and target \(2, 3, 4, 5\)"),
    ("binary", (2, 1, 4, 4), torch.zeros(2, 1, 4, 5), r"binary mode expects .* same shape"),
    ("binary", (2, 3, 4, 4), torch.zeros(2, 1, 4, 4), r"mode='multiclass'"),
]


@pytest.mark.parametrize(("mode", "shape", "target", "message"), BAD_PAIRS)
def test_bad_pairs_raise_value_error(mode, shape, target, message):
    logits = torch.zeros(shape)
    with pytest.raises(ValueError, match=message):
        check_target(logits, target, mode)
    for name, loss in all_losses(mode).items():
        with pytest.raises(ValueError, match=message):
            loss(logits, target)


def test_multiclass_target_value_error_names_the_largest_value():
    target = torch.zeros(1, 1, 2, 2)
    target[0, 0, 1, 1] = 7.0
    with pytest.raises(ValueError, match=r"label value 7, which is >= C=4: logits with C=4 channels"):
        CrossEntropyLoss("multiclass")(torch.zeros(1, 4, 2, 2), target)


def test_class_weights_are_checked():
    with pytest.raises(ValueError, match=r"weight has 2 entries but the logits have C=3 classes"):
        CrossEntropyLoss("multiclass", weight=[1.0, 2.0])(*three_class_image())
    with pytest.raises(ValueError, match="weight .* is for mode='multiclass'"):
        CrossEntropyLoss("binary", weight=[1.0, 2.0])
    with pytest.raises(ValueError, match="non-negative"):
        CrossEntropyLoss("multiclass", weight=[1.0, -2.0, 1.0])
    with pytest.raises(ValueError, match="pos_weight is for"):
        CrossEntropyLoss("multiclass", pos_weight=2.0)


def test_registry_builds_the_new_losses_with_a_mode():
    registry = get_registry()
    logits, target = three_class_image()
    ce = registry.build("loss", "ce", mode="multiclass", weight=[1, 2, 3])
    expected = CrossEntropyLoss("multiclass", weight=[1, 2, 3])(logits, target)
    assert ce(logits, target).item() == pytest.approx(expected.item())
    for name in ("ce_dice", "smp_dice", "jaccard", "focal", "tversky", "lovasz"):
        assert torch.isfinite(registry.build("loss", name, mode="multiclass")(logits, target)), name


# --- MONAI as a peer (skipped where MONAI is not installed) -----------------------------------------
#
# MONAI's DiceLoss computes per (image, class) 1 - (2 tp + smooth_nr) / (2 tp + fp + fn + smooth_dr), i.e.
# 1 - (2 I + smooth) / (P + T + smooth) for hard labels, summing over the batch too with batch=True, and
# averages over all remaining (image,) class entries; include_background=False drops channel 0 after the
# softmax, to_onehot_y one-hots the (N, 1, H, W) label map. DiceCELoss adds torch's CrossEntropyLoss on
# target[:, 0].long() (mean). That is CEDiceLoss in multiclass mode with smooth_nr = smooth_dr = smooth.
# Structural difference in multilabel mode: for C > 1 channels MONAI's CE is a softmax cross-entropy
# with the target as class probabilities, not a BCE per channel, so there only the Dice part is compared.


@pytest.mark.parametrize("batch_dice", [True, False])
@pytest.mark.parametrize("include_background", [False, True])
def test_ce_dice_multiclass_agrees_with_monai(batch_dice, include_background):
    monai_losses = pytest.importorskip("monai.losses")
    logits, target = random_case("multiclass", seed=1)
    reference = monai_losses.DiceCELoss(
        include_background=include_background, to_onehot_y=True, softmax=True, batch=batch_dice,
        smooth_nr=1e-5, smooth_dr=1e-5, lambda_dice=1.0, lambda_ce=1.0,
    )(logits, target)
    value = CEDiceLoss("multiclass", smooth=1e-5, batch_dice=batch_dice, include_background=include_background)
    assert value(logits, target).item() == pytest.approx(reference.item(), abs=1e-5)


@pytest.mark.parametrize("batch_dice", [True, False])
def test_ce_dice_multilabel_and_binary_agree_with_monai(batch_dice):
    monai_losses = pytest.importorskip("monai.losses")
    logits, target = random_case("multilabel", seed=2)
    dice = monai_losses.DiceLoss(sigmoid=True, batch=batch_dice, smooth_nr=1e-5, smooth_dr=1e-5)(logits, target)
    ours = CEDiceLoss("multilabel", ce_weight=0.0, smooth=1e-5, batch_dice=batch_dice)(logits, target)
    assert ours.item() == pytest.approx(dice.item(), abs=1e-5)
    # binary (one channel): MONAI's DiceCELoss uses BCE with logits, as CEDiceLoss does
    logits, target = logits[:, :1], target[:, :1]
    reference = monai_losses.DiceCELoss(sigmoid=True, batch=batch_dice, smooth_nr=1e-5, smooth_dr=1e-5)(logits, target)
    value = CEDiceLoss(smooth=1e-5, batch_dice=batch_dice)(logits, target)
    assert value.item() == pytest.approx(reference.item(), abs=1e-5)
