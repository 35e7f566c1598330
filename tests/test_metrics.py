"""Confusion counts, the overlap metrics and the accumulator."""

from __future__ import annotations

import importlib
import tomllib
from pathlib import Path

import pytest
import segmentation_models_pytorch as smp
import torch

from segkit.scoring.metrics import MetricAccumulator, confusion_counts, scores_from_counts
from segkit.testing import check_metric
from segkit_builtins.metrics.overlap import Dice, IoU, Precision, Recall

REGISTRY = tomllib.loads((Path(__file__).parents[1] / "registry.toml").read_text())
METRIC_TARGETS = {name: entry["target"] for name, entry in REGISTRY["metric"].items()}
METRICS = {"dice": Dice(), "iou": IoU(), "precision": Precision(), "recall": Recall()}


def build(target: str, **params):
    module, attr = target.split(":")
    return getattr(importlib.import_module(module), attr)(**params)


def counts(*rows: tuple[int, int, int, int]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.int64)


@pytest.mark.parametrize("name", sorted(METRIC_TARGETS))
def test_every_registered_metric_conforms(name):
    check_metric(build(METRIC_TARGETS[name]))


# --- confusion counts --------------------------------------------------------------------


def test_confusion_counts_by_hand():
    logits = torch.tensor([[[[2.0, -1.0], [0.0, -3.0]]], [[[-5.0, -5.0], [-5.0, -5.0]]]])
    target = torch.tensor([[[[1.0, 1.0], [0.0, 0.0]]], [[[0.0, 0.0], [0.0, 0.0]]]])
    # image 0: predicted {(0,0), (1,0)} (sigmoid(0) = 0.5 counts), lesion {(0,0), (0,1)}
    assert confusion_counts(logits, target).tolist() == [[1, 1, 1, 1], [0, 0, 0, 4]]
    assert confusion_counts(logits, target, threshold=0.6).tolist() == [[1, 0, 1, 2], [0, 0, 0, 4]]


def test_confusion_counts_sum_channels():
    logits = torch.tensor([1.0, -1.0, 1.0, -1.0]).view(1, 2, 1, 2)
    target = torch.tensor([1.0, 1.0, 0.0, 0.0]).view(1, 2, 1, 2)
    assert confusion_counts(logits, target).tolist() == [[1, 1, 1, 1]]
    assert confusion_counts(logits, target).dtype == torch.int64


def test_confusion_counts_need_equal_shapes():
    with pytest.raises(ValueError, match="shape"):
        confusion_counts(torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 3))


# --- metrics and their empty-mask conventions ---------------------------------------------


def test_metric_values_by_hand():
    tp, fp, fn, tn = counts((3, 1, 2, 10)).unbind(-1)
    assert Dice().score(tp, fp, fn, tn).item() == pytest.approx(6 / 9)
    assert IoU().score(tp, fp, fn, tn).item() == pytest.approx(3 / 6)
    assert Precision().score(tp, fp, fn, tn).item() == pytest.approx(3 / 4)
    assert Recall().score(tp, fp, fn, tn).item() == pytest.approx(3 / 5)


@pytest.mark.parametrize(
    ("metric", "row", "expected"),
    [
        (Dice(), (0, 0, 0, 9), 1.0),  # no lesion, none predicted
        (Dice(empty_score=0.0), (0, 0, 0, 9), 0.0),
        (Dice(), (0, 2, 0, 7), 0.0),  # no lesion, something predicted
        (IoU(), (0, 0, 0, 9), 1.0),
        (IoU(empty_score=0.5), (0, 0, 0, 9), 0.5),
        (IoU(), (0, 0, 3, 6), 0.0),  # lesion missed entirely
        (Precision(), (0, 0, 0, 9), 1.0),  # nothing predicted, nothing there
        (Precision(), (0, 0, 3, 6), 0.0),  # nothing predicted, lesion there
        (Precision(), (0, 2, 0, 7), 0.0),
        (Recall(), (0, 0, 0, 9), 1.0),  # no lesion, none predicted
        (Recall(), (0, 2, 0, 7), 0.0),  # no lesion, something predicted
        (Recall(), (0, 0, 3, 6), 0.0),
    ],
)
def test_empty_mask_conventions(metric, row, expected):
    tp, fp, fn, tn = counts(row).unbind(-1)
    score = metric.score(tp, fp, fn, tn)
    assert score.tolist() == [expected]
    assert torch.isfinite(score).all()


def test_scores_are_element_wise_and_float():
    batch = torch.randint(0, 20, (3, 5, 4))
    for name, scores in scores_from_counts(METRICS, batch).items():
        assert scores.shape == (3, 5), name
        assert scores.is_floating_point(), name
        assert ((scores >= 0) & (scores <= 1)).all(), name


