"""segkit cv end to end on tiny synthetic data: folds, out-of-fold report, resumption, the folds as one ensemble."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from clihelp import segkit, segkit_here
from segkit.evaluation.cv import VARIANTS, bootstrap_interval, choose_variant, cross_fitted_choice

#: 48 synthetic 32x32 slices in 12 cases of 4; the tutorial U-Net at width 8, one epoch per fold.
TINY_CV = ["--set", "dataset.count=48", "--set", "dataset.size=32", "--set", "dataset.slices_per_case=4",
           "--set", "model.width=8", "--batch-size", "8", "--epochs", "1", "--augment", "none", "--quiet"]
FOLDS = 3


@pytest.fixture(scope="module")
def cv_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cv") / "cv"
    result = segkit("cv", "--folds", str(FOLDS), *TINY_CV, "--out", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "out-of-fold scores of 12 cases" in result.stdout
    return out


def test_every_case_is_scored_once_by_the_fold_that_never_saw_it(cv_dir: Path) -> None:
    report = json.loads((cv_dir / "cv-report.json").read_text())
    cases = [row["case"] for row in report["per_case"]]
    assert len(cases) == len(set(cases)) == 12 == report["n_cases"]
    assert report["n_images"] == 48
    for k in range(FOLDS):
        splits = pd.read_csv(cv_dir / f"fold-{k}" / "splits.csv")
        validated = set(splits.loc[splits["split"] == "val", "case"])
        assert validated == {row["case"] for row in report["per_case"] if row["fold"] == k}
        assert "test" not in set(splits["split"])  # cross-validation holds out no test split
        trained = set(splits.loc[splits["split"] == "train", "case"])
        assert not trained & validated


def test_report_summarises_each_metric_with_a_bootstrap_interval(cv_dir: Path) -> None:
    report = json.loads((cv_dir / "cv-report.json").read_text())
    table = pd.read_csv(cv_dir / "cv-per-case.csv")
    assert len(table) == 12 and {"case", "fold", "dice", "dice_plain", "dice_tta", "dice_lcc"} <= set(table.columns)
    for name in ("dice", "iou", "precision", "recall"):
        summary = report["summary"][name]
        # the per-case file holds 6 significant digits, the report the exact values
        assert summary["mean"] == pytest.approx(table[name].mean(), rel=1e-5)
        assert summary["median"] == pytest.approx(table[name].median(), rel=1e-5)
        low, high = summary["ci95"]
        assert low <= summary["mean"] <= high
    assert report["chosen"]["variant"] == choose_variant({k: v["mean"] for k, v in report["variants"].items()})
    assert json.loads((cv_dir / "cv.json").read_text())["chosen"] == report["chosen"]


def test_the_headline_takes_each_folds_variant_from_the_other_folds(cv_dir: Path) -> None:
    report = json.loads((cv_dir / "cv-report.json").read_text())
    table = pd.read_csv(cv_dir / "cv-per-case.csv")
    per_fold = report["selection"]["per_fold"]
    assert len(per_fold) == FOLDS
    for k in range(FOLDS):
        others = table[table["fold"] != k]
        assert per_fold[k] == choose_variant({v: others[f"dice_{v}"].mean() for v, _t, _p in VARIANTS})
        mine = table[table["fold"] == k]
        assert (mine["variant"] == per_fold[k]).all()
        np.testing.assert_allclose(mine["dice"], mine[f"dice_{per_fold[k]}"], rtol=1e-5)
    assert report["summary"]["dice"]["mean"] == pytest.approx(table["dice"].mean())


def test_nested_choice_does_not_let_a_case_pick_its_own_variant() -> None:
    # two folds of two cases; "tta" is best over all four cases only thanks to fold 1's cases,
    # and "lcc" only thanks to fold 0's, so each fold gets the variant the other fold favours
    dice = {"plain": [0.5, 0.5, 0.5, 0.5], "lcc": [0.9, 0.9, 0.5, 0.5],
            "tta": [0.5, 0.5, 0.95, 0.95], "tta+lcc": [0.5, 0.5, 0.5, 0.5]}
    tables = {name: pd.DataFrame({"case": list("abcd"), "fold": [0, 0, 1, 1], "dice": values, "iou": values})
              for name, values in dice.items()}
    assert choose_variant({name: float(np.mean(v)) for name, v in dice.items()}) == "tta"
    table, per_fold = cross_fitted_choice(tables, 2)
    assert per_fold == ["tta", "lcc"]
    assert table["case"].tolist() == list("abcd") and table["variant"].tolist() == ["tta", "tta", "lcc", "lcc"]
    assert table["dice"].tolist() == [0.5, 0.5, 0.5, 0.5]  # the best-of-four on the same cases claimed 0.725


def test_the_printed_report_gives_the_nested_headline_and_the_plain_score(cv_dir: Path) -> None:
    from segkit.evaluation.cv import format_cv_report

    report = json.loads((cv_dir / "cv-report.json").read_text())
    lines = format_cv_report(report).splitlines()
    headline, plain = lines[1], next(line for line in lines if line.strip().startswith("plain"))
    assert headline.strip().startswith("headline") and f"{report['summary']['dice']['mean']:.4f}" in headline
    assert "chosen on the other folds" in headline
    assert f"{report['variants']['plain']['mean']:.4f}" in plain
    assert any("flatter" in line for line in lines)


def test_scoring_prints_its_progress_in_a_log(cv_dir: Path) -> None:
    args = ("cv", "--folds", str(FOLDS), *[a for a in TINY_CV if a != "--quiet"], "--out", str(cv_dir))
    result = segkit(*args, env={"SEGKIT_PROGRESS_INTERVAL": "0"})
    assert result.returncode == 0, result.stderr[-3000:]
    for k in range(1, FOLDS + 1):
        for name, _tta, _post in VARIANTS:
            assert f"scoring fold {k}/{FOLDS} {name}: 16/16 images (100%)" in result.stderr, result.stderr[-3000:]
    assert "scoring fold 2/3 tta: 9/16 images" in result.stderr


def test_rerunning_the_command_continues_instead_of_retraining(cv_dir: Path) -> None:
    before = (cv_dir / "fold-0" / "metrics.csv").read_text()
    result = segkit("cv", "--folds", str(FOLDS), *TINY_CV, "--out", str(cv_dir))
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stderr.count("already trained") == FOLDS
    assert (cv_dir / "fold-0" / "metrics.csv").read_text() == before


def test_other_settings_or_fold_counts_are_refused(cv_dir: Path) -> None:
    other_folds = segkit_here("cv", "--folds", "4", *TINY_CV, "--out", str(cv_dir))
    assert other_folds.returncode == 2 and "3-fold cross-validation" in other_folds.stderr
    other_lr = segkit_here("cv", "--folds", str(FOLDS), *TINY_CV, "--lr", "0.5", "--out", str(cv_dir))
    assert other_lr.returncode == 2 and "other settings" in other_lr.stderr
    assert "Traceback" not in other_folds.stderr + other_lr.stderr


def test_folds_trained_by_parallel_processes_score_like_one_command(cv_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "parallel"  # fold 0 as the sequential command trained it; folds 1 and 2 trained at once
    shutil.copytree(cv_dir, out, ignore=shutil.ignore_patterns("fold-1", "fold-2", "cv-report.json", "cv-per-case.csv"))
    command = [sys.executable, "-m", "segkit", "cv", "--folds", str(FOLDS), *TINY_CV, "--out", str(out)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    processes = [subprocess.Popen([*command, "--fold", str(k)], env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for k in range(1, FOLDS)]
    for process in processes:
        _stdout, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr[-3000:]
        assert "folds are trained" in stderr and "Traceback" not in stderr
    assert not (out / "cv-report.json").exists()  # --fold trains and stops
    scored = segkit(*command[3:])
    assert scored.returncode == 0, scored.stderr[-3000:]
    assert scored.stderr.count("already trained") == FOLDS
    mine = pd.read_csv(out / "cv-per-case.csv").sort_values("case").reset_index(drop=True)
    reference = pd.read_csv(cv_dir / "cv-per-case.csv").sort_values("case").reset_index(drop=True)
    pd.testing.assert_frame_equal(mine, reference)  # same folds, same seed: the same out-of-fold scores
    scored_info = (out / "cv.json").read_text()
    again = segkit(*command[3:], "--fold", "0")  # a finished fold, asked for again: the scored state stays
    assert again.returncode == 0 and "3 of 3 folds are trained" in again.stderr, again.stderr[-3000:]
    assert (out / "cv.json").read_text() == scored_info


def test_a_fold_outside_the_folds_is_refused(tmp_path: Path) -> None:
    result = segkit_here("cv", "--folds", str(FOLDS), *TINY_CV, "--fold", "3", "--out", str(tmp_path / "cv"))
    assert result.returncode == 2 and "--fold 3 is not a fold of a 3-fold" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "cv").exists()


def test_a_fold_killed_between_its_last_checkpoint_and_its_summary_resumes_and_completes(
        cv_dir: Path, tmp_path: Path) -> None:
    """What SIGKILL leaves there (tests/test_killed_runs.py kills a run at that moment): the fold's metrics and
    checkpoints, no summary.json, figures or report; cv.json still 'training'. This once left the
    cross-validation stuck: the fold refused to resume ("already finished"), export and predict said rerun cv."""
    from segkit.errors import CheckpointError
    from segkit.evaluation.cv import expand_sources

    out = tmp_path / "cv"
    shutil.copytree(cv_dir, out, ignore=shutil.ignore_patterns("cv-report.json", "cv-per-case.csv"))
    fold = out / "fold-1"
    reference = (fold / "metrics.csv").read_text()
    for name in ("summary.json", "report.html", "curves.png", "predictions.png", "cases.png"):
        (fold / name).unlink(missing_ok=True)
    shutil.rmtree(fold / "evaluation", ignore_errors=True)
    info = json.loads((out / "cv.json").read_text())
    info["status"] = "training"
    info.pop("chosen", None)
    (out / "cv.json").write_text(json.dumps(info))
    with pytest.raises(CheckpointError, match="Finish it with the same 'segkit cv"):
        expand_sources([out])  # what export, predict and evaluate say

    again = segkit("cv", "--folds", str(FOLDS), *TINY_CV, "--out", str(out))
    assert again.returncode == 0, again.stderr[-3000:]
    assert "fold 2/3: resuming" in again.stderr and again.stderr.count("already trained") == FOLDS - 1
    assert (fold / "metrics.csv").read_text() == reference  # nothing trained again
    assert (fold / "summary.json").is_file() and (fold / "report.html").is_file()
    assert json.loads((out / "cv.json").read_text())["status"] == "done"
    assert expand_sources([out])[0] == [str(out / f"fold-{k}") for k in range(FOLDS)]
    assert (out / "cv-report.json").is_file()


def test_the_folds_act_as_one_ensemble_in_evaluate_and_predict(cv_dir: Path, tmp_path: Path) -> None:
    own = segkit_here("evaluate", str(cv_dir))
    assert own.returncode == 2 and "cv-report.json" in own.stderr and "Traceback" not in own.stderr

    # its own data read under another name is still its own data: the fold models trained on those cases
    before = sorted(p.name for p in (cv_dir / "fold-0").rglob("*"))
    again = segkit_here("evaluate", str(cv_dir), "--dataset", "synthetic")
    assert again.returncode == 2 and "Traceback" not in again.stderr
    assert "its models trained on cases of this data" in again.stderr and "nothing was written" in again.stderr
    assert sorted(p.name for p in (cv_dir / "fold-0").rglob("*")) == before

    import cv2

    new = tmp_path / "new"  # cases none of the fold models saw
    for sub in ("images", "masks"):
        (new / sub).mkdir(parents=True)
    rng = np.random.default_rng(3)
    for i in range(4):
        cv2.imwrite(str(new / "images" / f"new_{i}.png"), rng.integers(0, 255, (32, 32, 3), dtype=np.uint8))
        mask = np.zeros((32, 32), np.uint8)
        mask[8:16 + i, 8:20] = 255
        cv2.imwrite(str(new / "masks" / f"new_{i}.png"), mask)
    result = segkit("evaluate", str(cv_dir), "--json", "--dataset", "folder", "--data-root", str(new))
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    assert report["trained_on"] == []
    assert len(report["checkpoints"]) == FOLDS and all(c.endswith("last.pt") for c in report["checkpoints"])
    chosen = json.loads((cv_dir / "cv.json").read_text())["chosen"]
    assert report["tta"] == chosen["tta"] and report["postprocess"] == chosen["postprocess"]
    forced = json.loads(segkit_here("evaluate", str(cv_dir), "--json", "--dataset", "folder", "--data-root", str(new),
                                    "--no-tta", "--postprocess", "none").stdout)
    assert forced["tta"] is False and forced["postprocess"] == "none"

    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        cv2.imwrite(str(images / f"scan_{i}.png"), rng.integers(0, 255, (32, 32, 3), dtype=np.uint8))
    predicted = segkit("predict", str(cv_dir), str(images), "--out", str(tmp_path / "masks"), "--quiet")
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    assert sorted(p.name for p in (tmp_path / "masks").iterdir()) == ["scan_0.png", "scan_1.png", "scan_2.png"]


def test_bootstrap_interval_brackets_the_mean_and_narrows_with_more_cases() -> None:
    rng = np.random.default_rng(1)
    few, many = rng.uniform(0, 1, 10), rng.uniform(0, 1, 1000)
    low, high = bootstrap_interval(few)
    assert low < few.mean() < high
    low_many, high_many = bootstrap_interval(many)
    assert high_many - low_many < high - low
    assert all(math.isnan(v) for v in bootstrap_interval([]))


def test_a_variant_is_chosen_only_when_it_beats_the_plain_prediction() -> None:
    assert choose_variant({"plain": 0.8, "lcc": 0.8, "tta": 0.79, "tta+lcc": 0.8}) == "plain"
    assert choose_variant({"plain": 0.8, "lcc": 0.82, "tta": 0.81, "tta+lcc": 0.815}) == "lcc"
    assert choose_variant({"plain": 0.8, "lcc": 0.81, "tta": 0.81, "tta+lcc": 0.83}) == "tta+lcc"


def test_export_of_a_cross_validation_is_one_model_averaging_the_folds(cv_dir: Path, tmp_path: Path) -> None:
    import torch

    from segkit.inference.sources import load_predictor

    out = tmp_path / "ensemble.pt"
    result = segkit("export", str(cv_dir), "--out", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"the {FOLDS} fold models of" in result.stdout
    extra = {"segkit.json": ""}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated in favour of torch.export
        exported = torch.jit.load(str(out), _extra_files=extra)
    metadata = json.loads(extra["segkit.json"])
    members = [str(out.parent / m) for m in json.loads(metadata["ensemble"])]  # relative to the export's folder
    assert len(members) == FOLDS and all(m.endswith("last.pt") for m in members)
    chosen = json.loads((cv_dir / "cv.json").read_text())["chosen"]
    assert metadata["recommended_postprocess"] == chosen["postprocess"]
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    expected = load_predictor(members, device="cpu").probabilities(x)
    with torch.no_grad():
        got = torch.sigmoid(exported(x))
    assert torch.allclose(got, expected, atol=1e-5)


def test_cross_validations_of_one_split_score_as_one_ensemble_per_fold(cv_dir: Path, tmp_path: Path) -> None:
    from segkit.evaluation.cv import out_of_fold_tables
    from segkit.errors import CheckpointError
    from segkit.components.registry import get_registry

    registry = get_registry()
    alone = out_of_fold_tables([cv_dir], FOLDS, registry, device="cpu")
    twice = out_of_fold_tables([cv_dir, cv_dir], FOLDS, registry, device="cpu")
    assert set(alone) == set(twice) == {"plain", "lcc", "tta", "tta+lcc"}
    for variant, table in alone.items():  # fold k averaged with itself predicts what fold k does
        pd.testing.assert_frame_equal(twice[variant], table)

    other = tmp_path / "other-split"
    shutil.copytree(cv_dir, other)
    splits = pd.read_csv(other / "fold-1" / "splits.csv")
    val, train = splits.index[splits["split"] == "val"][0], splits.index[splits["split"] == "train"][0]
    splits.loc[[val, train], "split"] = ["train", "val"]
    splits.to_csv(other / "fold-1" / "splits.csv", index=False)
    with pytest.raises(CheckpointError, match="fold-1 validated other cases"):
        out_of_fold_tables([cv_dir, other], FOLDS, registry, device="cpu")


def test_a_cross_validation_from_before_a_new_setting_can_still_be_continued() -> None:
    """cv.json written before a setting existed counts it at its default, the value that run used."""
    from segkit.components.registry import get_registry
    from segkit.config import resolve_config, validate_config
    from segkit.evaluation.cv import _comparable

    current = validate_config(resolve_config(), get_registry()).to_dict()
    older = json.loads(json.dumps(current))
    del older["train"]["target_spacing"], older["split"]["seed"]
    assert _comparable(older) == _comparable(current)
    older["train"]["lr"] = 0.5
    assert _comparable(older) != _comparable(current)
