"""Peak memory of the 3D data path at N and 4N cases: it must not grow with the number of cases.

For each case count a synthetic Decathlon folder is written (``--shape`` voxels, one MRI channel,
labels 0/1/2: an ellipsoid in noise, as tests/volumes.py draws them), then a fresh child process
reads it as the ``msd`` dataset, builds the volume cache (normalise, write memory-mapped arrays)
and draws one epoch of patches (``--patches-per-case`` per case, ``--patch`` voxels, batches of
``--batch-size`` through a DataLoader with 0 workers and the trainer's collate). The child reports
its peak resident memory (``VmHWM`` of /proc/self/status) after its imports and at the end; one
child per measurement, so nothing carries over. The table shows both and the change from N to
4N cases; the issue asks for less than 10%.

    python benchmarks/volume_memory.py [--cases 20] [--shape 64 64 64] [--patch 48 48 48] [--json FILE]
    python benchmarks/volume_memory.py --quick      # 3 and 12 small cases: checks the script works
    python benchmarks/volume_memory.py --training   # a whole 3D `segkit run` per measurement instead

With ``--training`` each child runs a whole 3D training run in-process (``segkit run --dataset msd``
with a small ``unet3d``, ``--patch`` patches, ``--epochs`` epochs of a fixed 40 patches, so both case
counts do the same training work; validation predicts each validation volume whole), and reports
its peak memory the same way: everything a run holds, the dataset index, the cache, the loaders,
the validation volumes and the figures included.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import REPO, describe_machine, machine, markdown_table, proc_status_kib, segkit_in_process


def write_cases(root: Path, count: int, shape: tuple[int, int, int]) -> Path:
    """A Decathlon folder of ``count`` synthetic volumes (float32 MRI-like image, uint8 labels 0/1/2, 1 mm)."""
    import nibabel as nib
    import numpy as np

    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    grid = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    training = []
    for k in range(count):
        rng = np.random.default_rng(k)
        centre = rng.uniform(-0.2, 0.2, 3)
        inside = sum(((g - c) / 0.4) ** 2 for g, c in zip(grid, centre, strict=True)) < 1
        label = np.where(inside, np.where(grid[0] < centre[0], 1, 2), 0).astype(np.uint8)
        image = (rng.normal(100.0, 10.0, shape) + 60.0 * (label > 0)).astype(np.float32)
        name = f"case_{k:03d}"
        nib.save(nib.Nifti1Image(image, np.eye(4)), root / "imagesTr" / f"{name}.nii.gz")
        nib.save(nib.Nifti1Image(label, np.eye(4)), root / "labelsTr" / f"{name}.nii.gz")
        training.append({"image": f"./imagesTr/{name}.nii.gz", "label": f"./labelsTr/{name}.nii.gz"})
    (root / "dataset.json").write_text(json.dumps({"name": "memory", "modality": {"0": "MRI"},
                                                   "labels": {"0": "background", "1": "a", "2": "b"},
                                                   "training": training}))
    return root


def child(args: argparse.Namespace) -> None:
    """One measurement: dataset, cache, one epoch of patches; prints a JSON line."""
    import torch
    from segkit.components import get_registry
    from segkit.data.patches import PatchDataset, PatchSampler
    from segkit.data.volume_cache import VolumeCache
    from segkit.train.assemble import _collate

    after_imports = proc_status_kib("VmHWM")
    started = time.perf_counter()
    dataset = get_registry().build("dataset", "msd", root=args.child)
    cache = VolumeCache(dataset, directory=args.cache, progress=False).build()
    built = time.perf_counter()
    data = PatchDataset(cache, cache.cases, PatchSampler(tuple(args.patch)),
                        patches_per_epoch=args.patches_per_case * len(cache.cases), seed=0)
    data.set_epoch(0)
    loader = torch.utils.data.DataLoader(data, batch_size=args.batch_size, shuffle=True, num_workers=0,
                                         collate_fn=_collate)
    batches = 0
    for images, masks, _ in loader:
        batches += 1
        assert images.shape[0] == masks.shape[0]
    print(json.dumps({"cases": len(cache.cases), "after_imports_kib": after_imports,
                      "peak_kib": proc_status_kib("VmHWM"),
                      "build_s": built - started, "epoch_s": time.perf_counter() - built, "batches": batches}))


def child_training(args: argparse.Namespace) -> None:
    """One measurement: a whole 3D training run on the folder; prints a JSON line."""
    import segkit.cli  # noqa: F401  (imported before the first reading, as the run needs it)

    after_imports = proc_status_kib("VmHWM")
    started = time.perf_counter()
    out = Path(args.cache) / "run"
    arguments = ["run", "--dataset", "msd", "--data-root", args.child, "--model", "unet3d", "--set", "model.width=4",
                 "--set", "model.stages=3", "--set", f"train.patch_size=[{','.join(map(str, args.patch))}]",
                 "--set", "train.patches_per_epoch=40", "--set", "train.foreground_fraction=0.33",
                 "--epochs", str(args.epochs), "--batch-size", str(args.batch_size), "--device", "cpu", "--quiet",
                 "--out", str(out)]
    segkit_in_process(arguments)
    summary = json.loads((out / "summary.json").read_text())
    print(json.dumps({"cases": args.count, "after_imports_kib": after_imports,
                      "peak_kib": proc_status_kib("VmHWM"),
                      "build_s": 0.0, "epoch_s": time.perf_counter() - started, "batches": summary["epochs_run"]}))


def measure(count: int, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    root = write_cases(work / f"data_{count}", count, tuple(args.shape))
    command = [sys.executable, __file__, "--child", str(root), "--cache", str(work / f"cache_{count}"),
               "--patch", *map(str, args.patch), "--batch-size", str(args.batch_size),
               "--patches-per-case", str(args.patches_per_case), "--count", str(count), "--epochs", str(args.epochs)]
    if args.training:
        command.append("--training")
    env = {**os.environ, "XDG_CACHE_HOME": str(work / f"xdg_{count}"), "PYTHONPATH": os.pathsep.join([str(REPO / "toolkit"), str(REPO / "plugins"),
                                                        os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode:
        raise SystemExit(f"the measurement with {count} cases failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", type=int, default=20, help="N: the smaller case count (the other is 4N)")
    parser.add_argument("--shape", type=int, nargs=3, default=[64, 64, 64])
    parser.add_argument("--patch", type=int, nargs=3, default=[48, 48, 48])
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--patches-per-case", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1, help="measurements per case count (the table: median)")
    parser.add_argument("--quick", action="store_true", help="3 and 12 cases of 24^3: checks the script works")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--training", action="store_true", help="measure a whole 3D training run (segkit run)")
    parser.add_argument("--epochs", type=int, default=2, help="epochs of each training run (--training)")
    parser.add_argument("--count", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--cache", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        (child_training if args.training else child)(args)
        return
    if args.quick:
        args.cases, args.shape, args.patch = 3, [24, 24, 24], [16, 16, 16]
    results: dict[int, list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory(prefix="segkit-volume-memory-") as tmp:
        for count in (args.cases, 4 * args.cases):
            results[count] = [measure(count, args, Path(tmp) / f"r{r}") for r in range(args.repeats)]
    rows = []
    for count, runs in results.items():
        peaks = sorted(r["peak_kib"] for r in runs)
        peak = peaks[len(peaks) // 2]
        run = next(r for r in runs if r["peak_kib"] == peak)
        rows.append([count, run["after_imports_kib"] / 1024, peak / 1024, (peak - run["after_imports_kib"]) / 1024,
                     run["build_s"], run["epoch_s"], run["batches"]])
    change = rows[1][2] / rows[0][2] - 1
    print(markdown_table(["cases", "after imports MiB", "peak MiB", "peak above imports MiB", "cache build s",
                          "run s" if args.training else "epoch s", "epochs" if args.training else "batches"], rows))
    print(f"\npeak RSS at {4 * args.cases} cases vs {args.cases}: {change:+.1%} (goal: under 10%)")
    what = (f"a whole segkit run (unet3d width 4, 3 stages, {args.epochs} epochs of 40 patches)" if args.training
            else f"{args.patches_per_case} patches per case, DataLoader with 0 workers")
    print(f"volumes {'x'.join(map(str, args.shape))}, patch {'x'.join(map(str, args.patch))}, batch "
          f"{args.batch_size}, {what}")
    print(describe_machine())
    if args.json:
        args.json.write_text(json.dumps({"results": results, "change": change, "machine": machine(),
                                         "settings": vars(args) | {"json": str(args.json)}}, indent=1, default=str))


if __name__ == "__main__":
    main()
