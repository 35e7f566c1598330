"""segkit against nnU-Net v2 on the same volumes, folds and CPU minutes, case by case.

For each fold asked, nnU-Net v2 trains its ``2d`` and/or ``3d_fullres`` configuration on the
training cases of that fold of an existing ``segkit cv`` (its ``fold-K/splits.csv``, written to
nnU-Net's ``splits_final.json``), for the same minutes as segkit's recipe, and predicts the fold's
held-out cases as nnU-Net does (sliding windows, mirroring). segkit's fold model predicts the same
cases with ``segkit predict`` (plain and with its test-time flips). Both sides' label maps are
scored by one function here (Dice per label against the published labels, in the original
space), so the comparison is paired, case by case.

nnU-Net is never installed into segkit's environment: give the Python of a separate one.

    python3 -m venv /work/nnunet-venv && /work/nnunet-venv/bin/pip install torch==2.13.0 nnunetv2==2.8.1
    .venv/bin/python benchmarks/nnunet_side_by_side.py --data-root ../shared/data/hippocampus \\
        --segkit-cv runs/hippo-cv --nnunet-python /work/nnunet-venv/bin/python \\
        --work runs/nnunet-sbs --folds 0 --configurations 2d 3d_fullres --minutes 15

When the fold models are gone but their ``segkit evaluate FOLD --split val [--tta]`` tables were kept
(benchmarks/results/), ``--segkit-tables PATTERN`` pairs nnU-Net against those instead: each fold's
held-out cases are its table's rows, and its Dice per label is the one scored here (checked equal
to 1e-6 on folds 3-4 of the 3D plan).

Steps are skipped when their output exists (``--work`` keeps nnU-Net's raw, preprocessed and
results folders), so an interrupted benchmark resumes. Writes ``per-case.csv`` (one row per case
and method) and ``summary.json`` into ``--work`` and prints markdown tables. Run it on a quiet
machine: both sides are limited by wall-clock minutes, and other work steals their epochs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from functools import partial
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from common import REPO, describe_machine, markdown_table

DATASET_ID = 4
DATASET_NAME = "Dataset004_Hippocampus"
BUDGET_SCRIPT = Path(__file__).resolve().parent / "nnunet_budget_train.py"


def case_files(data_root: Path) -> dict[str, tuple[Path, Path]]:
    """Case id -> (image, label) from the Decathlon ``dataset.json`` training list."""
    listing = json.loads((data_root / "dataset.json").read_text())
    cases = {}
    for entry in listing["training"]:
        image, label = (data_root / entry["image"]).resolve(), (data_root / entry["label"]).resolve()
        cases[image.name.removesuffix(".nii.gz")] = (image, label)
    return cases


def write_raw_dataset(data_root: Path, raw: Path) -> Path:
    """nnU-Net's raw layout for the Decathlon folder: ``_0000`` links to the images, a v2 dataset.json."""
    listing = json.loads((data_root / "dataset.json").read_text())
    folder = raw / DATASET_NAME
    (folder / "imagesTr").mkdir(parents=True, exist_ok=True)
    (folder / "labelsTr").mkdir(parents=True, exist_ok=True)
    cases = case_files(data_root)
    for case, (image, label) in cases.items():
        for link, target in ((folder / "imagesTr" / f"{case}_0000.nii.gz", image), (folder / "labelsTr" / f"{case}.nii.gz", label)):
            if not link.is_symlink():
                link.symlink_to(target)
    labels = {name: int(value) for value, name in listing["labels"].items()}
    labels = {("background" if value == 0 else name): value for name, value in labels.items()}
    modality = listing.get("modality", {"0": "MRI"})
    (folder / "dataset.json").write_text(json.dumps({
        "channel_names": modality, "labels": labels, "numTraining": len(cases), "file_ending": ".nii.gz",
        "name": listing.get("name", "Hippocampus"),
    }, indent=2))
    return folder


def segkit_fold_cases(segkit_cv: Path, fold: int) -> tuple[list[str], list[str]]:
    """(training cases, held-out cases) of one fold of a segkit cross-validation."""
    splits = pd.read_csv(segkit_cv / f"fold-{fold}" / "splits.csv")
    by_case = splits.groupby("case")["split"].first()
    return sorted(by_case[by_case != "val"].index), sorted(by_case[by_case == "val"].index)


def table_path(pattern: str, fold: int, tta: bool) -> Path:
    """A kept per-case table of one fold: ``{fold}`` and ``{tta}`` (``-tta`` or nothing) filled in."""
    return Path(pattern.format(fold=fold, tta="-tta" if tta else ""))


