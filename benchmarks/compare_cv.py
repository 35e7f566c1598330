"""Compare two ``segkit cv`` results patient by patient: is the change real, or fold noise?

Both directories must hold ``cv-per-case.csv`` (or give such a file itself, say one kept in
``benchmarks/results/cv/``) over the same cases (the same data and
``--folds``; the same ``split.seed`` makes the folds identical, which a paired comparison
wants). Prints, for a column (``dice``: each case under the variant chosen on the other
folds, in tables written before that, the variant chosen on all cases; or
``dice_plain``, ``dice_lcc``, ...), each side's mean, median and patients at 0, then the
paired difference: its mean with a percentile bootstrap 95% interval over patients
(2,000 resamples, patients resampled with their pair), and how many patients improved or got
worse. ``--per-patient`` adds the table of every patient, sorted by the change.

    python benchmarks/compare_cv.py runs/cv-before runs/cv-after
    python benchmarks/compare_cv.py runs/cv-before runs/cv-after --column dice_plain --per-patient
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from common import markdown_table

TABLE = "cv-per-case.csv"


def read(source: Path, column: str) -> pd.Series:
    path = source if source.is_file() else source / TABLE
    if not path.is_file():
        sys.exit(f"error: {path} does not exist: give a directory written by 'segkit cv' (it writes {TABLE} at the end) "
                 "or such a table.")
    table = pd.read_csv(path)
    if column not in table.columns:
        sys.exit(f"error: {path} has no column {column!r}; it has {', '.join(table.columns)}.")
    return table.set_index("case")[column].astype(float)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--column", default="dice")
    parser.add_argument("--per-patient", action="store_true")
    args = parser.parse_args(argv)
    from segkit.evaluation.cv import bootstrap_interval

    before, after = read(args.before, args.column), read(args.after, args.column)
    if set(before.index) != set(after.index):
        only = sorted(set(before.index) ^ set(after.index))
        sys.exit(f"error: the two results cover different cases ({len(only)} in one only, e.g. {only[0]}); "
                 "compare cross-validations of the same data.")
    after = after.loc[before.index]
    change = after - before
    low, high = bootstrap_interval(change.tolist())
    rows = [[str(args.before), f"{before.mean():.3f}", f"{before.median():.3f}", int((before == 0).sum())],
            [str(args.after), f"{after.mean():.3f}", f"{after.median():.3f}", int((after == 0).sum())]]
    print(markdown_table([f"{args.column} over {len(before)} cases", "mean", "median", "at 0"], rows))
    print(f"\npaired change of the mean: {change.mean():+.3f}, 95% bootstrap interval {low:+.3f} to {high:+.3f}; "
          f"{int((change > 0).sum())} improved, {int((change < 0).sum())} got worse, {int((change == 0).sum())} unchanged")
    if args.per_patient:
        order = change.sort_values().index
        print()
        print(markdown_table(["case", "before", "after", "change"],
                             [[case, f"{before[case]:.3f}", f"{after[case]:.3f}", f"{change[case]:+.3f}"] for case in order]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
