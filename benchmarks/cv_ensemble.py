"""Out-of-fold scores of an ensemble of cross-validations: fold k of each, averaged, scores fold k's cases.

Give several ``segkit cv`` directories of one split (same data, ``--folds`` and ``split.seed``;
typically the same recipe trained with other ``--seed`` values). Every case is scored by the
average of the fold models that never saw it, one per directory, with each inference variant
(plain, LCC, flip TTA, both), as ``segkit cv`` scores one directory. Nothing is retrained.

Writes ``OUT/cv-per-case.csv`` and ``OUT/cv-report.json`` in ``segkit cv``'s formats, so
``compare_cv.py`` pairs the ensemble with any of its members patient by patient, and prints
each member's and the ensemble's means. The question it answers: how much does averaging
models trained with other seeds buy on patients none of them saw? (The fold models of one
cross-validation, averaged by ``segkit evaluate DIR`` on new patients, are such an ensemble too.)

    python benchmarks/cv_ensemble.py runs/cv-seed0 runs/cv-seed1 --out runs/cv-seeds01
    python benchmarks/compare_cv.py runs/cv-seed0 runs/cv-seeds01 --column 'dice_tta+lcc'
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

from common import markdown_table
from segkit.evaluation.cv import PER_CASE_FILE, REPORT_FILE, VARIANTS, out_of_fold_report, out_of_fold_tables, read_cv
from segkit.errors import SegkitError
from segkit.fileio import atomic_write_text
from segkit.components.registry import get_registry


def member_row(name: str, table: pd.DataFrame) -> list[str]:
    return [name, *(f"{table[f'dice_{variant}'].mean():.3f}" for variant, _t, _p in VARIANTS),
            str(int((table["dice"] == 0).sum()))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cv_dirs", type=Path, nargs="+", help="directories written by 'segkit cv', one split")
    parser.add_argument("--out", type=Path, required=True, help="where to write the ensemble's tables")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    if len(args.cv_dirs) < 2:
        sys.exit("error: give at least two cross-validation directories to average.")
    try:
        counts = {int(read_cv(d)["folds"]) for d in args.cv_dirs}
        if len(counts) > 1:
            sys.exit(f"error: the directories hold {' and '.join(map(str, sorted(counts)))} folds; "
                     "an ensemble per fold needs cross-validations of one split.")
        members = [pd.read_csv(d / PER_CASE_FILE) for d in args.cv_dirs]
    except (SegkitError, OSError) as error:
        sys.exit(f"error: {error} (each directory needs a finished 'segkit cv', which writes {PER_CASE_FILE}).")
    folds = counts.pop()
    registry = get_registry()
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        tables = out_of_fold_tables(args.cv_dirs, folds, registry, device=args.device)
    except SegkitError as error:
        sys.exit(f"error: {error}")
    report = out_of_fold_report(tables, folds, registry, args.out)
    report["members"] = [str(d) for d in args.cv_dirs]
    atomic_write_text(args.out / REPORT_FILE, json.dumps(report, indent=2) + "\n")
    ensemble = pd.DataFrame(report["per_case"])  # the rows just written to OUT/cv-per-case.csv

    headers = ["out-of-fold per-case Dice", *(v for v, _t, _p in VARIANTS), "at 0 (chosen)"]
    rows = [member_row(str(d), table) for d, table in zip(args.cv_dirs, members, strict=True)]
    rows.append(member_row(f"ensemble of {len(args.cv_dirs)}", ensemble))
    print(f"{report['n_cases']} cases, {folds} folds; the ensemble chose {report['chosen']['variant']}")
    print(markdown_table(headers, rows))
    print(f"per-case table: {args.out / PER_CASE_FILE}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