# --- per image, per case, global -----------------------------------------------------------

CRAFTED = counts(
    (2, 2, 0, 12),  # A: dice 2/3, iou 1/2
    (0, 0, 0, 16),  # A: empty, dice 1, iou 1
    (1, 0, 3, 12),  # B: dice 2/5, iou 1/4
    (0, 1, 0, 15),  # B: false positive only, dice 0, iou 0
    (4, 0, 0, 12),  # C: dice 1, iou 1
)
CRAFTED_CASES = ["A", "A", "B", "B", "C"]


def test_per_image_per_case_and_global_differ_as_computed_by_hand():
    accumulator = MetricAccumulator({"dice": Dice(), "iou": IoU()})
    accumulator.update_counts(CRAFTED[:3], CRAFTED_CASES[:3])
    accumulator.update_counts(CRAFTED[3:], CRAFTED_CASES[3:])
    result = accumulator.compute()
    assert result["n_images"] == 5 and result["n_cases"] == 3
    assert result["per_image"]["dice"]["mean"] == pytest.approx((2 / 3 + 1 + 2 / 5 + 0 + 1) / 5)
    assert result["per_image"]["iou"]["mean"] == pytest.approx((1 / 2 + 1 + 1 / 4 + 0 + 1) / 5)
    # cases: A = (2, 2, 0), B = (1, 1, 3), C = (4, 0, 0)
    assert result["per_case"]["dice"]["mean"] == pytest.approx((2 / 3 + 1 / 3 + 1) / 3)
    assert result["per_case"]["dice"]["median"] == pytest.approx(2 / 3)
    assert result["per_case"]["iou"]["mean"] == pytest.approx((1 / 2 + 1 / 5 + 1) / 3)
    assert result["per_case"]["iou"]["median"] == pytest.approx(1 / 2)
    # pooled: (7, 3, 3)
    assert result["global"]["dice"] == pytest.approx(14 / 20)
    assert result["global"]["iou"] == pytest.approx(7 / 13)


def test_per_case_median_of_an_even_number_of_cases_averages_the_middle_two():
    accumulator = MetricAccumulator({"dice": Dice()})
    accumulator.update_counts(CRAFTED[:4], CRAFTED_CASES[:4])  # A 2/3, B 1/3
    assert accumulator.compute()["per_case"]["dice"]["median"] == pytest.approx(0.5)


def test_per_case_table():
    accumulator = MetricAccumulator({"dice": Dice(), "recall": Recall()})
    accumulator.update_counts(CRAFTED, CRAFTED_CASES)
    table = accumulator.per_case_table()
    assert list(table.columns) == ["case", "n_images", "tp", "fp", "fn", "tn", "dice", "recall"]
    assert table["case"].tolist() == ["A", "B", "C"]
    assert table["n_images"].tolist() == [2, 2, 1]
    assert table[["tp", "fp", "fn", "tn"]].values.tolist() == [[2, 2, 0, 28], [1, 1, 3, 27], [4, 0, 0, 12]]
    assert table["dice"].tolist() == pytest.approx([2 / 3, 1 / 3, 1.0])
    assert table["recall"].tolist() == pytest.approx([1.0, 1 / 4, 1.0])


def test_labels_absent_from_truth_and_prediction_do_not_lift_the_case_and_pooled_means():
    """Five labels declared, two occur: the headline is theirs (nnU-Net leaves the others' NaN out), not 1s."""
    from segkit.labels import Labels

    labels = Labels(("background", "a", "b", "c", "d", "e"), "multiclass")
    accumulator = MetricAccumulator({"dice": Dice()}, labels=labels)
    rows = torch.zeros((3, 5, 4), dtype=torch.int64)
    rows[..., 3] = 100  # true negatives everywhere
    rows[0, 0] = torch.tensor([0, 0, 8, 92])  # case X, label a: missed, dice 0
    rows[0, 1] = torch.tensor([3, 1, 0, 96])  # case X, label b: dice 6/7
    rows[1, 1] = torch.tensor([0, 4, 0, 96])  # case Y, label b: a false positive only, dice 0
    # case Z: nothing anywhere, nothing predicted: every label's empty score 1, as binary data
    accumulator.update_counts(rows, ["X", "Y", "Z"])
    result = accumulator.compute()
    assert result["per_case"]["dice"]["mean"] == pytest.approx(((0 + 6 / 7) / 2 + 0 + 1) / 3)
    assert accumulator.per_case_table()["dice"].tolist() == pytest.approx([3 / 7, 0.0, 1.0])
    assert result["global"]["dice"] == pytest.approx((0 + 6 / 11) / 2)  # pooled a: (0, 0, 8); b: (3, 5, 0)
    assert result["per_image"]["dice"]["mean"] == pytest.approx(((0 + 6 / 7 + 3) / 5 + 4 / 5 + 1) / 3)  # unchanged
    assert result["per_class"]["c"]["per_case"]["dice"]["mean"] == 1.0  # each label alone keeps the binary rule


