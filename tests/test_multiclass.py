"""Multi-class segmentation: label values in masks, output modes, per-label metrics, and the CLI end to end.

Binary behaviour is pinned by the rest of the suite, which runs unchanged; here, what C > 2 labels add.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch

from clihelp import segkit
from click.testing import CliRunner
from segkit.cli import cli
from segkit.errors import ConfigError, DataError
from segkit.labels import Labels, label_names, resolve_labels
from segkit.scoring.metrics import MetricAccumulator, label_counts
from segkit_builtins.datasets.synthetic import SyntheticDataset
from segkit_builtins.metrics.overlap import Dice, IoU

NAMES = ("background", "core", "oedema")
TINY = ["--set", "dataset.count=48", "--set", "dataset.size=32", "--set", "dataset.slices_per_case=4",
        "--set", "model.width=8", "--batch-size", "8", "--augment", "none"]


# --- labels and modes ------------------------------------------------------------------

def test_each_mode_has_its_output_channels_and_loss_target() -> None:
    masks = torch.tensor([[[[0.0, 1.0], [2.0, 2.0]]]])  # (1, 1, 2, 2) label values
    assert Labels().out_channels == 1 and Labels().foreground == ("lesion",)
    multiclass, multilabel = Labels(NAMES, "multiclass"), Labels(NAMES, "multilabel")
    assert (multiclass.out_channels, multilabel.out_channels) == (3, 2)
    assert torch.equal(multiclass.loss_target(masks), masks)  # label values, as the multiclass losses take
    assert multilabel.loss_target(masks).tolist() == [[[[0.0, 1.0], [0.0, 0.0]], [[0.0, 0.0], [1.0, 1.0]]]]
    assert multiclass.truth_masks(masks).tolist() == [[[[False, True], [False, False]], [[False, False], [True, True]]]]


def test_class_masks_follow_softmax_argmax_or_per_label_sigmoid() -> None:
    logits = torch.tensor([[[[3.0, 0.0]], [[0.0, 1.0]], [[0.0, 2.0]]]])  # (1, 3, 1, 2)
    # pixel 0: background wins; pixel 1: label 2 (logit 2) beats label 1 (logit 1)
    assert Labels(NAMES, "multiclass").class_masks(logits).tolist() == [[[[False, False]], [[False, True]]]]
    # multilabel: channels 1 and 2 are labels 1 and 2 here (channel 0 is label 1); sigmoid(0) = 0.5 counts
    two = logits[:, 1:]
    assert Labels(NAMES, "multilabel").class_masks(two).tolist() == [[[[True, True]], [[True, True]]]]
    assert Labels(NAMES, "multilabel").class_masks(two, threshold=0.6).tolist() == [[[[False, True]], [[False, True]]]]
    overlapping = torch.tensor([[[[True, False]], [[True, True]]]])
    assert Labels(NAMES, "multilabel").label_map(overlapping).tolist() == [[[2, 2]]]  # the higher label wins


def test_auto_mode_and_the_errors_for_impossible_ones() -> None:
    assert resolve_labels(SyntheticDataset(count=4, size=16)).mode == "binary"
    assert resolve_labels(SyntheticDataset(count=4, size=16, classes=3)).mode == "multiclass"
    assert resolve_labels(SyntheticDataset(count=4, size=16, classes=3), "multilabel").out_channels == 2
    with pytest.raises(ConfigError, match="mode 'binary' predicts one label.*multiclass"):
        Labels(NAMES, "binary")
    assert Labels.from_dict(None) == Labels()  # checkpoints from before multi-class are binary


def test_label_names_from_a_list_or_a_table() -> None:
    assert label_names(3, None, "x") == ("background", "class_1", "class_2")
    assert label_names(3, {"1": "core", "2": "oedema"}, "x") == NAMES
    assert label_names(3, list(NAMES), "x") == NAMES
    with pytest.raises(ConfigError, match="lists 2 names but classes = 3"):
        label_names(3, ["a", "b"], "x")
    with pytest.raises(ConfigError, match="label value '5'.*0..2"):
        label_names(3, {"5": "x"}, "x")


# --- data -------------------------------------------------------------------------------

def _write_folder(root: Path, masks: list[np.ndarray]) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i, mask in enumerate(masks):
        image = np.full((*mask.shape, 3), 60, np.uint8)
        image[mask > 0] = 180
        cv2.imwrite(str(root / "images" / f"p1_{i}.png"), image)
        cv2.imwrite(str(root / "masks" / f"p1_{i}.png"), mask)
    return root


def test_a_folder_of_label_masks_keeps_its_label_values(tmp_path: Path) -> None:
    from segkit_builtins.datasets.folder import FolderDataset

    mask = np.zeros((8, 8), np.uint8)
    mask[1:3, 1:3], mask[5:7, 4:7] = 1, 2
    root = _write_folder(tmp_path / "data", [mask, np.zeros((8, 8), np.uint8)])
    dataset = FolderDataset(str(root), classes=3, labels={"1": "core", "2": "oedema"})
    assert dataset.labels == NAMES
    assert dataset.index["has_lesion"].tolist() == [True, False]
    _, target = dataset[0]
    assert target.shape == (1, 8, 8) and sorted(target.unique().tolist()) == [0.0, 1.0, 2.0]
    with pytest.raises(DataError, match=r"mask values must be 0/1 or 0/255.*dataset.classes=3"):
        FolderDataset(str(root))[0]  # read as binary, the label 2 is refused with the fix named


def test_a_label_value_beyond_classes_is_a_clear_error(tmp_path: Path) -> None:
    from segkit_builtins.datasets.folder import FolderDataset

    mask = np.zeros((8, 8), np.uint8)
    mask[2:4, 2:4] = 3
    root = _write_folder(tmp_path / "data", [mask])
    with pytest.raises(DataError, match=r"label values 0..2 \(classes = 3\), found 0, 3"):
        FolderDataset(str(root), classes=3)[0]


def test_synthetic_classes_give_lesion_types_and_leave_the_binary_pixels_alone() -> None:
    binary, typed = SyntheticDataset(count=24, size=32), SyntheticDataset(count=24, size=32, classes=3)
    assert typed.labels == ("background", "non_enhancing", "enhancing")
    values = set()
    for i in range(24):
        (image, mask), (typed_image, typed_mask) = binary.read(i), typed.read(i)
        assert np.array_equal(mask > 0, typed_mask > 0)  # the same lesions, now with a type
        values |= set(np.unique(typed_mask).tolist())
    assert values == {0, 1, 2}
    default = SyntheticDataset(count=24, size=32, classes=2)
    assert all(np.array_equal(default.read(i)[0], binary.read(i)[0]) for i in range(24))
    with pytest.raises(ConfigError, match="classes must be 2 .*3 or 4"):
        SyntheticDataset(classes=5)


# --- metrics ----------------------------------------------------------------------------

def test_per_label_counts_scores_and_the_foreground_mean_by_hand() -> None:
    # two images of case a, one of case b; labels core (1) and oedema (2)
    truth = torch.zeros(3, 1, 4, 4)
    truth[0, 0, 0, :2] = 1  # core: 2 pixels
    truth[0, 0, 3, :] = 2   # oedema: 4 pixels
    truth[2, 0, 1, 1] = 1   # image 2: core 1 pixel, no oedema
    predicted = torch.zeros(3, 2, 4, 4, dtype=torch.bool)
    predicted[0, 0, 0, :1] = True       # core: tp 1, fn 1
    predicted[0, 1, 3, :] = True        # oedema: tp 4
    predicted[1, 1, 0, 0] = True        # image 1 (empty truth): oedema fp 1
    predicted[2, 0, 1, 1] = True        # core: tp 1
    labels = Labels(NAMES, "multiclass")
    counts = label_counts(predicted, labels.truth_masks(truth))
    assert counts[0].tolist() == [[1, 0, 1, 14], [4, 0, 0, 12]]
    accumulator = MetricAccumulator({"dice": Dice(), "iou": IoU()}, labels=labels)
    accumulator.update_counts(counts, ["a", "a", "b"])
    report = accumulator.compute()
    # per image, core: 2/3, 1 (empty, predicted empty), 1 -> 8/9; oedema: 1, 0 (fp on empty), 1 (empty) -> 2/3
    assert report["per_class"]["core"]["per_image"]["dice"]["mean"] == pytest.approx(8 / 9)
    assert report["per_class"]["oedema"]["per_image"]["dice"]["mean"] == pytest.approx(2 / 3)
    assert report["per_image"]["dice"]["mean"] == pytest.approx((8 / 9 + 2 / 3) / 2)
    # per case: a: core 2/3, oedema 2*4/(8+1) = 8/9; b: core 1, oedema empty -> 1
    assert report["per_class"]["oedema"]["per_case"]["dice"]["mean"] == pytest.approx((8 / 9 + 1) / 2)
    assert report["per_case"]["dice"]["mean"] == pytest.approx(((2 / 3 + 8 / 9) / 2 + 1) / 2)
    # pooled: core tp 2 fn 1 -> 4/5; oedema tp 4 fp 1 -> 8/9
    assert report["global"]["dice"] == pytest.approx((4 / 5 + 8 / 9) / 2)
    table = accumulator.per_case_table().set_index("case")
    assert table.loc["a", "dice_core"] == pytest.approx(2 / 3) and table.loc["a", "tp"] == 5
    assert table.loc["b", "dice"] == pytest.approx(1.0)


def test_an_accumulator_refuses_counts_without_a_row_per_label() -> None:
    accumulator = MetricAccumulator({"dice": Dice()}, labels=Labels(NAMES, "multiclass"))
    with pytest.raises(ValueError, match=r"\(N, K, 4\)"):
        accumulator.update_counts(torch.zeros(2, 4, dtype=torch.int64))


# --- assembling a run ---------------------------------------------------------------------

def run_cli(*args: str):
    """``segkit ARGS`` in this process (the run fixture below uses a real subprocess)."""
    return CliRunner().invoke(cli, list(args))


def test_a_binary_loss_on_several_labels_is_refused_with_the_losses_that_fit(tmp_path: Path) -> None:
    result = run_cli("run", *TINY, "--set", "dataset.classes=3", "--loss", "bce_dice", "--epochs", "1",
                     "--out", str(tmp_path / "run"))
    assert result.exit_code == 2
    assert "loss 'bce_dice' is binary only" in result.output and "--loss ce_dice" in result.output
    assert not (tmp_path / "run" / "metrics.csv").exists()


@pytest.fixture(scope="module")
def multiclass_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("multiclass") / "run"
    result = segkit("run", *TINY, "--set", "dataset.classes=3", "--loss", "ce_dice", "--epochs", "1",
                    "--out", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def test_a_multiclass_run_records_its_mode_and_reports_each_label(multiclass_run: Path) -> None:
    config = tomllib.loads((multiclass_run / "config.toml").read_text())
    assert config["task"]["mode"] == "multiclass"
    assert config["model"]["classes"] == 3 and config["loss"]["mode"] == "multiclass"
    columns = pd.read_csv(multiclass_run / "metrics.csv").columns
    assert {"val_dice_case", "val_dice_case_non_enhancing", "val_dice_case_enhancing"} <= set(columns)
    payload = torch.load(multiclass_run / "checkpoints" / "best.pt", weights_only=False)
    assert payload["preprocessing"]["labels"] == {"names": ["background", "non_enhancing", "enhancing"],
                                                  "mode": "multiclass"}


def test_evaluate_reports_each_label_and_the_boundary_metrics(multiclass_run: Path) -> None:
    result = run_cli("evaluate", str(multiclass_run), "--split", "val", "--json", "--quiet")
    assert result.exit_code == 0, result.output[-3000:]
    report = json.loads(result.stdout)
    assert set(report["per_class"]) == {"non_enhancing", "enhancing"}
    assert set(report["surface"]["per_class"]) == {"non_enhancing", "enhancing"}
    assert report["surface"]["units"] == "pixels" and report["surface"]["tolerance"] == 1.0
    table = pd.read_csv(report["per_case_csv"])
    # a case's score is the mean over the labels in its truth or prediction (absent from both: left out)
    labels = ["non_enhancing", "enhancing"]
    present = pd.DataFrame({k: table[[f"tp_{k}", f"fp_{k}", f"fn_{k}"]].sum(axis=1) > 0 for k in labels})
    dice = table[[f"dice_{k}" for k in labels]].set_axis(labels, axis=1)
    expected = dice.where(present).mean(axis=1).fillna(dice.mean(axis=1))
    assert report["per_case"]["dice"]["mean"] == pytest.approx(expected.mean())
    assert table["dice"].tolist() == pytest.approx(expected.tolist())
    assert {"dice_non_enhancing", "hd95", "hd95_enhancing", "surface_dice"} <= set(table.columns)
    assert table["case"].nunique() == report["n_cases"]


def test_predict_writes_label_maps_probabilities_per_label_and_a_legend(multiclass_run: Path,
                                                                     tmp_path: Path) -> None:
    dataset = SyntheticDataset(count=8, size=32, classes=3)
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    for i in range(4):
        cv2.imwrite(str(inputs / f"case_{i}.png"), dataset.read(i)[0][:, :, ::-1])
    out = tmp_path / "out"
    result = run_cli("predict", str(multiclass_run), str(inputs), "--out", str(out), "--overlay", "--save-probs")
    assert result.exit_code == 0, result.output[-3000:]
    label_map = cv2.imread(str(out / "case_0.png"), cv2.IMREAD_UNCHANGED)
    assert label_map.shape == (32, 32) and set(np.unique(label_map).tolist()) <= {0, 1, 2}
    assert (out / "case_0_prob_non_enhancing.png").is_file() and (out / "case_0_prob_enhancing.png").is_file()
    overlay = cv2.imread(str(out / "case_0_overlay.png"))
    assert overlay.shape[0] > 32 and overlay.shape[1] == 32  # the image above its legend

    onnx = pytest.importorskip("onnxruntime") and tmp_path / "model.onnx"
    exported = run_cli("export", str(multiclass_run), "--out", str(onnx))
    assert exported.exit_code == 0, exported.output[-3000:]
    assert "softmax over the channels" in exported.stdout
    again = tmp_path / "again"
    result = run_cli("predict", str(onnx), str(inputs), "--out", str(again))
    assert result.exit_code == 0, result.output[-3000:]
    for i in range(4):
        assert np.array_equal(cv2.imread(str(again / f"case_{i}.png"), cv2.IMREAD_UNCHANGED),
                              cv2.imread(str(out / f"case_{i}.png"), cv2.IMREAD_UNCHANGED))


def test_a_multilabel_run_on_regions_trains_a_sigmoid_per_region(tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = run_cli("run", *TINY, "--set", "dataset.classes=4", "--set", "task.regions={lesion=[1,2,3],enhancing=[2,3]}",
                     "--loss", "ce_dice", "--epochs", "1", "--out", str(out), "--quiet")
    assert result.exit_code == 0, result.output[-3000:]
    config = tomllib.loads((out / "config.toml").read_text())
    assert (config["task"]["mode"], config["model"]["classes"], config["loss"]["mode"]) == ("multilabel", 2, "multilabel")
    assert {"val_dice_case_lesion", "val_dice_case_enhancing"} <= set(pd.read_csv(out / "metrics.csv").columns)


def test_an_ensemble_export_of_softmax_models_averages_their_probabilities() -> None:
    from segkit.inference.export import EnsembleExport

    torch.manual_seed(0)
    models = [torch.nn.Conv2d(3, 3, 1) for _ in range(2)]
    ensemble = EnsembleExport(models, multiclass=True).eval()
    x = torch.rand(1, 3, 8, 8)
    expected = torch.stack([torch.softmax(m(x), dim=1) for m in models]).mean(dim=0)
    assert torch.allclose(torch.softmax(ensemble(x), dim=1), expected, atol=1e-6)


def test_an_ensemble_of_models_with_different_labels_is_refused() -> None:
    from segkit.errors import CheckpointError
    from segkit.inference.predictor import Member, Predictor

    def member(labels: Labels) -> Member:
        return Member("m", str(labels.mode), 0, 3, 0.5, lambda x: x, labels=labels)

    with pytest.raises(CheckpointError, match="same labels in the same mode"):
        Predictor([member(Labels()), member(Labels(NAMES, "multiclass"))])


def test_surface_scores_of_a_case_stack_its_slices_and_score_one_slice_in_2d() -> None:
    from segkit.evaluation.surface_report import SurfaceScores

    square = np.zeros((1, 8, 8), bool)
    square[0, 2:5, 2:5] = True
    shifted = np.roll(square, 1, axis=2)
    scores = SurfaceScores(["lesion"], tolerance=1.0)
    scores.add("two", [(square, square), (square, shifted)])
    scores.add("one", [(square, shifted)])
    table = scores.table().set_index("case")
    # one slice: the 3x3 outlines are one column apart; every border pixel is within 1 -> surface Dice 1
    assert table.loc["one", "surface_dice"] == 1.0 and table.loc["one", "hd95"] == pytest.approx(1.0)
    assert 0 < table.loc["two", "assd"] < 1  # the identical slice matches exactly, the shifted one by 1
    summary = scores.summary()
    assert summary["hd95"]["mean"] == pytest.approx(table["hd95"].mean())


def test_per_label_dice_and_iou_agree_with_monai_on_random_label_maps() -> None:
    """MONAI (a test-only peer) scores each foreground label of each image the same, empty labels included."""
    monai_metrics = pytest.importorskip("monai.metrics")
    generator = torch.Generator().manual_seed(3)
    truth = torch.randint(0, 4, (6, 1, 24, 24), generator=generator).float()
    truth[0] = 0  # an image with no foreground at all
    truth[1][truth[1] == 3] = 0  # one label absent from an image
    predicted_values = torch.randint(0, 4, (6, 24, 24), generator=generator)
    predicted_values[0] = 0  # predicted empty where it is empty: 1 by both conventions
    labels = Labels(("background", "a", "b", "c"), "multiclass")
    ours = label_counts(torch.stack([predicted_values == v for v in (1, 2, 3)], dim=1), labels.truth_masks(truth))
    dice, iou = Dice().score(*ours.unbind(-1)), IoU().score(*ours.unbind(-1))
    one_hot_pred = torch.nn.functional.one_hot(predicted_values, 4).permute(0, 3, 1, 2).float()
    one_hot_truth = torch.nn.functional.one_hot(truth[:, 0].long(), 4).permute(0, 3, 1, 2).float()
    theirs_dice = monai_metrics.compute_dice(one_hot_pred, one_hot_truth, include_background=False, ignore_empty=False)
    theirs_iou = monai_metrics.compute_iou(one_hot_pred, one_hot_truth, include_background=False, ignore_empty=False)
    assert torch.allclose(dice.float(), theirs_dice.float(), atol=1e-6)
    assert torch.allclose(iou.float(), theirs_iou.float(), atol=1e-6)


def test_inspect_names_each_label_and_counts_its_slices() -> None:
    from segkit.data.inspect import summarize

    dataset = SyntheticDataset(count=24, size=32, classes=3)
    summary = summarize(dataset)
    assert summary["labels"] == ["background", "non_enhancing", "enhancing"]
    holding = {name: sum(int((dataset.read(i)[1] == value).any()) for i in range(24))
               for value, name in ((1, "non_enhancing"), (2, "enhancing"))}
    assert summary["label_slices"] == holding and sum(holding.values()) >= 1


def test_a_dataset_spacing_puts_boundary_distances_in_its_units(tmp_path: Path) -> None:
    from segkit.evaluation.surface_report import SurfaceScores, dataset_spacing
    from segkit_builtins.datasets.folder import FolderDataset

    mask = np.zeros((8, 8), np.uint8)
    mask[2:5, 2:5] = 1
    root = _write_folder(tmp_path / "data", [mask])
    assert dataset_spacing(FolderDataset(str(root))) is None
    dataset = FolderDataset(str(root), spacing=[3.0, 0.5, 0.5])
    assert dataset_spacing(dataset) == (3.0, 0.5, 0.5)
    square = np.zeros((1, 8, 8), bool)
    square[0, 2:5, 2:5] = True
    shifted = np.roll(square, 1, axis=2)
    scores = SurfaceScores(["lesion"], tolerance=0.5, spacing=dataset_spacing(dataset))
    scores.add("one", [(square, shifted)])  # one slice: scored in 2D with the row and column spacing
    assert scores.table()["hd95"].iloc[0] == pytest.approx(0.5) and scores.summary()["units"] == "spacing"
    with pytest.raises(ConfigError, match=r"spacing must be .*\[slice, row, column\]"):
        FolderDataset(str(root), spacing=[0.5, -1.0])


def test_evaluating_on_another_dataset_reads_it_with_the_models_labels(multiclass_run: Path,
                                                                      tmp_path: Path) -> None:
    from segkit.evaluation.evaluate import evaluate_runs

    mask = np.zeros((16, 16), np.uint8)
    mask[2:6, 2:6], mask[9:14, 8:14] = 1, 2
    root = _write_folder(tmp_path / "data", [mask, np.zeros((16, 16), np.uint8)])
    # a folder read as binary would refuse the label 2: the model's three label values are passed on
    report = evaluate_runs([str(multiclass_run)], dataset_name="folder", data_root=str(root), write_csv=False)
    assert report["split"] == "all" and report["n_images"] == 2
    assert set(report["per_class"]) == {"non_enhancing", "enhancing"}


def test_regions_turn_one_label_map_into_overlapping_outputs() -> None:
    from segkit.labels import check_regions

    labels = resolve_labels(SyntheticDataset(count=4, size=16, classes=4),
                            regions={"whole": [1, 2, 3], "enhancing": [2, 3]})
    assert (labels.mode, labels.out_channels, labels.foreground) == ("multilabel", 2, ("whole", "enhancing"))
    masks = torch.tensor([[[[0.0, 1.0, 2.0, 3.0]]]])
    assert labels.truth_masks(masks).tolist() == [[[[False, True, True, True]], [[False, False, True, True]]]]
    assert labels.loss_target(masks).shape == (1, 2, 1, 4)
    assert Labels.from_dict(labels.to_dict()) == labels  # what a checkpoint records
    with pytest.raises(ConfigError, match=r"region 'x' holds the label values \[4\]"):
        resolve_labels(SyntheticDataset(count=4, size=16, classes=3), regions={"x": [4]})
    with pytest.raises(ConfigError, match="need mode 'multilabel'"):
        resolve_labels(SyntheticDataset(count=4, size=16, classes=3), "multiclass", {"x": [1]})
    with pytest.raises(ConfigError, match="table from a region's name"):
        check_regions({"x": "1, 2"})


def test_a_torchscript_export_has_a_channel_per_label_and_names_them(multiclass_run: Path, tmp_path: Path) -> None:
    import warnings

    result = run_cli("export", str(multiclass_run), "--format", "torchscript", "--out", str(tmp_path / "m.ts"))
    assert result.exit_code == 0, result.output
    extra = {"segkit.json": ""}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated in torch 2.14, still works
        scripted = torch.jit.load(str(tmp_path / "m.ts"), _extra_files=extra)
    metadata = json.loads(extra["segkit.json"])
    assert json.loads(metadata["labels"]) == ["background", "non_enhancing", "enhancing"]
    assert metadata["mode"] == "multiclass" and "softmax" in metadata["output"]
    assert scripted(torch.rand(1, 3, 32, 32)).shape == (1, 3, 32, 32)
