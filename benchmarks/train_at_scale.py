"""A 3D run on CT-sized volumes at 5 and 20 cases: peak memory must not grow with the cases, and the model's step,
not the data, must bound training.

The cases are the synthetic CT set of ``ct_volumes.py`` (512x512 by 80-400 slices, int16, anisotropic;
``--data``): for each count N a Decathlon folder of links to its first N cases (``ct_000``, the largest with
400 slices, is in both), its own dataset.json. Each count runs one whole ``segkit run`` in a fresh child
process with a fresh volume cache (``XDG_CACHE_HOME`` in the work folder): the cache built by
``train.preprocess_workers`` forked workers at ``--target-spacing``, ``--epochs`` epoch(s) of a fixed
``--patches`` patches (the same training work at both counts), and validation of every case whole by sliding
windows (``split.by = none``, so both counts validate the largest case: the validation peak is the same case's,
and what could grow with the cases, the dataset's index, the cache and its memory maps, the loaders, is what is
compared). Reported per count: the run's own peak (``VmHWM`` of its main process, which holds training and
validation), the process tree's peak summed RSS and PSS (the preprocessing workers included; from
``peak_memory.py``), and from the run's ``timing.csv`` the seconds per step spent waiting for data
(``train_data_seconds / train_steps``: reading patches from the memory-mapped cache, collating, moving and
augmenting them) beside the rest of the step (forward, backward, optimiser).

    python benchmarks/train_at_scale.py --data WORK/decathlon [--counts 5 20] [--target-spacing 2 2 4]
        [--patch 64 64 32] [--width 8] [--stages 4] [--patches 40] [--epochs 1] [--json FILE]
    python benchmarks/train_at_scale.py --quick     # 2 and 3 small generated cases: checks the script works
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from common import REPO, describe_machine, machine, markdown_table, proc_status_kib, segkit_in_process
from peak_memory import measure


def subset(data: Path, count: int, target: Path) -> Path:
    """A Decathlon folder of links to the first ``count`` training cases of ``data``."""
    description = json.loads((data / "dataset.json").read_text())
    chosen = description["training"][:count]
    if len(chosen) < count:
        raise SystemExit(f"{data} lists {len(chosen)} training cases; {count} asked")
    for folder in ("imagesTr", "labelsTr"):
        (target / folder).mkdir(parents=True, exist_ok=True)
    for entry in chosen:
        for key in ("image", "label"):
            link = target / entry[key]
            if not link.exists():
                os.symlink((data / entry[key]).resolve(), link)
    (target / "dataset.json").write_text(json.dumps({**description, "training": chosen, "numTraining": count}))
    return target


def child(args: argparse.Namespace) -> None:
    """One measurement: ``segkit run`` in this process; prints its peak (VmHWM) as a JSON line."""
    import segkit.cli  # noqa: F401  (imported before the first reading, as the run needs it)

    after_imports = proc_status_kib("VmHWM")
    arguments = ["run", "--dataset", "msd", "--data-root", args.child, "--model", "unet3d",
                 "--set", f"model.width={args.width}", "--set", f"model.stages={args.stages}", "--loss", "ce_dice",
                 "--set", f"train.patch_size=[{','.join(map(str, args.patch))}]",
                 "--set", f"train.target_spacing=[{','.join(map(str, args.target_spacing))}]",
                 "--set", f"train.patches_per_epoch={args.patches}", "--set", "train.foreground_fraction=0.33",
                 "--set", f"train.window_overlap={args.overlap}", "--set", f"train.preprocess_workers={args.workers}",
                 "--set", "split.by=none", "--epochs", str(args.epochs), "--batch-size", str(args.batch_size),
                 "--device", "cpu", "--quiet", "--out", args.out]
    segkit_in_process(arguments)
    print(json.dumps({"after_imports_kib": after_imports, "peak_kib": proc_status_kib("VmHWM")}))


def timing(run: Path) -> dict[str, float]:
    """The run's training seconds, steps and seconds waiting for data, summed over its epochs (timing.csv)."""
    with open(run / "timing.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    total = {key: sum(float(r[key]) for r in rows) for key in ("train_seconds", "train_steps", "train_data_seconds",
                                                                  "val_seconds")}
    steps = max(total["train_steps"], 1)
    total["data_s_per_step"] = total["train_data_seconds"] / steps
    total["compute_s_per_step"] = (total["train_seconds"] - total["train_data_seconds"]) / steps
    return total