def table_fold_cases(pattern: str, fold: int, cases: list[str]) -> tuple[list[str], list[str]]:
    """(training cases, held-out cases) of one fold whose held-out cases are the rows of its kept table."""
    held_out = sorted(pd.read_csv(table_path(pattern, fold, False))["case"])
    unknown = sorted(set(held_out) - set(cases))
    if unknown:
        sys.exit(f"error: {table_path(pattern, fold, False)} scores cases the dataset does not list: {unknown[:3]}")
    return sorted(set(cases) - set(held_out)), held_out


def write_splits(fold_cases: Callable[[int], tuple[list[str], list[str]]], folds: int, preprocessed: Path) -> None:
    """nnU-Net's splits_final.json with segkit's folds (every fold, so fold numbers agree)."""
    splits = [dict(zip(("train", "val"), fold_cases(fold))) for fold in range(folds)]
    seen = [case for split in splits for case in split["val"]]
    if len(seen) != len(set(seen)):
        sys.exit("error: the folds' held-out cases overlap: they are not the folds of one cross-validation")
    (preprocessed / DATASET_NAME / "splits_final.json").write_text(json.dumps(splits, indent=1))


def check_cv_folds(segkit_cv: Path, folds: int) -> None:
    """Exit with what to do when a fold of the cross-validation has no splits.csv."""
    missing = [fold for fold in range(folds) if not (segkit_cv / f"fold-{fold}" / "splits.csv").is_file()]
    if missing:  # nnU-Net indexes splits_final.json by fold number, so every fold's cases are needed
        sys.exit(f"error: {segkit_cv} has no splits.csv for fold(s) {', '.join(map(str, missing))}: nnU-Net needs "
                 "every fold's cases. Train those folds, or copy splits.csv from a short run of the same config "
                 "and split (e.g. segkit cv --config C --folds N --fold K --epochs 1 --out elsewhere)")


def check_tables(pattern: str, folds: int, variants: tuple[bool, ...]) -> None:
    """Exit with what is missing when a fold's kept table of one of ``variants`` (TTA or not) is not there."""
    missing = [str(table_path(pattern, fold, tta)) for fold in range(folds) for tta in variants
               if not table_path(pattern, fold, tta).is_file()]
    if missing:
        sys.exit(f"error: no kept per-case table {', '.join(missing[:4])}: --segkit-tables needs one per fold "
                 "(segkit evaluate FOLD --split val writes it; --no-segkit-tta drops the -tta ones)")


def table_rows(pattern: str, fold: int, tta: bool, names: dict[int, str]) -> list[dict]:
    """Rows of per-case Dice from a kept ``segkit evaluate`` table (its ``dice`` is the mean over the labels)."""
    table = pd.read_csv(table_path(pattern, fold, tta))
    method = "segkit" + ("_tta" if tta else "")
    columns = ["dice", *[f"dice_{name}" for name in names.values()]]
    absent = [c for c in columns if c not in table.columns]
    if absent:
        sys.exit(f"error: {table_path(pattern, fold, tta)} has no column {', '.join(absent)}")
    return [{"case": row["case"], "fold": fold, "method": method, **{c: float(row[c]) for c in columns}}
            for _, row in table.iterrows()]


def dice_per_label(prediction: np.ndarray, truth: np.ndarray, labels: list[int]) -> dict[int, float]:
    """Dice of each label (1.0 where both are empty)."""
    scores = {}
    for label in labels:
        p, t = prediction == label, truth == label
        total = int(p.sum()) + int(t.sum())
        scores[label] = 1.0 if total == 0 else 2.0 * int((p & t).sum()) / total
    return scores


def score_folder(folder: Path, cases: list[str], files: dict[str, tuple[Path, Path]], names: dict[int, str],
                 method: str, fold: int) -> list[dict]:
    """Rows of per-case Dice for the label maps ``CASE.nii.gz`` in ``folder``."""
    import nibabel as nib

    rows = []
    for case in cases:
        path = folder / f"{case}.nii.gz"
        if not path.is_file():
            sys.exit(f"error: {method} wrote no prediction for {case} in {folder}")
        prediction = np.asarray(nib.load(path).dataobj).astype(np.int64)
        truth = np.rint(np.asarray(nib.load(files[case][1]).dataobj)).astype(np.int64)
        if prediction.shape != truth.shape:
            sys.exit(f"error: {path} has shape {prediction.shape}, its label {truth.shape}")
        scores = dice_per_label(prediction, truth, sorted(names))
        row = {"case": case, "fold": fold, "method": method, "dice": float(np.mean(list(scores.values())))}
        row.update({f"dice_{names[label]}": value for label, value in scores.items()})
        rows.append(row)
    return rows


