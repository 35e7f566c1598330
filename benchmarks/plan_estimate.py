"""How close is `segkit plan`'s epoch estimate to the epochs its plan then runs?

For each dataset named, `segkit plan` is made in this process (its `plan.epoch_seconds`: the timed
training steps, the timed data path and the timed validation forwards, for `segkit run`'s default
split), then the plan runs as written but for a fixed `--epochs` and no time budget, as a child
`segkit run` (`--cv-fold`: as fold 0 of `segkit cv --folds 5`, compared with the plan's cv estimate).
From the run's `timing.csv` the table takes the median over epochs 2 and later (the first reads
and caches the data) of training seconds plus validation seconds and sets it against the
estimate; the run's whole wall time (start-up, caches, checkpoint writes, figures) is beside it.

    python benchmarks/plan_estimate.py --dataset msd --data-root ../shared/data/hippocampus [--set planner.dims=3d]
        [--minutes 15] [--epochs 3] [--cv-fold] [--out runs/plan-estimate] [--json FILE]

Run it on a quiet machine: the plan's timings and the run's epochs are both measurements of it.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from common import REPO, describe_machine, machine, markdown_table


def measured_epochs(run: Path) -> dict[str, float]:
    """Median training + validation seconds over epochs 2 and later (all epochs when there is one)."""
    with (run / "timing.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    steady = rows[1:] or rows
    return {"epochs": len(rows),
            "train_s": statistics.median(float(r["train_seconds"]) for r in steady),
            "val_s": statistics.median(float(r["val_seconds"]) for r in steady)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="synthetic")
    parser.add_argument("--data-root")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--minutes", type=float, default=15.0, help="the plan's budget (sets its decisions)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs the plan then runs (fixed, no budget)")
    parser.add_argument("--cv-fold", action="store_true", help="run it as fold 0 of segkit cv --folds 5")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "plan-estimate")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    from segkit.cli.plan import plan_parameters
    from segkit.components.registry import get_registry
    from segkit.planning.make import make_plan

    registry = get_registry()
    dataset_params, planner_params = plan_parameters(registry, args.dataset, args.data_root, tuple(args.sets))
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    plan_dir = args.out / f"plan-{stamp}"
    outcome = make_plan(registry, args.dataset, dataset_params, "default", planner_params, args.minutes,
                        "cpu", plan_dir)
    document = outcome.plan.document()
    dims = "3d" if document["train"].get("patch_size") else "2d"
    estimate = outcome.plan.cv_epoch_seconds if args.cv_fold else outcome.plan.epoch_seconds
    if estimate is None:
        raise SystemExit("the planner gave no estimate of a cv fold's epoch; run without --cv-fold")
    run = args.out / f"run-{stamp}"
    command = [sys.executable, "-m", "segkit", "run", "--config", str(outcome.plan_path), "--epochs",
               str(args.epochs), "--set", "train.max_minutes=0", "--quiet", "--out", str(run)]
    if args.cv_fold:
        command += ["--set", "split.folds=5", "--set", "split.fold=0", "--set", "split.test_fraction=0"]
    started = time.perf_counter()
    subprocess.run(command, check=True)
    wall = time.perf_counter() - started
    measured = measured_epochs(run)
    epoch = measured["train_s"] + measured["val_s"]
    row = {"dataset": args.dataset + (f" ({', '.join(args.sets)})" if args.sets else ""), "dims": dims,
           "split": "cv fold" if args.cv_fold else "run", "batch": document["train"]["batch_size"],
           "estimated s/epoch": round(estimate, 1), "measured train s": round(measured["train_s"], 1),
           "measured val s": round(measured["val_s"], 1), "measured s/epoch": round(epoch, 1),
           "estimate / measured": round(estimate / epoch, 2), "run wall s": round(wall, 1),
           "epochs": measured["epochs"]}
    print(markdown_table(list(row), [list(row.values())]))
    print(describe_machine())
    if args.json:
        args.json.write_text(json.dumps({"machine": machine(), "result": row}, indent=2) + "\n")


if __name__ == "__main__":
    main()
