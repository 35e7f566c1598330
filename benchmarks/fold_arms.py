"""What helps at few epochs? Plan variants ("arms") compared on one fold of a benchmark's training side.

A recipe is chosen the way nnU-Net chooses one: by cross-validation over the training cases, never the
held-out ones. This script is that fold, for any change to a plan that ``segkit run --set`` can make:

1. the benchmark's training side of DATASET (any_dataset_sets.py's fixed split; its held-out cases are
   never read) is cut once more: the 20% of cases with the smallest sha256 of ``"size-rule/<case>"`` are
   this fold's validation cases, the rest its training cases (one fold of five);
2. ``segkit plan`` on the fold's training cases, ``--minutes M`` (once; the plan is kept);
3. for each ``--arm NAME[:KEY=VALUE,...]``: ``segkit run --config plan.toml --set KEY=VALUE ...``, the plan
   otherwise unedited (the run re-plans its epochs from the first one, so each arm trains the same
   minutes), then ``segkit evaluate`` on the fold's validation cases. The arm named ``planned`` (no
   settings) is the plan as written and the reference;
4. one row per case and arm (Dice per image for folder sets, per patient for LGG), and for each arm the
   paired difference from the reference with a bootstrap 95% interval over the cases.

    .venv/bin/python benchmarks/fold_arms.py kvasir --arm planned --arm all-train:split.test_fraction=0

Writes ``benchmarks/results/fold-arms/<dataset>.csv`` (case, arm, dice, tp, fp, fn) and
``--work/<dataset>/fold-arms.json``; prints a markdown table. Steps whose output exists are skipped, so it
resumes (an arm's folder is ``--work/<dataset>/arm-NAME``). Each arm is limited by wall-clock minutes: run
it on a quiet machine, one arm at a time. size_rule_cv.py is this script with one arm per image size.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from any_dataset import read_truth, segkit, segkit_rows
from any_dataset_sets import SETS, BenchmarkSet, fixed_split, hash_split, make_view
from common import REPO, describe_machine, markdown_table


@dataclass(frozen=True)
class Arm:
    """A plan variant: its name (its folder is ``arm-NAME``) and the ``--set`` options it runs with."""

    name: str
    settings: tuple[str, ...] = ()
    folder: str = ""

    @classmethod
    def parse(cls, text: str) -> Arm:
        """``NAME`` or ``NAME:KEY=VALUE,KEY=VALUE``; a value may hold commas (``KEY=[1,2]``): the options
        split only at a comma followed by ``KEY=``."""
        name, _, rest = text.partition(":")
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
            raise ValueError(f"arm name {name!r}: letters, digits, '.', '_' and '-' only")
        settings = tuple(part for part in re.split(r",(?=[A-Za-z_][\w.]*=)", rest) if part)
        bad = [part for part in settings if "=" not in part]
        if bad:
            raise ValueError(f"arm {name}: {bad[0]!r} is not KEY=VALUE")
        return cls(name, settings)

    @property
    def path_name(self) -> str:
        return self.folder or f"arm-{self.name}"


@dataclass(frozen=True)
class Fold:
    """The fold's cases, views of them, the plan made on its training cases and the validation truth."""

    spec: BenchmarkSet
    work: Path
    train: list[str]
    val: list[str]
    train_view: Path
    val_view: Path
    plan: Path
    truth: dict


def prepare_fold(spec: BenchmarkSet, root: Path, work: Path, minutes: float) -> Fold:
    """Cut the training side into the fold, make the views and (once) the plan."""
    work.mkdir(parents=True, exist_ok=True)
    training_side, _ = fixed_split(spec, root)
    fold_train, fold_val = hash_split(training_side, "size-rule")
    print(f"{spec.key}: {len(fold_train)} training and {len(fold_val)} validation {spec.unit}s of the training side",
          flush=True)
    train_view = make_view(spec, root, fold_train, work / "view-train")
    val_view = make_view(spec, root, fold_val, work / "view-val")
    plan = work / "plan" / "plan.toml"
    if not plan.is_file():
        print(f"  segkit plan ({minutes:g} minutes)", flush=True)
        ok, out = segkit("plan", "--dataset", spec.dataset, "--data-root", str(train_view), *spec.set_options(),
                         "--minutes", str(minutes), "--out", str(plan.parent), "--overwrite", "--quiet",
                         log=work / "plan.log")
        if not ok:
            sys.exit(f"error: segkit plan failed: {out}")
    return Fold(spec, work, fold_train, fold_val, train_view, val_view, plan, read_truth(spec, root, fold_val))


