"""More pixels or more epochs? The 2D image size at a fixed budget, chosen by one fold on the training side.

The planner shrinks a 2D image until the budget holds ``min_epochs`` epochs. Whether a larger image
trained for fewer epochs beats a smaller one trained for more is a question for the data, answered here
the way a recipe is chosen (by cross-validation over the training cases, never the held-out ones):

1. the benchmark's training side of DATASET (any_dataset_sets.py's fixed split; its held-out cases are
   never read) is cut once more: the 20% of cases with the smallest sha256 of ``"size-rule/<case>"`` are
   this fold's validation cases, the rest its training cases (one fold of five);
2. ``segkit plan`` on the fold's training cases, ``--minutes M`` (once; the plan is kept);
3. for each ``--sizes S``: ``segkit run --config plan.toml --set train.image_size=S``, the plan otherwise
   unedited (its batch included; the run re-plans its epochs from the first one, so each size trains the
   same minutes), then ``segkit evaluate`` on the fold's validation cases;
4. one row per case and size (Dice per image for folder sets, per patient for LGG), and for each size the
   paired difference from the plan's own size with a bootstrap 95% interval over the cases.

    .venv/bin/python benchmarks/size_rule_cv.py kvasir --sizes 128 192 96 160 --minutes 15
    .venv/bin/python benchmarks/size_rule_cv.py lgg --sizes 128 96 --minutes 15

Writes ``benchmarks/results/size-rule/<dataset>.csv`` (case, image_size, dice, tp, fp, fn) and
``--work/<dataset>/summary.json``; prints a markdown table. Steps whose output exists are skipped, so it
resumes. Each arm is limited by wall-clock minutes: run it on a quiet machine, one arm at a time.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tomllib
from pathlib import Path

import numpy as np
import pandas as pd

from any_dataset import read_truth, segkit, segkit_rows
from any_dataset_sets import SETS, fixed_split, hash_split, make_view
from common import REPO, describe_machine, markdown_table

RESULTS = REPO / "benchmarks" / "results" / "size-rule"


def run_arm(size: int, plan: Path, train_view: Path, val_view: Path, work: Path) -> dict:
    """Train and score one image size; returns the evaluate report and the run's summary."""
    arm = work / f"size-{size}"
    arm.mkdir(exist_ok=True)
    run_dir = arm / "run"
    if not (run_dir / "summary.json").is_file():
        if run_dir.exists():
            sys.exit(f"error: {run_dir} holds an unfinished run; move it aside and run again")
        print(f"  segkit run at {size}x{size}", flush=True)
        ok, out = segkit("run", "--config", str(plan), "--set", f"train.image_size={size}", "--data-root",
                         str(train_view), "--out", str(run_dir), "--quiet", log=arm / "run.log")
        if not ok:
            sys.exit(f"error: the run at {size} failed: {out}")
    report_path = arm / "evaluate.json"
    if not report_path.is_file():
        print(f"  segkit evaluate at {size}x{size}", flush=True)
        ok, out = segkit("evaluate", str(run_dir), "--data-root", str(val_view), "--json", "--quiet",
                         "--device", "cpu", log=arm / "evaluate.log")
        if not ok:
            sys.exit(f"error: evaluating the run at {size} failed: {out}")
        report_path.write_text(out)
    return {"report": json.loads(report_path.read_text()),
            "summary": json.loads((run_dir / "summary.json").read_text())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", choices=sorted(SETS))
    parser.add_argument("--sizes", type=int, nargs="+", required=True, help="image sizes to train (multiples of 32)")
    parser.add_argument("--minutes", type=float, default=15.0)
    parser.add_argument("--root", type=Path, help="where the dataset lives, if not at its default")
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "size-rule")
    args = parser.parse_args(argv)
    if any(size % 32 or size < 64 for size in args.sizes):
        parser.error("--sizes must be multiples of 32, at least 64")
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    spec = SETS[args.dataset]
    root = (args.root or spec.root).resolve()
    work = (args.work / spec.key).resolve()
    work.mkdir(parents=True, exist_ok=True)
    training_side, _ = fixed_split(spec, root)
    fold_train, fold_val = hash_split(training_side, "size-rule")
    print(f"{spec.key}: {len(fold_train)} training and {len(fold_val)} validation {spec.unit}s of the training side",
          flush=True)
    train_view = make_view(spec, root, fold_train, work / "view-train")
    val_view = make_view(spec, root, fold_val, work / "view-val")
    plan = work / "plan" / "plan.toml"
    if not plan.is_file():
        print(f"  segkit plan ({args.minutes:g} minutes)", flush=True)
        ok, out = segkit("plan", "--dataset", spec.dataset, "--data-root", str(train_view), *spec.set_options(),
                         "--minutes", str(args.minutes), "--out", str(plan.parent), "--overwrite", "--quiet",
                         log=work / "plan.log")
        if not ok:
            sys.exit(f"error: segkit plan failed: {out}")
    planned = tomllib.loads(plan.read_text())["train"]
    planned_size = planned.get("image_size")
    truth = read_truth(spec, root, fold_val)
    rows, arms = [], {}
    for size in args.sizes:
        arm = run_arm(size, plan, train_view, val_view, work)
        found, differ = segkit_rows(spec, arm["report"], fold_val, truth)
        if differ:
            sys.exit(f"error: segkit's truth differs from the files' at {size}: {differ[0]}")
        rows += [{**row, "image_size": size} for row in found]
        arms[size] = {"epochs_run": arm["summary"].get("epochs_run"),
                      "train_seconds": arm["summary"].get("train_seconds"),
                      "per_image_dice": arm["report"]["per_image"]["dice"]["mean"]}
    table = pd.DataFrame(rows)[["case", "image_size", "dice", "tp", "fp", "fn"]]
    RESULTS.mkdir(parents=True, exist_ok=True)
    table.to_csv(RESULTS / f"{spec.key}.csv", index=False, float_format="%.6g")
    from segkit.evaluation.cv import bootstrap_interval

    wide = table.pivot(index="case", columns="image_size", values="dice")
    reference = planned_size if planned_size in wide.columns else args.sizes[0]
    lines = []
    for size in args.sizes:
        change = (wide[size] - wide[reference]).tolist()
        low, high = bootstrap_interval(change) if size != reference else (0.0, 0.0)
        arms[size].update(dice=float(wide[size].mean()), median=float(wide[size].median()),
                          minus_reference=float(np.mean(change)), interval95=[low, high],
                          better=int(sum(c > 0 for c in change)), worse=int(sum(c < 0 for c in change)))
        a = arms[size]
        lines.append([f"{size}x{size}" + (" (planned)" if size == planned_size else ""), a["epochs_run"],
                      f"{a['train_seconds'] / 60:.1f}" if a["train_seconds"] else "", f"{a['dice']:.4f}",
                      f"{a['median']:.3f}", f"{a['per_image_dice']:.4f}", "" if size == reference else
                      f"{a['minus_reference']:+.4f} ({low:+.3f} to {high:+.3f}); {a['better']} better, {a['worse']} worse"])
    summary = {"dataset": spec.key, "minutes": args.minutes, "fold_train": len(fold_train), "fold_val": len(fold_val),
               "planned": {k: planned.get(k) for k in ("image_size", "batch_size", "epochs")},
               "reference_size": reference, "arms": {str(k): v for k, v in arms.items()},
               "machine": describe_machine()}
    (work / "summary.json").write_text(json.dumps(summary, indent=1, default=float))
    print()
    print(markdown_table(["size", "epochs", "minutes trained", f"mean Dice per {spec.unit}", "median",
                          "per image (slice)", f"minus {reference}x{reference} (95% CI)"], lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