def run_count(count: int, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    folder = subset(args.data, count, work / f"data_{count}")
    out = work / f"run_{count}"
    command = [sys.executable, __file__, "--child", str(folder), "--out", str(out), "--patch", *map(str, args.patch),
               "--target-spacing", *map(str, args.target_spacing), "--width", str(args.width), "--stages",
               str(args.stages), "--patches", str(args.patches), "--epochs", str(args.epochs), "--batch-size",
               str(args.batch_size), "--overlap", str(args.overlap), "--workers", str(args.workers)]
    env = {**os.environ, "XDG_CACHE_HOME": str(work / f"xdg_{count}"),
           "PYTHONPATH": os.pathsep.join([str(REPO / "toolkit"), str(REPO / "plugins"), os.environ.get("PYTHONPATH", "")])}
    log = work / f"run_{count}.log"
    result = measure(command, env=env, log=log)
    if result["returncode"]:
        raise SystemExit(f"the run with {count} cases failed; see {log}:\n{log.read_text()[-3000:]}")
    peak = json.loads([line for line in log.read_text().splitlines() if line.startswith("{")][-1])
    return {"cases": count, **peak, **result, **timing(out)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, help="a Decathlon folder written by ct_volumes.py")
    parser.add_argument("--counts", type=int, nargs=2, default=[5, 20])
    parser.add_argument("--target-spacing", type=float, nargs=3, default=[2.0, 2.0, 4.0])
    parser.add_argument("--patch", type=int, nargs=3, default=[64, 64, 32])
    parser.add_argument("--width", type=int, default=8, help="unet3d's first-stage features")
    parser.add_argument("--stages", type=int, default=4)
    parser.add_argument("--patches", type=int, default=40, help="patches per epoch (the same at both counts)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--overlap", type=float, default=0.25, help="the validation windows' overlap")
    parser.add_argument("--workers", type=int, default=0, help="train.preprocess_workers (0: automatic)")
    parser.add_argument("--work", type=Path, help="folder for the subsets, caches and runs (default: a temporary one)")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    with tempfile.TemporaryDirectory(prefix="segkit-train-at-scale-") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        if args.quick:
            sys.path.insert(0, str(Path(__file__).parent))
            import ct_volumes

            args.data = work / "quick"
            ct_volumes.generate(args.data, 3, 0, True)
            args.counts, args.patch, args.target_spacing, args.patches = [2, 3], [32, 32, 16], [6.0, 6.0, 6.0], 4
        if args.data is None:
            raise SystemExit("give --data (a folder ct_volumes.py wrote) or --quick")
        results = [run_count(count, args, work) for count in args.counts]
    mib = 2**20
    rows = [[r["cases"], r["peak_kib"] / 1024, r["peak_tree_rss_bytes"] / mib, r["peak_tree_pss_bytes"] / mib,
             r["seconds"], r["train_steps"], r["data_s_per_step"], r["compute_s_per_step"], r["val_seconds"]]
            for r in results]
    print(markdown_table(["cases", "run peak RSS MiB (main process)", "tree peak RSS MiB", "tree peak PSS MiB",
                          "run s (cache included)", "steps", "data s/step", "rest of step s", "validation s"], rows))
    change = results[1]["peak_kib"] / results[0]["peak_kib"] - 1
    print(f"\nrun peak RSS at {args.counts[1]} cases vs {args.counts[0]}: {change:+.1%} (goal: within 10%); data time "
          f"per step below the rest of the step: {all(r['data_s_per_step'] < r['compute_s_per_step'] for r in results)}")
    print(f"unet3d width {args.width}, {args.stages} stages, patch {'x'.join(map(str, args.patch))}, target spacing "
          f"{args.target_spacing} mm, {args.epochs} epoch(s) of {args.patches} patches, batch {args.batch_size}")
    print(describe_machine())
    if args.json:
        args.json.write_text(json.dumps({"results": results, "change": change, "machine": machine(),
                                         "settings": {k: str(v) for k, v in vars(args).items()}}, indent=1))


if __name__ == "__main__":
    main()
