"""segkit's self-configured plan on any dataset, beside nnU-Net v2 ``2d`` at the same minutes (issue 40, item 6).

For each dataset named, on its fixed split (any_dataset_sets.py says which):

1. ``segkit plan --dataset D --data-root TRAIN_VIEW --minutes M --out PLAN`` on the training cases only,
2. ``segkit run --config PLAN/plan.toml --data-root TRAIN_VIEW``, the plan unedited,
3. ``segkit evaluate RUN --data-root TEST_VIEW --json``: the held-out cases, nothing else,
4. nnU-Net v2 ``2d`` trained for the same wall-clock minutes on the same training cases (its own trainer,
   time-limited; any_dataset_nnunet.py), predicting the same held-out cases.

A view is a folder of links holding one side of the split in the dataset's own layout (see
any_dataset_sets.py for why not ``dataset.cases``). Both methods are scored by the same function here
(``dice`` from tp/fp/fn, 1 where truth and prediction are both empty): segkit from the counts of
``segkit evaluate``'s per-case table, nnU-Net from its label maps against the truth read here; the
truth segkit counted is checked against the truth read here, case by case. The unit is what the
published figure uses: the image for 2D sets (Kvasir's published metric is mean Dice per image), the
patient for LGG (one 3D Dice per patient), the volume for the hippocampus (mean of both labels).

    .venv/bin/python benchmarks/any_dataset.py kvasir ph2 hc18 lgg hippocampus --minutes 15
    .venv/bin/python benchmarks/any_dataset.py hc18 --quick        # 1 minute, a handful of cases: checks the plumbing

Writes ``benchmarks/results/any-dataset/<dataset>.csv`` (one row per case and method; ``--quick``: into
``--work`` instead) and ``--work/<dataset>/summary.json``, and prints one markdown row per dataset.
Steps whose output exists are skipped, so it resumes. A segkit step that fails (a set segkit cannot read
yet) is recorded with its error line and the nnU-Net side still runs. nnU-Net is never installed into
segkit's environment (``--nnunet-python``; see benchmarks/README.md). Run the full benchmark on a quiet
machine: both sides are limited by wall-clock minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import numpy as np
import pandas as pd

from any_dataset_nnunet import label_map
from any_dataset_nnunet import train as train_nnunet
from any_dataset_nnunet import write_raw
from any_dataset_sets import (SETS, BenchmarkSet, binary_mask, counts, dice, fixed_split, folder_pairs, lgg_slices,
                              make_view, volume_files)
from common import REPO, describe_machine, markdown_table

RESULTS = REPO / "benchmarks" / "results" / "any-dataset"
QUICK_CASES = {"folder": (8, 4), "lgg": (2, 1), "msd": (6, 3)}  # (training, held-out) cases with --quick


def segkit(*arguments: str, log: Path) -> tuple[bool, str]:
    """Run ``python -m segkit ...``; keep its output in ``log``; (ok, stdout or the error's last line)."""
    result = subprocess.run([sys.executable, "-m", "segkit", *arguments], capture_output=True, text=True)
    log.write_text(result.stdout + result.stderr)
    if result.returncode == 0:
        return True, result.stdout
    lines = [line for line in (result.stderr or result.stdout).splitlines() if line.strip()]
    return False, lines[-1] if lines else f"exit status {result.returncode}"


def segkit_steps(spec: BenchmarkSet, train_view: Path, test_view: Path, minutes: float, work: Path) -> dict:
    """Plan, run and evaluate; returns what happened (``failed``/``error`` where a step stopped)."""
    status: dict = {}
    plan = work / "plan"
    if not (plan / "plan.toml").is_file():
        print(f"  segkit plan ({minutes:g} minutes)", flush=True)
        started = time.monotonic()
        ok, out = segkit("plan", "--dataset", spec.dataset, "--data-root", str(train_view), *spec.set_options(),
                         "--minutes", str(minutes), "--out", str(plan), "--overwrite", "--quiet", log=work / "plan.log")
        if not ok:
            return {"failed": "plan", "error": out}
        status["plan_seconds"] = round(time.monotonic() - started, 1)
    run_dir = work / "run"
    if not (run_dir / "summary.json").is_file():
        if run_dir.exists():  # an interrupted run: keep it aside, train again from the start
            aside = run_dir.with_name(f"run.interrupted-{int(time.time())}")
            run_dir.rename(aside)
            print(f"  an unfinished run was moved to {aside}", flush=True)
        print("  segkit run (the plan unedited)", flush=True)
        started = time.monotonic()
        ok, out = segkit("run", "--config", str(plan / "plan.toml"), "--data-root", str(train_view),
                         "--out", str(run_dir), "--quiet", log=work / "run.log")
        if not ok:
            return {**status, "failed": "run", "error": out}
        status["run_wall_seconds"] = round(time.monotonic() - started, 1)
    report_path = work / "segkit-evaluate.json"
    if not report_path.is_file():
        print("  segkit evaluate on the held-out cases", flush=True)
        ok, out = segkit("evaluate", str(run_dir), "--data-root", str(test_view), "--json", "--quiet",
                         "--device", "cpu", log=work / "evaluate.log")
        if not ok:
            return {**status, "failed": "evaluate", "error": out}
        report_path.write_text(out)
    status["report"] = json.loads(report_path.read_text())
    status["summary"] = json.loads((run_dir / "summary.json").read_text())
    status["plan"] = tomllib.loads((plan / "plan.toml").read_text())
    return status


def read_truth(spec: BenchmarkSet, root: Path, cases: list[str]) -> dict[str, list[tuple[str, np.ndarray]]]:
    """Case -> (item id, truth) of each of its images: one image, a patient's slices, or a label volume."""
    if spec.layout == "folder":
        pairs = folder_pairs(spec, root)
        return {case: [(case, binary_mask(pairs[case][1]))] for case in cases}
    if spec.layout == "lgg":
        return {case: [(image.stem, binary_mask(mask)) for image, mask in lgg_slices(root, case)] for case in cases}
    import nibabel as nib

    files = volume_files(root)
    return {case: [(case, np.rint(np.asarray(nib.load(files[case][1]).dataobj)).astype(np.int64))] for case in cases}


def label_values(spec: BenchmarkSet) -> dict[str, int]:
    return {name: value for value, name in enumerate(spec.labels, start=1)}


def row_from_counts(case: str, method: str, items: int, spec: BenchmarkSet, by_label: dict[str, tuple]) -> dict:
    """A table row: Dice of each label from its (tp, fp, fn), ``dice`` their mean."""
    row = {"case": case, "method": method, "items": items}
    scores = []
    for name, (tp, fp, fn) in by_label.items():
        suffix = "" if len(by_label) == 1 else f"_{name}"
        score = dice(tp, fp, fn)
        scores.append(score)
        row.update({f"dice{suffix}": score, f"tp{suffix}": tp, f"fp{suffix}": fp, f"fn{suffix}": fn})
    row["dice"] = float(np.mean(scores))
    return row


def segkit_rows(spec: BenchmarkSet, report: dict, test: list[str], truth: dict) -> tuple[list[dict], list[str]]:
    """Rows from ``segkit evaluate``'s per-case table, and the cases whose truth differs from the one read here."""
    table = pd.read_csv(report["per_case_csv"])
    table["case"] = table["case"].astype(str)
    table = table.set_index("case")
    missing = sorted(set(test) - set(table.index))
    if missing:
        raise SystemExit(f"error: segkit evaluate scored no {missing[0]} ({len(missing)} held-out cases missing)")
    rows, differ = [], []
    names = label_values(spec)
    for case in test:
        line = table.loc[case]
        if len(names) == 1:
            by_label = {"lesion": (int(line["tp"]), int(line["fp"]), int(line["fn"]))}
        else:
            by_label = {n: (int(line[f"tp_{n}"]), int(line[f"fp_{n}"]), int(line[f"fn_{n}"])) for n in names}
        rows.append(row_from_counts(case, "segkit", int(line["n_images"]), spec, by_label))
        ours = {n: sum(int((array == v).sum()) if len(names) > 1 else int(array.sum()) for _, array in truth[case])
                for n, v in names.items()}
        theirs = {n: tp + fn for n, (tp, _, fn) in by_label.items()}
        if ours != theirs:
            differ.append(f"{case}: segkit counted {theirs}, read here {ours}")
    return rows, differ


def nnunet_rows(spec: BenchmarkSet, folder: Path, test: list[str], truth: dict) -> list[dict]:
    """Rows of nnU-Net's label maps (``folder/<item>.png`` or ``.nii.gz``) against the truth read here."""
    ending = ".nii.gz" if spec.layout == "msd" else ".png"
    names = label_values(spec)
    rows = []
    for case in test:
        totals = {n: [0, 0, 0] for n in names}
        for item, array in truth[case]:
            path = folder / f"{item}{ending}"
            if not path.is_file():
                raise SystemExit(f"error: nnU-Net wrote no prediction {path}")
            predicted = label_map(path)
            if predicted.shape != array.shape:
                raise SystemExit(f"error: {path} has shape {predicted.shape}, its truth {array.shape}")
            for name, value in names.items():
                p, t = (predicted == value, array == value) if len(names) > 1 else (predicted > 0, array > 0)
                totals[name] = [a + b for a, b in zip(totals[name], counts(p, t))]
        by_label = {name: tuple(values) for name, values in totals.items()}
        rows.append(row_from_counts(case, "nnunet_2d", len(truth[case]), spec, by_label))
    return rows


def plan_choices(status: dict) -> str:
    """segkit plan's choices in a few words: model, size or patch, batch, context, epochs run."""
    plan = status.get("plan")
    if not plan:
        return f"refused at {status['failed']}" if "failed" in status else ""
    model, trainer, data = plan.get("model", {}), plan.get("train", {}), plan.get("dataset", {})
    name = model.get("name", "?") + (f" {model['encoder_name']}" if model.get("encoder_name") else "")
    size = (f"patch {'x'.join(map(str, trainer['patch_size']))}" if trainer.get("patch_size")
            else f"size {trainer.get('image_size', '?')}" if trainer.get("image_size") else "native size")
    parts = [name, size, f"batch {trainer.get('batch_size', '?')}"]
    if data.get("context"):
        parts.append(f"context {data['context']}")
    summary = status.get("summary") or {}
    if summary:
        parts.append(f"{summary.get('epochs_run')} epochs in {summary.get('train_seconds', 0) / 60:.1f} min")
    return ", ".join(parts)


def benchmark(spec: BenchmarkSet, root: Path, args: argparse.Namespace) -> dict:
    """One dataset end to end; returns its summary (also written to WORK/<dataset>/summary.json)."""
    work = (args.work / spec.key).resolve()
    work.mkdir(parents=True, exist_ok=True)
    train, test = fixed_split(spec, root)
    if args.quick:
        n_train, n_test = QUICK_CASES[spec.layout]
        train, test = train[:n_train], test[:n_test]
    print(f"{spec.key}: {len(train)} training and {len(test)} held-out {spec.unit}s at {root}", flush=True)
    train_view = make_view(spec, root, train, work / "view-train")
    test_view = make_view(spec, root, test, work / "view-test")
    truth = read_truth(spec, root.resolve(), test)
    summary: dict = {"dataset": spec.key, "root": str(root), "unit": spec.unit, "minutes": args.minutes,
                     "train_cases": len(train), "test_cases": len(test),
                     "test_items": sum(len(v) for v in truth.values()), "reference": spec.reference}
    rows: list[dict] = []
    if not args.no_segkit:
        status = segkit_steps(spec, train_view, test_view, args.minutes, work)
        summary["segkit"] = {k: v for k, v in status.items() if k not in ("report", "plan", "summary")}
        summary["segkit"]["choices"] = plan_choices(status)
        if "report" in status:
            found, differ = segkit_rows(spec, status["report"], test, truth)
            rows += found
            report = status["report"]
            summary["segkit"]["evaluate_per_image_dice"] = report["per_image"]["dice"]["mean"]
            summary["segkit"]["evaluate_per_case_dice"] = report["per_case"]["dice"]["mean"]
            summary["segkit"]["truth_differs"] = differ
            summary["segkit"]["epochs_run"] = status["summary"].get("epochs_run")
            summary["segkit"]["train_seconds"] = status["summary"].get("train_seconds")
    if not args.no_nnunet:
        try:
            ids = write_raw(spec, root.resolve(), train + test, work / "nnUNet_raw")
            info = train_nnunet(spec.key, [i for c in train for i in ids[c]], [i for c in test for i in ids[c]],
                                python=args.nnunet_python, minutes=args.minutes, threads=args.threads,
                                iterations=args.iterations, val_iterations=args.val_iterations,
                                mirroring=not args.nnunet_no_mirroring, work=work)
            validation = Path(info["output_folder"]) / "validation"
            rows += nnunet_rows(spec, validation, test, truth)
            summary["nnunet_2d"] = {k: info[k] for k in ("epochs", "batch_size", "plan_batch_size", "patch_size",
                                                          "training_seconds", "validation_seconds", "mirroring")
                                    if k in info}
            if (validation / "summary.json").is_file():  # nnU-Net's own score, a check (it skips empty cases)
                own = json.loads((validation / "summary.json").read_text())
                summary["nnunet_2d"]["own_foreground_mean_dice"] = own["foreground_mean"]["Dice"]
        except SystemExit as error:  # recorded, the other datasets go on
            summary["nnunet_2d"] = {"failed": str(error)}
    target = (work if args.quick else RESULTS) / f"{spec.key}.csv"
    if target.is_file() and (args.no_nnunet or args.no_segkit):  # the side not run keeps its kept rows
        kept = pd.read_csv(target, dtype={"case": str})
        other = "nnunet_2d" if args.no_nnunet else "segkit"
        rows += kept[(kept["method"] == other) & kept["case"].isin(test)].to_dict("records")
    table = pd.DataFrame(rows)
    target.parent.mkdir(parents=True, exist_ok=True)
    if len(table):
        table.to_csv(target, index=False, float_format="%.6g")
        summary["table"] = str(target)
        for method, group in table.groupby("method"):
            summary.setdefault(method if method == "segkit" else "nnunet_2d", {})["dice"] = float(group["dice"].mean())
        if {"segkit", "nnunet_2d"} <= set(table["method"]):
            from segkit.evaluation.cv import bootstrap_interval

            wide = table.pivot(index="case", columns="method", values="dice")
            change = (wide["segkit"] - wide["nnunet_2d"]).tolist()
            summary["paired_segkit_minus_nnunet"] = {"mean": float(np.mean(change)),
                                                     "interval95": list(bootstrap_interval(change))}
    (work / "summary.json").write_text(json.dumps(summary, indent=1, default=float))
    return summary


def shorten(text: str, limit: int) -> str:
    """One line of at most ``limit`` characters (the whole text stays in summary.json)."""
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[:limit - 3] + "..."


def markdown_row(summary: dict) -> list:
    segkit_part, nnunet_part = summary.get("segkit", {}), summary.get("nnunet_2d", {})
    segkit_dice = (f"{segkit_part['dice']:.4f}" if "dice" in segkit_part
                   else f"refused at {segkit_part['failed']}: {shorten(segkit_part['error'], 160)}"
                   if "failed" in segkit_part else "")
    nnunet_dice = (f"{nnunet_part['dice']:.4f} ({nnunet_part.get('epochs')} epochs, "
                   f"batch {nnunet_part.get('batch_size')})" if "dice" in nnunet_part
                   else shorten(nnunet_part.get("failed", ""), 160))
    split = f"{summary['train_cases']} / {summary['test_cases']} {summary['unit']}s"
    if summary["unit"] != "image":
        split += f" ({summary['test_items']} held-out {'slices' if summary['unit'] == 'patient' else 'volumes'})"
    return [f"{summary['dataset']} (mean Dice per {summary['unit']})", split, segkit_part.get("choices", ""),
            segkit_dice, nnunet_dice, summary["reference"], f"{summary['minutes']:g}"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("datasets", nargs="+", choices=sorted(SETS), metavar="DATASET",
                        help=f"one or more of: {', '.join(SETS)}")
    parser.add_argument("--root", action="append", default=[], metavar="DATASET=PATH",
                        help="where a dataset lives, if not at its default (repeatable)")
    parser.add_argument("--minutes", type=float, default=15.0, help="training minutes of each method")
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "any-dataset")
    parser.add_argument("--nnunet-python", type=Path, default=Path("/work/nnunet-venv/bin/python"),
                        help="Python of a separate environment with nnunetv2")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--iterations", type=int, default=50, help="nnU-Net batches per epoch (its own: 250)")
    parser.add_argument("--val-iterations", type=int, default=5, help="nnU-Net validation batches per epoch")
    parser.add_argument("--nnunet-no-mirroring", action="store_true",
                        help="nnU-Net predicts without its test-time mirroring (4x faster in 2D; --quick sets it)")
    parser.add_argument("--no-nnunet", action="store_true",
                        help="segkit only (nnU-Net's rows of the kept table stay beside the new ones)")
    parser.add_argument("--no-segkit", action="store_true",
                        help="nnU-Net only (segkit's rows of the kept table stay beside the new ones)")
    parser.add_argument("--quick", action="store_true",
                        help="1 minute, a handful of cases, --work runs/any-dataset-quick: checks the plumbing only")
    args = parser.parse_args(argv)
    roots = dict(item.split("=", 1) for item in args.root)
    unknown = sorted(set(roots) - set(SETS))
    if unknown:
        parser.error(f"--root names unknown dataset(s) {', '.join(unknown)}; known: {', '.join(SETS)}")
    if args.quick:
        args.minutes, args.iterations, args.val_iterations, args.nnunet_no_mirroring = 1.0, 1, 1, True
        if args.work == parser.get_default("work"):
            args.work = REPO / "runs" / "any-dataset-quick"
    if not args.no_nnunet and not args.nnunet_python.is_file():
        parser.error(f"no Python at {args.nnunet_python}: create the nnU-Net environment (benchmarks/README.md, "
                     "nnunet_side_by_side.py) or pass --no-nnunet")
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))

    summaries = []
    for key in args.datasets:
        spec = SETS[key]
        root = Path(roots.get(key, spec.root))
        if not root.exists():
            sys.exit(f"error: {key}: no data at {root}" + (f"; rebuild it with python {spec.rebuild}" if spec.rebuild
                                                           else "; pass --root {key}=PATH"))
        summaries.append(benchmark(spec, root, args))
    print()
    print(markdown_table(["dataset", "train / held-out", "segkit plan's choices", "segkit", "nnU-Net 2d",
                          "published reference", "minutes"], [markdown_row(s) for s in summaries]))
    for summary in summaries:
        differ = summary.get("segkit", {}).get("truth_differs")
        if differ:
            print(f"note: {summary['dataset']}: the truth segkit counted differs from the one read here in "
                  f"{len(differ)} case(s), e.g. {differ[0]}")
    print(f"\n{describe_machine()}" + ("  (--quick: the numbers mean nothing)" if args.quick else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
