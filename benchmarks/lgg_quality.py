"""Segmentation quality on the 29 LGG patients given a time budget: train with ``segkit run``, score held-out patients.

Runs the real CLI in subprocesses, exactly as a user would:

1. ``segkit run --config CONFIG --data-root ROOT --set train.max_minutes=M --out OUT --quiet [--set ...]``
   (split by patient, the config's defaults: 15% of patients held out as test);
2. ``segkit evaluate OUT --split test --json --quiet``: the best checkpoint on the
   test patients, which training never saw.

Prints the Dice of every test patient (one 3D score per patient), the per-patient
mean and median, per-image mean and global (pooled) Dice, the training and total
wall time, and the machine. Compare recipes by giving each the same ``--minutes``
on the same machine:

    python benchmarks/lgg_quality.py --config configs/lgg-cpu.toml --minutes 15
    python benchmarks/lgg_quality.py --config configs/lgg-tutorial.toml --minutes 15
    python benchmarks/lgg_quality.py --quick          # smoke run: 1 epoch, 0.2 minutes, 64x64

``--minutes`` is a limit on training time (``train.max_minutes``); a run whose epochs
finish earlier stops earlier. The run directory stays in ``--out`` for inspection.
"""

from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from common import REPO, default_lgg_root, describe_machine, machine, markdown_table


def _segkit() -> list[str]:
    script = Path(sys.executable).with_name("segkit")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "segkit"]


def _run(command: list[str], capture: bool) -> subprocess.CompletedProcess:
    print("$ " + " ".join(command), file=sys.stderr, flush=True)
    done = subprocess.run(command, stdout=subprocess.PIPE if capture else None, text=True)
    if done.returncode != 0:
        raise SystemExit(f"command failed with exit status {done.returncode}: {' '.join(command)}")
    return done


def per_patient_dice(report: dict[str, Any], run_dir: Path) -> list[tuple[str, int, float]]:
    """(case, slices, Dice) per test patient from the per-case CSV that ``segkit evaluate`` writes."""
    import pandas as pd

    path = report.get("per_case_csv")
    candidates = [Path(path)] if path else sorted((run_dir / "evaluation").glob("*.csv"))
    for candidate in candidates:
        if candidate.is_file():
            table = pd.read_csv(candidate)
            if {"case", "dice"} <= set(table.columns):
                n_images = table["n_images"] if "n_images" in table.columns else [None] * len(table)
                return [(str(c), n, float(d)) for c, n, d in zip(table["case"], n_images, table["dice"], strict=True)]
    return []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "lgg-cpu.toml")
    parser.add_argument("--minutes", type=float, default=15.0, help="training time limit (train.max_minutes)")
    parser.add_argument("--out", type=Path, help="run directory (default: runs/lgg-quality-<config>-<time>)")
    parser.add_argument("--data-root", type=Path, default=default_lgg_root(),
                        help="the kaggle_3m folder (default: <repo>/../shared/data/lgg/kaggle_3m)")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="passed on to segkit run; repeatable")
    parser.add_argument("--device", default=None, help="passed on to segkit run and segkit evaluate")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 epoch, 0.2 minutes, 64x64, batch 4")
    args = parser.parse_args()
    if not args.data_root.is_dir():
        raise SystemExit(f"LGG data not found at {args.data_root}; pass --data-root (the kaggle_3m folder).")
    sets = list(args.sets)
    if args.quick:
        args.minutes = min(args.minutes, 0.2)
        sets = ["train.epochs=1", "train.image_size=64", "train.batch_size=4", *sets]
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = args.out or Path("runs") / f"lgg-quality-{args.config.stem}-{stamp}"

    command = [*_segkit(), "run", "--config", str(args.config), "--data-root", str(args.data_root),
               "--out", str(out), "--quiet", "--set", f"train.max_minutes={args.minutes:g}"]
    for assignment in sets:
        command += ["--set", assignment]
    if args.device:
        command += ["--device", args.device]
    started = time.perf_counter()
    _run(command, capture=False)
    run_seconds = time.perf_counter() - started
    summary = json.loads((out / "summary.json").read_text()) if (out / "summary.json").is_file() else {}

    evaluate = [*_segkit(), "evaluate", str(out), "--split", "test", "--json", "--quiet"]
    if args.device:
        evaluate += ["--device", args.device]
    report = json.loads(_run(evaluate, capture=True).stdout)
    total_seconds = time.perf_counter() - started

    patients = per_patient_dice(report, out)
    print(markdown_table(["test patient", "slices", "Dice"], [[c, n, d] for c, n, d in patients]))
    per_case = report.get("per_case", {}).get("dice", {})
    rows = [
        ["per patient (3D), mean", per_case.get("mean", float("nan"))],
        ["per patient (3D), median", per_case.get("median", float("nan"))],
        ["per image, mean", report.get("per_image", {}).get("dice", {}).get("mean", float("nan"))],
        ["global (pooled)", report.get("global", {}).get("dice", float("nan"))],
    ]
    print("\n" + markdown_table(["Dice on the test patients", "value"], rows))
    print(f"\n{args.config} with --set train.max_minutes={args.minutes:g}" + "".join(f" --set {s}" for s in sets))
    print(f"{report.get('n_cases')} test patients, {report.get('n_images')} slices; run {out}")
    if summary:
        print(f"training: {summary.get('epochs_run')} epochs, stopped: {summary.get('stopped')}, "
              f"{summary.get('train_seconds')} s in training epochs, {summary.get('images_per_second')} images/s, "
              f"best epoch {summary.get('best_epoch')}, {summary.get('device')}")
    print(f"wall time: segkit run {run_seconds:.0f} s, run + evaluate {total_seconds:.0f} s")
    info = machine()
    print(describe_machine(info))
    if args.json:
        args.json.write_text(json.dumps({
            "benchmark": "lgg_quality", "config": str(args.config), "minutes": args.minutes, "sets": sets,
            "run_dir": str(out), "per_patient": [{"case": c, "slices": n, "dice": d} for c, n, d in patients],
            "report": report, "summary": summary, "run_seconds": run_seconds, "total_seconds": total_seconds,
            "machine": info,
        }, indent=2, default=str))


if __name__ == "__main__":
    main()
