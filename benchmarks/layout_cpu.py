"""Channels-first against channels-last training on this CPU, at the steps segkit plan chose for each dataset.

For each dataset of any_dataset.py, the step its plan chose (the planner's 2D model, the planned image
size, batch and input channels; :func:`planned_steps`, from docs/benchmarks/any-dataset.md) is timed in
both memory layouts (``train.channels_last`` false and ``"always"``) by the planner's own timing
(``segkit.planning.timing.time_training_steps``), in rounds of alternating order as the planner times its
batch candidates (``interleaved_timings``), and the epoch of a ``segkit run`` of it is estimated as the
planner estimates it (``epoch_2d``). The question it answers: should ``segkit plan`` train channels-last on
a CPU? The steps run on random inputs, as the
planner's do; the dataset supplies the labels (binary or multiclass) and the channels. Kvasir-SEG, LGG
and the hippocampus are read from ../shared; PH2 and HC18, when their rebuilt copies are absent, are
stood in for by the synthetic dataset with the model's input channels set as their plans had them
(timing does not read the images).

    .venv/bin/python benchmarks/layout_cpu.py                  # all five, 4 rounds of 3 s per layout
    .venv/bin/python benchmarks/layout_cpu.py --quick          # 1 round of 0.2 s each: checks the plumbing

Prints one markdown row per dataset: seconds per training step and per validation forward in each
layout and the epoch speed-up of channels-last; writes
``benchmarks/results/layout-cpu/layout.csv`` (``--quick``: ``runs/layout-cpu-quick/``). Run it on a quiet
machine.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
from dataclasses import dataclass

from any_dataset_sets import SETS
from common import REPO, describe_machine, markdown_table

sys.path.insert(0, str(REPO / "plugins"))

RESULTS = REPO / "benchmarks" / "results" / "layout-cpu"


@dataclass(frozen=True)
class PlannedStep:
    """The training step a dataset's plan chose: image size (0: native), batch, input channels, items."""

    key: str
    side: int
    shape: tuple[int, int]
    batch: int
    channels: int
    items: int  # the training items the plan saw (its epoch estimate's count)
    dataset: dict
    mode: str = "binary"


def planned_steps() -> dict[str, PlannedStep]:
    """The steps of the plans in docs/benchmarks/any-dataset.md (2D plans on a CPU, 15 minutes)."""
    kvasir, lgg, hippo = SETS["kvasir"], SETS["lgg"], SETS["hippocampus"]
    stand_in = {"name": "synthetic", "count": 16, "size": 64}
    ph2 = SETS["ph2"].root if SETS["ph2"].root.exists() else None
    hc18 = SETS["hc18"].root if SETS["hc18"].root.exists() else None
    return {step.key: step for step in (
        PlannedStep("kvasir", 128, (128, 128), 8, 3, 880, {"name": "folder", "root": str(kvasir.root)}),
        PlannedStep("ph2", 384, (384, 384), 2, 3, 160,
                    {"name": "folder", "root": str(ph2), **SETS["ph2"].params} if ph2 else stand_in),
        PlannedStep("hc18", 192, (192, 192), 7, 1, 879,
                    {"name": "folder", "root": str(hc18), **SETS["hc18"].params} if hc18 else stand_in),
        PlannedStep("lgg", 128, (128, 128), 8, 9, 871, {"name": "lgg", "root": str(lgg.root), "context": 1}),
        PlannedStep("hippocampus", 0, (48, 64), 32, 3, 5575,
                    {"name": "msd", "root": str(hippo.root), "context": 1}, "multiclass"),
    )}


def document(step: PlannedStep) -> dict:
    """The run configuration the plan's step is timed as (the planner's own 2D model)."""
    from segkit_builtins.planners.default import MODEL_2D

    binary = step.mode == "binary"
    return {"dataset": step.dataset, "task": {"mode": step.mode}, "loss": {"name": "bce_dice" if binary else "ce_dice"},
            "model": {**MODEL_2D, "in_channels": step.channels},
            "train": {"device": "cpu", "image_size": step.side, "batch_size": step.batch}}


def measure(step: PlannedStep, rounds: int, seconds: float) -> dict:
    """Both layouts' timings of ``step``, interleaved; one row of the results."""
    from segkit.components.registry import get_registry
    from segkit.planning.timing import time_training_steps
    from segkit_builtins.planners.cpu_batch import interleaved_timings
    from segkit_builtins.planners.epoch_time import epoch_2d

    registry = get_registry()
    base = document(step)
    params = {k: v for k, v in base["dataset"].items() if k != "name"}
    dataset = registry.build("dataset", base["dataset"]["name"], **params)

    def time_layout(setting: bool | str):
        timed = {**base, "train": {**base["train"], "channels_last": setting}}
        return time_training_steps(timed, dataset, registry, "cpu", step.batch, step.shape, seconds)

    first, last = interleaved_timings(time_layout, [False, "always"], rounds)
    return {"dataset": step.key, "shape": "x".join(map(str, step.shape)), "batch": step.batch,
            "channels": step.channels, "data": base["dataset"]["name"],
            "step_first_s": round(first.seconds_per_step, 4), "step_last_s": round(last.seconds_per_step, 4),
            "forward_first_s": round(first.seconds_per_forward, 4), "forward_last_s": round(last.seconds_per_forward, 4),
            "epoch_first_s": round(epoch_2d(step.items, first), 1), "epoch_last_s": round(epoch_2d(step.items, last), 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    steps = planned_steps()
    parser.add_argument("datasets", nargs="*", metavar="DATASET",
                        help=f"any of: {', '.join(steps)} (default: all)")
    parser.add_argument("--rounds", type=int, default=4, help="timings per layout, in alternating order")
    parser.add_argument("--seconds", type=float, default=3.0, help="seconds of steps per timing")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="1 round of 0.2 s per layout: checks the plumbing only")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.datasets) - set(steps))
    if unknown:
        parser.error(f"unknown dataset(s) {', '.join(unknown)}; known: {', '.join(steps)}")
    results = REPO / "runs" / "layout-cpu-quick" if args.quick else RESULTS
    if args.quick:
        args.rounds, args.seconds = 1, 0.2
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import torch

    torch.set_num_threads(args.threads)
    rows = []
    for key in args.datasets or list(steps):
        print(f"{key}: timing both layouts ({args.rounds} rounds of {args.seconds:g} s)", flush=True)
        rows.append(measure(steps[key], args.rounds, args.seconds))
    results.mkdir(parents=True, exist_ok=True)
    with (results / "layout.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print()
    print(markdown_table(
        ["dataset", "planned step", "data", "step s (first / last)", "forward s (first / last)", "epoch s (first / last)",
         "epoch speed-up of channels-last"],
        [[r["dataset"], f"batch {r['batch']} of {r['channels']}x{r['shape']}", r["data"],
          f"{r['step_first_s']:.3f} / {r['step_last_s']:.3f}", f"{r['forward_first_s']:.3f} / {r['forward_last_s']:.3f}",
          f"{r['epoch_first_s']:.0f} / {r['epoch_last_s']:.0f}", f"{r['epoch_first_s'] / r['epoch_last_s']:.2f}x"]
         for r in rows]))
    print(f"\n{describe_machine()}" + ("  (--quick: the numbers mean nothing)" if args.quick else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
