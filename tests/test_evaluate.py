"""segkit evaluate: per-image, per-case and global scores of runs and ensembles."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from clihelp import segkit
from segkit.cli import cli
from segkit.data import SegmentationDataset, build_transform
from segkit.evaluation.evaluate import EvaluationData, build_metric_set, evaluate_predictor
from segkit.inference.predictor import Member, Predictor, resize_images, trained_flips
from segkit.inference.sources import load_predictor
from segkit.components.registry import get_registry


def invoke(*args: str):
    return CliRunner().invoke(cli, ["evaluate", *args, "--quiet"])


def test_cli_json_report_on_the_test_split(trained_run: Path) -> None:
    result = segkit("evaluate", str(trained_run), "--json", "--quiet")
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout)
    for key in ("n_images", "n_cases", "per_image", "per_case", "global", "split", "checkpoint", "threshold",
                "tta", "postprocess", "per_case_csv"):
        assert key in report, key
    splits = pd.read_csv(trained_run / "splits.csv")
    test = splits[splits["split"] == "test"]
    assert report["split"] == "test" and report["checkpoint"] == "best" and report["postprocess"] == "none"
    assert report["n_images"] == len(test) and report["n_cases"] == test["case"].nunique()
    for name in ("dice", "iou", "precision", "recall"):
        assert 0 <= report["per_image"][name]["mean"] <= 1
        assert set(report["per_case"][name]) == {"mean", "median"}
        assert 0 <= report["global"][name] <= 1
    table = pd.read_csv(report["per_case_csv"])
    assert Path(report["per_case_csv"]) == trained_run / "evaluation" / "test-per-case.csv"
    assert sorted(table["case"]) == sorted(test["case"].unique())
    assert {"case", "n_images", "tp", "fp", "fn", "tn", "dice", "recall"} <= set(table.columns)


def test_test_split_holds_none_of_the_training_cases(trained_run: Path) -> None:
    splits = pd.read_csv(trained_run / "splits.csv")
    cases = {name: set(group["case"]) for name, group in splits.groupby("split")}
    assert cases["test"] and cases["train"]
    assert not cases["test"] & cases["train"] and not cases["val"] & cases["train"]


def test_validation_scores_match_the_training_run(trained_run: Path) -> None:
    """image_size 0: evaluating the val split repeats the trainer's validation exactly."""
    result = invoke(str(trained_run), "--split", "val", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    row = next(csv.DictReader((trained_run / "metrics.csv").open()))
    assert report["per_image"]["dice"]["mean"] == pytest.approx(float(row["val_dice"]), abs=1e-5)
    assert report["global"]["dice"] == pytest.approx(float(row["val_dice_global"]), abs=1e-5)
    assert report["per_case"]["dice"]["mean"] == pytest.approx(float(row["val_dice_case"]), abs=1e-5)
    assert "dice" in invoke(str(trained_run), "--split", "val").stdout  # the readable table


class PairsDataset(SegmentationDataset):
    """Hand-made items: image = what the oracle model will predict (0/255), mask = the truth."""

    def __init__(self, pairs: list[tuple[np.ndarray, np.ndarray]], cases: list[str]) -> None:
        self.pairs = pairs
        index = pd.DataFrame({"item": [f"i{k}" for k in range(len(pairs))], "case": cases,
                              "slice": list(range(len(pairs))), "has_lesion": [bool(m.any()) for _, m in pairs]})
        super().__init__(index, in_channels=1)

    def read_raw(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        prediction, truth = self.pairs[i]
        return (prediction.astype(np.uint8) * 255)[:, :, None], truth.astype(np.uint8)


def oracle() -> Predictor:
    """A 'model' whose logits are +20 where the image is bright and -20 elsewhere."""
    member = Member("oracle", "oracle", 0, 1, 0.5, run=lambda x: (x[:, :1] * 2 - 1) * 20)
    return Predictor([member])


def score(dataset: PairsDataset, tta: bool = False, postprocess: str = "none") -> dict:
    predictor = oracle()
    predictor.tta = tta
    data = EvaluationData(dataset, list(range(len(dataset))), "test", "pairs")
    metrics = build_metric_set(get_registry())
    return evaluate_predictor(predictor, data, metrics, postprocess=postprocess, batch_size=2).compute()


def square(size: int, top: int, left: int, side: int) -> np.ndarray:
    mask = np.zeros((size, size), bool)
    mask[top:top + side, left:left + side] = True
    return mask


def test_per_image_per_case_and_global_differ_as_computed_by_hand() -> None:
    empty = np.zeros((8, 8), bool)
    truth_a = square(8, 0, 0, 2)              # 4 px
    spurious = square(8, 5, 5, 1) | square(8, 6, 6, 1)  # 2 px predicted on an empty slice
    truth_b = square(8, 2, 2, 3)              # 9 px
    dataset = PairsDataset([(truth_a, truth_a), (spurious, empty), (empty, truth_b)], ["A", "A", "B"])
    n_b = int(truth_b.sum())
    report = score(dataset)
    # per image: 1 (exact), 0 (false positives on an empty slice), 0 (lesion missed)
    assert report["per_image"]["dice"]["mean"] == pytest.approx(1 / 3)
    # per case: A has tp 4, fp 2 -> 8 / 10; B has tp 0 -> 0
    assert report["per_case"]["dice"]["mean"] == pytest.approx((0.8 + 0.0) / 2)
    assert report["per_case"]["dice"]["median"] == pytest.approx(0.4)
    # global: tp 4, fp 2, fn n_b
    assert report["global"]["dice"] == pytest.approx(8 / (8 + 2 + n_b))
    assert report["global"]["precision"] == pytest.approx(4 / 6)
    assert report["global"]["recall"] == pytest.approx(4 / (4 + n_b))
    assert report["n_images"] == 3 and report["n_cases"] == 2


def test_tta_and_lcc_change_nothing_for_a_perfect_model() -> None:
    truths = [square(16, 3 + k, 4, 5) for k in range(3)] + [np.zeros((16, 16), bool)]
    dataset = PairsDataset([(t, t) for t in truths], ["A", "A", "A", "B"])
    for tta in (False, True):
        for mode in ("none", "lcc"):
            report = score(dataset, tta=tta, postprocess=mode)
            assert report["per_image"]["dice"]["mean"] == 1.0, (tta, mode)
            assert report["global"]["dice"] == 1.0 and report["per_case"]["dice"]["median"] == 1.0


def test_lcc_removes_a_false_positive_away_from_the_lesion() -> None:
    truth = square(16, 2, 2, 5)
    predicted = truth | square(16, 12, 12, 2)
    dataset = PairsDataset([(predicted, truth), (truth, truth)], ["A", "A"])
    assert score(dataset)["global"]["precision"] < 1.0
    assert score(dataset, postprocess="lcc")["global"]["precision"] == 1.0


def test_predictor_resize_is_the_validation_transform() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (37, 29, 3), dtype=np.uint8)
    expected = build_transform("none", 48)(image=image, mask=np.zeros((37, 29), np.uint8))["image"]
    tensor = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255.0
    resized = resize_images(tensor, (48, 48))[0].permute(1, 2, 0).numpy()
    np.testing.assert_array_equal(np.round(resized * 255).astype(np.uint8), expected)


def test_ensemble_of_two_runs_averages_probabilities(trained_run: Path, resized_run: Path) -> None:
    images = torch.rand(2, 3, 40, 24)
    single = [load_predictor(run, device="cpu").probabilities(images) for run in (trained_run, resized_run)]
    both = load_predictor([trained_run, resized_run], device="cpu").probabilities(images)
    assert both.shape == (2, 1, 40, 24)
    torch.testing.assert_close(both, (single[0] + single[1]) / 2)

    result = invoke(str(trained_run), str(resized_run), "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["runs"] == [str(trained_run), str(resized_run)]
    name = Path(report["per_case_csv"]).name
    assert name.startswith("ensemble2-") and name.endswith("-test-per-case.csv")
    assert Path(report["per_case_csv"]).parent == trained_run / "evaluation"


def test_tta_lcc_and_other_datasets_write_their_own_csv(trained_run: Path, tmp_path: Path) -> None:
    result = invoke(str(trained_run), "--tta", "--postprocess", "lcc", "--checkpoint", "last", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["tta"] is True and report["postprocess"] == "lcc"
    assert Path(report["per_case_csv"]).name == "test-last-tta-lcc-per-case.csv"

    # a folder of 40x40 images: scored at the masks' resolution, default split all
    for sub in ("images", "masks"):
        (tmp_path / "data" / sub).mkdir(parents=True)
    rng = np.random.default_rng(1)
    for k in range(3):
        cv2.imwrite(str(tmp_path / "data" / "images" / f"p{k}.png"), rng.integers(0, 256, (40, 40, 3), dtype=np.uint8))
        cv2.imwrite(str(tmp_path / "data" / "masks" / f"p{k}.png"), square(40, 5, 5, 10 + k).astype(np.uint8) * 255)
    result = invoke(str(trained_run), "--dataset", "folder", "--data-root", str(tmp_path / "data"), "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["split"] == "all" and report["n_images"] == 3 and report["dataset"] == "folder"
    table = pd.read_csv(report["per_case_csv"])
    assert (table["tp"] + table["fp"] + table["fn"] + table["tn"] == 1600).all()
    assert Path(report["per_case_csv"]).name.startswith("folder-")

    # the same file names in another folder are other data: their scores go to another file
    shutil.copytree(tmp_path / "data", tmp_path / "copy")
    again = json.loads(invoke(str(trained_run), "--dataset", "folder", "--data-root", str(tmp_path / "copy"),
                              "--json").stdout)
    assert again["per_case_csv"] != report["per_case_csv"] and Path(report["per_case_csv"]).is_file()


def test_bad_runs_and_splits_are_clear_errors(trained_run: Path, tmp_path: Path) -> None:
    result = invoke(str(tmp_path / "nowhere"))
    assert result.exit_code == 2 and "does not exist" in result.output
    result = invoke(str(tmp_path))
    assert result.exit_code == 2 and "not a segkit run directory" in result.output
    result = invoke(str(trained_run), "--split", "tset")
    assert result.exit_code == 2 and "Did you mean 'test'" in result.output

    no_test = tmp_path / "no_test"
    shutil.copytree(trained_run, no_test, ignore=shutil.ignore_patterns("evaluation"))
    splits = pd.read_csv(no_test / "splits.csv")
    splits["split"] = splits["split"].replace("test", "train")
    splits.to_csv(no_test / "splits.csv", index=False)
    result = invoke(str(no_test))
    assert result.exit_code == 2
    assert "has no test split" in result.output and "--split val" in result.output


@pytest.mark.parametrize(("augment", "flips"), [("light", 2), ("heavy", 4), ("none", 1), (None, 4)])
def test_tta_averages_over_the_flips_the_model_was_trained_with(augment: str | None, flips: int) -> None:
    """A 'model' that sees where it is (logits = the row index): each flip it is averaged over shows in the output.
    light trains with horizontal flips only, heavy with both, none with none; unknown training (no config): all four."""

    def rows(x: torch.Tensor) -> torch.Tensor:
        return torch.arange(x.shape[-2], dtype=torch.float32).view(1, 1, -1, 1).expand(x.shape[0], 1, *x.shape[-2:]) - 1.5

    info = {} if augment is None else {"config": {"train": {"augment": augment}}}
    predictor = Predictor([Member("rows", "rows", 0, 1, 0.5, run=rows, info=info)], tta=True)
    got = predictor.probabilities(torch.zeros(1, 1, 4, 4))[0, 0, :, 0]
    up = torch.sigmoid(torch.arange(4.0) - 1.5)
    expected = up if flips < 3 else (up + up.flip(0)) / 2  # vertical flips mirror the rows
    torch.testing.assert_close(got, expected)
    assert len(trained_flips(predictor.members[0])) == flips