def run_arm(arm: Arm, fold: Fold) -> dict:
    """Train and score one arm; returns the evaluate report and the run's summary."""
    folder = fold.work / arm.path_name
    folder.mkdir(exist_ok=True)
    run_dir = folder / "run"
    if not (run_dir / "summary.json").is_file():
        if run_dir.exists():
            sys.exit(f"error: {run_dir} holds an unfinished run; move it aside and run again")
        print(f"  segkit run, arm {arm.name} {' '.join(arm.settings)}", flush=True)
        options = [word for setting in arm.settings for word in ("--set", setting)]
        ok, out = segkit("run", "--config", str(fold.plan), *options, "--data-root", str(fold.train_view),
                         "--out", str(run_dir), "--quiet", log=folder / "run.log")
        if not ok:
            sys.exit(f"error: the run of arm {arm.name} failed: {out}")
    report_path = folder / "evaluate.json"
    if not report_path.is_file():
        print(f"  segkit evaluate, arm {arm.name}", flush=True)
        ok, out = segkit("evaluate", str(run_dir), "--data-root", str(fold.val_view), "--json", "--quiet",
                         "--device", "cpu", log=folder / "evaluate.log")
        if not ok:
            sys.exit(f"error: evaluating arm {arm.name} failed: {out}")
        report_path.write_text(out)
    return {"report": json.loads(report_path.read_text()),
            "summary": json.loads((run_dir / "summary.json").read_text())}


def compare_arms(fold: Fold, arms: list[Arm], reference: str) -> tuple[pd.DataFrame, dict, list[list]]:
    """Run every arm; the per-case table (column ``arm``), each arm's figures and the markdown rows."""
    rows, figures = [], {}
    for arm in arms:
        result = run_arm(arm, fold)
        found, differ = segkit_rows(fold.spec, result["report"], fold.val, fold.truth)
        if differ:
            sys.exit(f"error: segkit's truth differs from the files' in arm {arm.name}: {differ[0]}")
        rows += [{**row, "arm": arm.name} for row in found]
        figures[arm.name] = {"settings": list(arm.settings), "epochs_run": result["summary"].get("epochs_run"),
                             "train_seconds": result["summary"].get("train_seconds"),
                             "per_image_dice": result["report"]["per_image"]["dice"]["mean"]}
    table = pd.DataFrame(rows)[["case", "arm", "dice", "tp", "fp", "fn"]]
    from segkit.evaluation.cv import bootstrap_interval

    wide = table.pivot(index="case", columns="arm", values="dice")
    lines = []
    for arm in arms:
        change = (wide[arm.name] - wide[reference]).tolist()
        low, high = bootstrap_interval(change) if arm.name != reference else (0.0, 0.0)
        f = figures[arm.name]
        f.update(dice=float(wide[arm.name].mean()), median=float(wide[arm.name].median()),
                 minus_reference=float(np.mean(change)), interval95=[low, high],
                 better=int(sum(c > 0 for c in change)), worse=int(sum(c < 0 for c in change)))
        lines.append([arm.name, " ".join(arm.settings) or "(the plan)", f["epochs_run"],
                      f"{f['train_seconds'] / 60:.1f}" if f["train_seconds"] else "", f"{f['dice']:.4f}",
                      f"{f['median']:.3f}", f"{f['per_image_dice']:.4f}", "" if arm.name == reference else
                      f"{f['minus_reference']:+.4f} ({low:+.3f} to {high:+.3f}); {f['better']} better, {f['worse']} worse"])
    return table, figures, lines


def table_header(unit: str, reference: str) -> list[str]:
    return ["arm", "settings", "epochs", "minutes trained", f"mean Dice per {unit}", "median", "per image (slice)",
            f"minus {reference} (95% CI)"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", choices=sorted(SETS))
    parser.add_argument("--arm", dest="arms", action="append", required=True,
                        help="NAME or NAME:KEY=VALUE,... (segkit run --set options); 'planned' is the plan itself")
    parser.add_argument("--minutes", type=float, default=15.0)
    parser.add_argument("--root", type=Path, help="where the dataset lives, if not at its default")
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "size-rule")
    args = parser.parse_args(argv)
    try:
        arms = [Arm.parse(text) for text in args.arms]
    except ValueError as error:
        parser.error(str(error))
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    spec = SETS[args.dataset]
    fold = prepare_fold(spec, (args.root or spec.root).resolve(), (args.work / spec.key).resolve(), args.minutes)
    planned_size = tomllib.loads(fold.plan.read_text())["train"].get("image_size")
    # size_rule_cv.py has already trained the plan as it is (its size-S folder): reuse that run, not 15 more minutes
    arms = [Arm("planned", (), f"size-{planned_size}") if a.name == "planned" and
            (fold.work / f"size-{planned_size}" / "run" / "summary.json").is_file() else a for a in arms]
    reference = "planned" if any(a.name == "planned" for a in arms) else arms[0].name
    table, figures, lines = compare_arms(fold, arms, reference)
    results = REPO / "benchmarks" / "results" / "fold-arms"
    results.mkdir(parents=True, exist_ok=True)
    table.to_csv(results / f"{spec.key}.csv", index=False, float_format="%.6g")
    summary = {"dataset": spec.key, "minutes": args.minutes, "fold_train": len(fold.train), "fold_val": len(fold.val),
               "reference": reference, "arms": figures, "machine": describe_machine()}
    (fold.work / "fold-arms.json").write_text(json.dumps(summary, indent=1, default=float))
    (results / f"{spec.key}-summary.json").write_text(json.dumps(summary, indent=1, default=float))
    print()
    print(markdown_table(table_header(spec.unit, reference), lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