def run(command: list[str], env: dict | None = None, log: Path | None = None) -> str:
    """Run a command, stream nothing, keep its output in ``log``; exit with its tail on failure."""
    started = time.monotonic()
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    output = result.stdout + result.stderr
    if log is not None:
        log.write_text(output)
    if result.returncode != 0:
        sys.exit(f"error: {' '.join(map(str, command[:3]))} ... failed ({result.returncode}):\n{output[-3000:]}")
    print(f"  done in {time.monotonic() - started:.0f} s: {' '.join(map(str, command[:4]))} ...", flush=True)
    return result.stdout


def nnunet_env(work: Path, threads: int) -> dict:
    env = dict(os.environ, nnUNet_raw=str(work / "nnUNet_raw"), nnUNet_preprocessed=str(work / "nnUNet_preprocessed"),
               nnUNet_results=str(work / "nnUNet_results"), nnUNet_n_proc_DA=str(max(1, threads - 1)),
               nnUNet_def_n_proc=str(threads), OMP_NUM_THREADS=str(threads))
    return env


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", type=Path, default=REPO.parent / "shared" / "data" / "hippocampus")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--segkit-cv", type=Path, help="a finished 'segkit cv' directory of the recipe")
    source.add_argument("--segkit-tables", metavar="PATTERN",
                        help="score segkit from kept per-case tables of its fold models instead (segkit evaluate FOLD "
                             "--split val [--tta]), e.g. benchmarks/results/hippocampus/plan3d-fold{fold}-last{tta}.csv; "
                             "each fold's held-out cases are its table's rows")
    parser.add_argument("--total-folds", type=int, default=5, help="with --segkit-tables: the folds of the cross-validation")
    parser.add_argument("--nnunet-python", type=Path, required=True, help="Python of a venv with nnunetv2")
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "nnunet-sbs")
    parser.add_argument("--folds", type=int, nargs="+", default=[0])
    parser.add_argument("--configurations", nargs="+", default=["2d", "3d_fullres"],
                        help="nnU-Net configurations; NAME:N trains NAME with batch size N instead of its plan's")
    parser.add_argument("--minutes", type=float, default=15.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--iterations", type=int, default=50, help="nnU-Net batches per epoch (its own: 250)")
    parser.add_argument("--no-segkit-tta", action="store_true", help="score segkit's plain predictions only")
    args = parser.parse_args(argv)

    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    env = nnunet_env(work, args.threads)
    files = case_files(args.data_root)
    listing = json.loads((args.data_root / "dataset.json").read_text())
    names = {int(value): name for value, name in listing["labels"].items() if int(value) != 0}
    segkit_variants = (False,) if args.no_segkit_tta else (False, True)  # segkit scored without, then with TTA
    if args.segkit_cv is not None:
        total_folds = int(json.loads((args.segkit_cv / "cv.json").read_text())["folds"])
        check_cv_folds(args.segkit_cv, total_folds)
        fold_cases = partial(segkit_fold_cases, args.segkit_cv)
    else:
        total_folds = args.total_folds
        check_tables(args.segkit_tables, total_folds, segkit_variants)
        fold_cases = partial(table_fold_cases, args.segkit_tables, cases=sorted(files))
    bin_dir = args.nnunet_python.parent
    timings: dict[str, dict] = {}

    write_raw_dataset(args.data_root, work / "nnUNet_raw")
    plans = work / "nnUNet_preprocessed" / DATASET_NAME / "nnUNetPlans.json"
    configurations = sorted({v.partition(":")[0] for v in args.configurations})
    missing = [c for c in configurations
               if not (work / "nnUNet_preprocessed" / DATASET_NAME / f"nnUNetPlans_{c}").is_dir()]
    if missing or not plans.is_file():
        print(f"nnU-Net: plan and preprocess ({', '.join(configurations)})", flush=True)
        started = time.monotonic()
        run([str(bin_dir / "nnUNetv2_plan_and_preprocess"), "-d", str(DATASET_ID), "-c", *configurations,
             "-np", str(args.threads), "--verify_dataset_integrity"], env, work / "plan_and_preprocess.log")
        timings["nnunet_preprocess_seconds"] = round(time.monotonic() - started, 1)
    write_splits(fold_cases, total_folds, work / "nnUNet_preprocessed")

    rows: list[dict] = []
    runs: list[dict] = []
    for fold in args.folds:
        _, held_out = fold_cases(fold)
        for variant in args.configurations:
            configuration, _, batch = variant.partition(":")
            method = f"nnunet_{configuration}" + (f"_b{batch}" if batch else "")
            record = work / f"{method}-fold{fold}.json"
            if not record.is_file():
                print(f"nnU-Net {configuration}, fold {fold}: {args.minutes:g} minutes of training", flush=True)
                out = run([str(args.nnunet_python), str(BUDGET_SCRIPT), "--dataset", str(DATASET_ID),
                           "--configuration", configuration, "--fold", str(fold), "--minutes", str(args.minutes),
                           "--threads", str(args.threads), "--iterations", str(args.iterations),
                           *(["--batch-size", batch] if batch else [])],
                          env, work / f"{method}-fold{fold}.log")
                record.write_text(out.strip().splitlines()[-1])
            info = json.loads(record.read_text())
            runs.append({"method": method, "fold": fold, **info})
            rows += score_folder(Path(info["output_folder"]) / "validation", held_out, files, names, method, fold)

        if args.segkit_tables is not None:
            for tta in segkit_variants:
                rows += table_rows(args.segkit_tables, fold, tta, names)
            continue
        fold_run = args.segkit_cv / f"fold-{fold}"
        summary = json.loads((fold_run / "summary.json").read_text())
        timing = pd.read_csv(fold_run / "timing.csv")
        for tta in segkit_variants:
            method = "segkit" + ("_tta" if tta else "")
            out_dir = work / f"{method}-fold{fold}"
            if not all((out_dir / f"{case}.nii.gz").is_file() for case in held_out):
                print(f"segkit fold {fold}: predict {len(held_out)} held-out volumes{' with flips' if tta else ''}", flush=True)
                started = time.monotonic()
                run([str(Path(sys.executable).parent / "segkit"), "predict", str(fold_run), "--checkpoint", "last",
                     *[str(files[case][0]) for case in held_out], "--out", str(out_dir), "--overwrite",
                     "--tta" if tta else "--no-tta", "--device", "cpu"], log=work / f"{method}-fold{fold}.log")
                (work / f"{method}-fold{fold}.json").write_text(json.dumps(
                    {"prediction_seconds": round(time.monotonic() - started, 1)}))
            predicted = json.loads((work / f"{method}-fold{fold}.json").read_text())
            runs.append({"method": method, "fold": fold, "epochs": int(summary.get("epochs_run", len(timing))),
                         "training_seconds": round(float((timing["train_seconds"] + timing["val_seconds"]).sum()), 1),
                         **predicted})
            rows += score_folder(out_dir, held_out, files, names, method, fold)

    table = pd.DataFrame(rows)
    table.to_csv(work / "per-case.csv", index=False)
    report(table, runs, names, args, timings, work)
    return 0


def report(table: pd.DataFrame, runs: list[dict], names: dict[int, str], args, timings: dict, work: Path) -> None:
    from segkit.evaluation.cv import bootstrap_interval

    label_columns = [f"dice_{name}" for name in names.values()]
    summary_rows, summary = [], {"machine": describe_machine(), "minutes": args.minutes, "folds": args.folds,
                                 "runs": runs, **timings, "methods": {}}
    for method, group in table.groupby("method", sort=False):
        info = [r for r in runs if r["method"] == method]
        entry = {"cases": len(group), "mean": group["dice"].mean(), "median": group["dice"].median(),
                 **{column: group[column].mean() for column in label_columns},
                 "epochs": [r.get("epochs") for r in info], "training_seconds": [r.get("training_seconds") for r in info]}
        summary["methods"][method] = entry
        summary_rows.append([method, len(group), f"{entry['mean']:.4f}", f"{entry['median']:.4f}",
                             *[f"{entry[c]:.4f}" for c in label_columns],
                             "/".join(str(e) for e in entry["epochs"]),
                             "/".join(f"{s:.0f}" for s in entry["training_seconds"] if s is not None)])
    print()
    print(markdown_table(["method", "cases", "mean Dice", "median", *[f"{n}" for n in names.values()], "epochs",
                          "training s"], summary_rows))
    wide = table.pivot(index="case", columns="method", values="dice")
    pairs = []
    for reference in [m for m in wide.columns if m.startswith("segkit")]:
        for other in [m for m in wide.columns if m.startswith("nnunet")]:
            change = wide[reference] - wide[other]
            low, high = bootstrap_interval(change.tolist())
            pairs.append([f"{reference} - {other}", f"{change.mean():+.4f}", f"{low:+.4f} to {high:+.4f}",
                          int((change > 0).sum()), int((change < 0).sum())])
            summary.setdefault("paired", {})[f"{reference}-{other}"] = {
                "mean_difference": change.mean(), "interval95": [low, high],
                "segkit_better": int((change > 0).sum()), "nnunet_better": int((change < 0).sum())}
    print()
    print(markdown_table(["paired (per case)", "mean difference", "95% bootstrap interval", "segkit better",
                          "nnU-Net better"], pairs))
    print(f"\n{describe_machine()}")
    (work / "summary.json").write_text(json.dumps(summary, indent=1, default=float))


if __name__ == "__main__":
    raise SystemExit(main())
