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

from any_dataset_sets import SETS
from common import REPO, describe_machine, markdown_table
from fold_arms import Arm, compare_arms, prepare_fold, table_header

RESULTS = REPO / "benchmarks" / "results" / "size-rule"


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
    fold = prepare_fold(spec, (args.root or spec.root).resolve(), (args.work / spec.key).resolve(), args.minutes)
    planned = tomllib.loads(fold.plan.read_text())["train"]
    planned_size = planned.get("image_size")
    arms = [Arm(str(size), (f"train.image_size={size}",), f"size-{size}") for size in args.sizes]
    reference = str(planned_size) if planned_size in args.sizes else str(args.sizes[0])
    table, figures, lines = compare_arms(fold, arms, reference)
    table = table.rename(columns={"arm": "image_size"})[["case", "image_size", "dice", "tp", "fp", "fn"]]
    table["image_size"] = table["image_size"].astype(int)
    RESULTS.mkdir(parents=True, exist_ok=True)
    table.to_csv(RESULTS / f"{spec.key}.csv", index=False, float_format="%.6g")
    for line in lines:
        line[0] = f"{line[0]}x{line[0]}" + (" (planned)" if line[0] == str(planned_size) else "")
    summary = {"dataset": spec.key, "minutes": args.minutes, "fold_train": len(fold.train), "fold_val": len(fold.val),
               "planned": {k: planned.get(k) for k in ("image_size", "batch_size", "epochs")},
               "reference_size": int(reference), "arms": figures, "machine": describe_machine()}
    (fold.work / "summary.json").write_text(json.dumps(summary, indent=1, default=float))
    print()
    print(markdown_table(table_header(spec.unit, f"{reference}x{reference}"), lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
