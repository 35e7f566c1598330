"""Does `segkit plan` plan the same CPU batch when it is made again on the same machine?

The planner's CPU batch rule times the candidate batches (the pixel rule's batch and its halvings)
and plans the smallest whose images per second reach a share of the best (80%; 90% until
2026-12-08). Where two candidates sit near that line, timing noise decides. This makes the plan
``--repeats`` times for each ``planner.timing_rounds`` asked (1: each candidate timed once, smallest
to largest, the rule before 2026-12-05; 2: twice, there and back), alternating the settings so that a
drift of the machine falls on both, and prints each plan's measured images per second and its batch, then per setting how often
each batch was planned and each candidate's images/s as a share of the plan's best (mean and
standard deviation over the plans): the rule plans the smallest candidate at the share or more.

    python benchmarks/plan_batch_stability.py --dataset msd --data-root ../shared/data/hippocampus \\
        [--rounds 1 2] [--repeats 6] [--minutes 15] [--json FILE]

Run it on a quiet machine: the timings are the measurement.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path

from common import describe_machine, machine, markdown_table

RATES = re.compile(r"(\d+): (\d+(?:\.\d+)?)")


def batch_setting(plan) -> tuple[int, str]:
    """The planned ``train.batch_size`` and its reason."""
    for setting in plan.settings:
        if (setting.section, setting.key) == ("train", "batch_size"):
            return int(setting.value), setting.reason
    raise SystemExit("the plan sets no train.batch_size")


def measured_rates(reason: str) -> dict[int, float]:
    """Batch -> images/s, as the batch's reason quotes them (``batch: images/s 8: 67, 16: 71, ...``)."""
    quoted = reason.partition("images/s ")[2].partition(")")[0]
    return {int(batch): float(rate) for batch, rate in RATES.findall(quoted)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="msd")
    parser.add_argument("--data-root")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--rounds", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=6)
    parser.add_argument("--minutes", type=float, default=15.0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    from segkit.cli.plan import plan_parameters
    from segkit.components.registry import get_registry
    from segkit.planning.make import make_plan

    registry = get_registry()
    dataset_params, planner_params = plan_parameters(registry, args.dataset, args.data_root, tuple(args.sets))
    plans = []
    with tempfile.TemporaryDirectory() as scratch:
        for repeat in range(args.repeats):
            for rounds in args.rounds if repeat % 2 == 0 else list(reversed(args.rounds)):
                started = time.perf_counter()
                outcome = make_plan(registry, args.dataset, dataset_params, "default",
                                    {**planner_params, "timing_rounds": rounds}, args.minutes, "cpu",
                                    Path(scratch) / f"plan-{repeat}-{rounds}")
                batch, reason = batch_setting(outcome.plan)
                rates = measured_rates(reason)
                plans.append({"rounds": rounds, "repeat": repeat, "batch": batch, "rates": rates,
                              "plan_seconds": round(time.perf_counter() - started, 1)})
                print(f"rounds {rounds}, plan {repeat + 1}: batch {batch}; images/s "
                      f"{', '.join(f'{b}: {r:g}' for b, r in rates.items())} ({plans[-1]['plan_seconds']} s)", flush=True)

    candidates = sorted({b for p in plans for b in p["rates"]})
    rows, summary = [], {}
    for rounds in args.rounds:
        mine = [p for p in plans if p["rounds"] == rounds]
        batches = Counter(p["batch"] for p in mine)
        shares = {b: [p["rates"][b] / max(p["rates"].values()) for p in mine if b in p["rates"]] for b in candidates}
        seconds = statistics.median(p["plan_seconds"] for p in mine)
        rows.append([rounds, len(mine), ", ".join(f"{b}: {n}" for b, n in sorted(batches.items())),
                     *[f"{statistics.mean(v):.3f} (sd {statistics.stdev(v):.3f})" if len(v) > 1 else "" for v in
                       shares.values()], seconds])
        summary[str(rounds)] = {"plans": len(mine), "batches": dict(batches), "share_of_best": shares,
                                "median_plan_seconds": seconds}
    print()
    print(markdown_table(["timing rounds", "plans", "planned batch: times",
                          *[f"{b}: share of best images/s" for b in candidates], "median plan s"], rows))
    print(describe_machine())
    if args.json:
        args.json.write_text(json.dumps({"machine": machine(), "plans": plans, "summary": summary}, indent=2) + "\n")


if __name__ == "__main__":
    main()