def test_without_cases_there_is_no_per_case_result():
    accumulator = MetricAccumulator({"dice": Dice()})
    accumulator.update_counts(CRAFTED)
    result = accumulator.compute()
    assert result["n_cases"] is None and "per_case" not in result
    assert accumulator.cases() is None
    with pytest.raises(ValueError, match="case"):
        accumulator.per_case_table()
    with pytest.raises(ValueError, match="case ids"):
        accumulator.update_counts(CRAFTED, CRAFTED_CASES)


def test_per_image_scores_reset_and_empty():
    accumulator = MetricAccumulator({"dice": Dice()})
    accumulator.update_counts(CRAFTED)
    assert accumulator.per_image_scores()["dice"].tolist() == pytest.approx([2 / 3, 1, 2 / 5, 0, 1])
    accumulator.reset()
    assert accumulator.counts().shape == (0, 4)
    result = accumulator.compute()
    assert result["n_images"] == 0
    assert torch.isnan(torch.tensor(result["global"]["dice"]))


def test_states_merge():
    first, second, merged = (MetricAccumulator(METRICS) for _ in range(3))
    first.update_counts(CRAFTED[:2], CRAFTED_CASES[:2])
    second.update_counts(CRAFTED[2:], CRAFTED_CASES[2:])
    for accumulator in (first, second):
        merged.update_counts(*accumulator.state())
    whole = MetricAccumulator(METRICS)
    whole.update_counts(CRAFTED, CRAFTED_CASES)
    assert merged.compute() == whole.compute()
    restored = MetricAccumulator(METRICS)
    restored.load_state(whole.state())
    assert torch.equal(restored.counts(), CRAFTED) and restored.cases() == CRAFTED_CASES


# --- agreement with smp.metrics ----------------------------------------------------------------


def test_agrees_with_smp_metrics():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 1, 16, 16, generator=generator)
    target = (torch.rand(6, 1, 16, 16, generator=generator) > 0.6).float()
    assert (target.flatten(1).sum(1) > 0).all()
    tp, fp, fn, tn = smp.metrics.get_stats(torch.sigmoid(logits), target.long(), mode="binary", threshold=0.5)
    assert confusion_counts(logits, target).tolist() == torch.cat([tp, fp, fn, tn], dim=1).tolist()

    accumulator = MetricAccumulator(METRICS)
    for start in (0, 2, 4):
        accumulator.update(logits[start : start + 2], target[start : start + 2])
    result = accumulator.compute()
    reference = {
        "dice": smp.metrics.f1_score,
        "iou": smp.metrics.iou_score,
        "precision": smp.metrics.precision,
        "recall": smp.metrics.recall,
    }
    for name, function in reference.items():
        assert result["global"][name] == pytest.approx(function(tp, fp, fn, tn, reduction="micro").item()), name
        per_image = function(tp, fp, fn, tn, reduction="micro-imagewise").item()
        assert result["per_image"][name]["mean"] == pytest.approx(per_image), name


# --- counts stay on the device ------------------------------------------------------------------


def test_accumulator_keeps_counts_on_the_device_without_syncing():
    # meta tensors have no data: any .item(), .cpu() or numpy call in update() would fail
    accumulator = MetricAccumulator(METRICS)
    for _ in range(3):
        accumulator.update(torch.randn(2, 1, 8, 8, device="meta"), torch.zeros(2, 1, 8, 8, device="meta"), ["a", "b"])
    assert accumulator.counts().device.type == "meta"
    assert accumulator.counts().shape == (6, 4)
    assert accumulator.cases() == ["a", "b"] * 3


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_accumulator_on_cuda():
    accumulator = MetricAccumulator(METRICS)
    logits = torch.randn(4, 1, 8, 8, device="cuda")
    target = (torch.rand(4, 1, 8, 8, device="cuda") > 0.5).float()
    accumulator.update(logits, target)
    assert accumulator.counts().is_cuda
    cpu = MetricAccumulator(METRICS)
    cpu.update(logits.cpu(), target.cpu())
    assert accumulator.compute() == cpu.compute()


def test_check_metric_rejects_a_zero_score_for_empty_masks():
    with pytest.raises(AssertionError, match="empty mask predicted empty"):
        check_metric(Dice(empty_score=0.0))
