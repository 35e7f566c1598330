"""Out-of-fold per-patient Dice of a ``segkit cv`` result at several probability thresholds.

Each fold's last checkpoint scores the validation cases of its fold (the patients it never
trained on), as ``segkit cv`` does, once per threshold; nothing is retrained. Prints each
threshold's mean and median per-case Dice and writes the per-case table beside the report
(``DIR/cv-thresholds.csv``). The question it answers: do the fold models under-segment only
because 0.5 is the wrong cut (then a lower threshold recovers the missed lesions), or do they
give the missed lesion no probability at all?

    python benchmarks/notes/2026-11-lgg-recipe/cv_thresholds.py runs/lgg-cpu-cv --thresholds 0.2,0.3,0.4,0.5
    python benchmarks/notes/2026-11-lgg-recipe/cv_thresholds.py runs/lgg-cpu-cv --postprocess none --tta
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # benchmarks/common.py
from common import markdown_table  # noqa: E402
from segkit.evaluation.cv import fold_models, read_cv
from segkit.errors import CheckpointError
from segkit.evaluation.evaluate import build_metric_set, evaluate_predictor
from segkit.fileio import atomic_write_text
from segkit.components.registry import get_registry

OUTPUT = "cv-thresholds.csv"


def thresholds(text: str) -> list[float]:
    values = [float(part) for part in text.split(",") if part.strip()]
    if not values or not all(0 < v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"give thresholds between 0 and 1, separated by commas, got {text!r}")
    return values


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cv_dir", type=Path, help="a directory written by 'segkit cv'")
    parser.add_argument("--thresholds", type=thresholds, default=[0.2, 0.3, 0.4, 0.5])
    parser.add_argument("--postprocess", choices=["none", "lcc"], default="lcc")
    parser.add_argument("--tta", action="store_true", help="flip test-time augmentation")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)

    try:
        folds = int(read_cv(args.cv_dir)["folds"])
    except CheckpointError as error:
        sys.exit(f"error: {error}")
    registry = get_registry()
    metrics = build_metric_set(registry)
    parts: dict[float, list[pd.DataFrame]] = {t: [] for t in args.thresholds}
    for k, data, predictor in fold_models([args.cv_dir], folds, registry, device=args.device):
        predictor.tta = args.tta
        for t in args.thresholds:
            predictor.threshold = t
            table = evaluate_predictor(predictor, data, metrics, postprocess=args.postprocess).per_case_table()
            parts[t].append(table[["case", "dice"]])
        print(f"fold {k + 1}/{folds} scored", file=sys.stderr, flush=True)
    merged = {t: pd.concat(p, ignore_index=True).set_index("case")["dice"] for t, p in parts.items()}
    wide = pd.DataFrame({f"dice@{t:g}": merged[t] for t in args.thresholds})
    atomic_write_text(args.cv_dir / OUTPUT, wide.to_csv(float_format="%.6g"))
    rows = [[f"{t:g}", f"{merged[t].mean():.4f}", f"{merged[t].median():.4f}", str(int((merged[t] == 0).sum()))]
            for t in args.thresholds]
    print(f"{args.cv_dir}: out-of-fold per-case Dice, {len(wide)} cases, postprocess {args.postprocess}, "
          f"tta {args.tta}")
    print(markdown_table(["threshold", "mean", "median", "cases at 0"], rows))
    print(f"per-case table: {args.cv_dir / OUTPUT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
