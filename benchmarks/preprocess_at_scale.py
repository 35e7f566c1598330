"""Preprocessing CT-sized volumes at scale: segkit's volume cache against nnU-Net v2, same cases, same processes.

Steps, each measured command in a fresh folder (the previous output deleted first, nothing reused):

1. the synthetic CT set of ``ct_volumes.py`` (512 x 512 x 80..400 slices, anisotropic spacing,
   liver/kidney/lesion labels) is generated, or reused when already there, into ``WORK/decathlon``
   and hard-linked into nnU-Net's raw layout ``WORK/nnunet_raw/DatasetNNN_CTSynth`` (not measured);
2. nnU-Net: ``nnUNetv2_extract_fingerprint -np N`` and ``nnUNetv2_plan_experiment``, measured
   one by one; the plan's ``3d_fullres`` target spacing (mapped back from nnU-Net's transposed
   SimpleITK axis order to the files' axis order) becomes segkit's, unless ``--target-spacing``
   gives one, which nnU-Net then plans with too (``-overwrite_target_spacing``);
3. segkit: a child process reads ``WORK/decathlon`` as the ``msd`` dataset and builds
   ``VolumeCache(dataset, target_spacing=TARGET, directory=WORK/segkit_cache, progress=True,
   workers=N).build()`` (resample, CT-normalise, write memory-mapped arrays). ``workers`` is
   passed only when ``VolumeCache`` takes it (a warning says when it does not: then one process);
4. nnU-Net: ``nnUNetv2_preprocess -d ID -c 3d_fullres -np N`` (resample, normalise, write its
   blosc2 arrays, copy the labels).

Each measured command runs under ``peak_memory.measure``: wall seconds, the peak of the summed RSS
and of the summed PSS over the command's whole process tree (PSS counts copy-on-write pages shared
by forked workers once), and the largest single-process peak (VmHWM). nnU-Net runs from its own
venv (``--nnunet-bin``) with ``nnUNet_raw``/``nnUNet_preprocessed``/``nnUNet_results`` inside
``--work`` and ``OMP_NUM_THREADS=1``, as nnU-Net expects of its workers; segkit's child gets
``OMP_NUM_THREADS=--segkit-threads`` (1), so both sides use N processes of one thread. nnU-Net's
fingerprint (which reads every case, like segkit's CT intensity pass) and planning count in its
total beside segkit's whole build; the source files are in the page cache for both (step 1 or the
fingerprint read them).

    python benchmarks/preprocess_at_scale.py --cases 20 --processes 2 [--work DIR] [--json FILE] [--csv FILE]
    python benchmarks/preprocess_at_scale.py --quick [--processes 1]    # 3 small cases: checks the script works

Prints a markdown table (tool, processes, seconds, peak tree RSS and PSS, largest process, time
nnU-Net / segkit); ``--json`` writes the machine, the cases (count, shapes, spacings, voxels,
source bytes) and every measurement; ``--csv`` one row per case: shape, spacing, and the shape
after resampling by segkit and by nnU-Net. Logs of every command go to ``WORK/logs``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
MIB = 2**20


def segkit_child(args: argparse.Namespace) -> None:
    """The measured segkit side: index the folder as the msd dataset, build the volume cache, report shapes."""
    import inspect
    import warnings

    from segkit.components import get_registry
    from segkit.data.volume_cache import VolumeCache

    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*different voxel spacings.*")  # expected: spacing varies per case
        dataset = get_registry().build("dataset", "msd", root=args.segkit_child)
    indexed = time.perf_counter()
    options: dict[str, Any] = {"target_spacing": tuple(args.target_spacing), "directory": args.cache,
                               "progress": True}
    supported = "workers" in inspect.signature(VolumeCache).parameters
    if supported:
        options["workers"] = args.processes
    else:
        print(f"warning: this segkit's VolumeCache takes no 'workers': the cache is built in one process, not "
              f"{args.processes}", file=sys.stderr, flush=True)
    cache = VolumeCache(dataset, **options).build()
    built = time.perf_counter()
    cases = {case: {"shape": list(cache.shape(case)), "spacing": list(cache.spacing(case))} for case in cache.cases}
    Path(args.report).write_text(json.dumps({
        "workers_supported": supported, "processes": args.processes if supported else 1,
        "dataset_seconds": indexed - started, "build_seconds": built - indexed, "cases": cases}, indent=1))


# nnU-Net ----------------------------------------------------------------------------------------------------------

def nnunet_env(work: Path, processes: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return env | {"nnUNet_raw": str(work / "nnunet_raw"), "nnUNet_preprocessed": str(work / "nnunet_preprocessed"),
                  "nnUNet_results": str(work / "nnunet_results"), "nnUNet_def_n_proc": str(processes),
                  "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}


def nnunet_target_spacing(plans: dict[str, Any]) -> list[float]:
    """The 3d_fullres spacing in the files' (nibabel) axis order.

    nnU-Net's plan holds it transposed (``transpose_forward``) in the SimpleITK reader's axis order,
    which is the NIfTI axis order reversed."""
    transposed = plans["configurations"]["3d_fullres"]["spacing"]
    reader_order = [transposed[i] for i in plans["transpose_backward"]]
    return [float(s) for s in reversed(reader_order)]


def to_nnunet_order(spacing: list[float]) -> list[float]:
    """A spacing in the files' axis order as nnU-Net's ``-overwrite_target_spacing`` takes it (reader order)."""
    return list(reversed(spacing))


NNUNET_SHAPES = r"""
import json, sys, pickle
from pathlib import Path
import blosc2
folder = Path(sys.argv[1])
out = {}
for path in sorted(folder.glob("*.b2nd")):
    if path.name.endswith("_seg.b2nd"):
        continue
    out[path.name[:-len(".b2nd")]] = list(blosc2.open(urlpath=str(path), mode="r").shape)
print(json.dumps(out))
"""


def nnunet_shapes(python: Path, folder: Path, plans: dict[str, Any]) -> dict[str, list[int]]:
    """Each case's shape after nnU-Net's preprocessing, in the files' axis order (empty when it cannot be read)."""
    done = subprocess.run([str(python), "-c", NNUNET_SHAPES, str(folder)], capture_output=True, text=True)
    if done.returncode:
        print(f"note: could not read nnU-Net's preprocessed shapes: {done.stderr.strip()[-300:]}", file=sys.stderr)
        return {}
    back = plans["transpose_backward"]
    return {case: list(reversed([shape[1:][i] for i in back])) for case, shape in json.loads(done.stdout).items()}


# The measurements -------------------------------------------------------------------------------------------------

def run_measured(name: str, command: list[str], env: dict[str, str], logs: Path) -> dict[str, Any]:
    from peak_memory import measure

    print(f"{name}: {' '.join(Path(c).name if i == 0 else c for i, c in enumerate(map(str, command)))[:160]}",
          flush=True)
    log = logs / f"{name}.log"
    result = measure(command, env=env, log=log)
    if result["returncode"] != 0:
        tail = log.read_text(errors="replace")[-3000:]
        raise SystemExit(f"error: {name} failed (exit {result['returncode']}); the end of {log}:\n{tail}")
    print(f"  {result['seconds']:.1f} s, peak tree RSS {result['peak_tree_rss_bytes'] / MIB:.0f} MiB, "
          f"PSS {result['peak_tree_pss_bytes'] / MIB:.0f} MiB, largest process "
          f"{result['peak_process_hwm_bytes'] / MIB:.0f} MiB", flush=True)
    return result


def fresh(path: Path) -> None:
    """Delete ``path`` (a folder or file) so the next measured run reuses nothing."""
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", type=int, default=20)
    parser.add_argument("--processes", type=int, default=2, help="worker processes of each tool (N)")
    parser.add_argument("--work", type=Path, help="where data, caches and logs go (default: runs/preprocess-at-scale"
                                                  "[-quick] in the repository)")
    parser.add_argument("--seed", type=int, default=0, help="the generator's seed")
    parser.add_argument("--dataset-id", type=int, default=501, help="nnU-Net's dataset id (inside --work)")
    parser.add_argument("--target-spacing", type=float, nargs=3, metavar=("X", "Y", "Z"),
                        help="mm, the files' axis order (slices last); default: nnU-Net's 3d_fullres plan's")
    parser.add_argument("--segkit-threads", type=int, default=1, help="OMP_NUM_THREADS of segkit's processes")
    parser.add_argument("--nnunet-bin", type=Path, default=Path("/work/nnunet-venv/bin"),
                        help="the bin folder of a venv with nnunetv2 (its nnUNetv2_* scripts and python)")
    parser.add_argument("--quick", action="store_true", help="3 small cases (96x96 by 20..40 slices)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--csv", type=Path, help="write the per-case table here")
    parser.add_argument("--segkit-child", help=argparse.SUPPRESS)
    parser.add_argument("--cache", help=argparse.SUPPRESS)
    parser.add_argument("--report", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.segkit_child:
        segkit_child(args)
        return 0
    if args.quick:
        args.cases = 3
    sys.path.insert(0, str(HERE))
    from common import REPO, describe_machine, machine, markdown_table
    import ct_volumes

    work = (args.work or REPO / "runs" / f"preprocess-at-scale{'-quick' if args.quick else ''}").resolve()
    logs = work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    for tool in ("nnUNetv2_extract_fingerprint", "nnUNetv2_plan_experiment", "nnUNetv2_preprocess", "python"):
        if not (args.nnunet_bin / tool).exists():
            raise SystemExit(f"error: no {args.nnunet_bin / tool}: give --nnunet-bin, the bin folder of a venv with "
                             "nnunetv2 (python3 -m venv V && V/bin/pip install nnunetv2)")

    # 1. the data (generated once, reused afterwards)
    decathlon, raw = work / "decathlon", work / "nnunet_raw"
    print(f"data: {args.cases} synthetic CT cases in {decathlon} (reused when present)", flush=True)
    generated = ct_volumes.generate(decathlon, args.cases, args.seed, args.quick, nnunet_raw=raw,
                                    dataset_id=args.dataset_id)
    dataset_name = ct_volumes.nnunet_folder(raw, args.dataset_id).name
    cases = generated["cases"]

    # 2. nnU-Net: fingerprint and plan (fresh preprocessed folder)
    env = nnunet_env(work, args.processes)
    preprocessed = work / "nnunet_preprocessed" / dataset_name
    fresh(preprocessed)
    (work / "nnunet_results").mkdir(exist_ok=True)
    measured: dict[str, dict[str, Any]] = {}
    bin_ = args.nnunet_bin
    measured["nnunet_fingerprint"] = run_measured(
        "nnunet_fingerprint", [bin_ / "nnUNetv2_extract_fingerprint", "-d", str(args.dataset_id),
                               "-np", str(args.processes), "--clean"], env, logs)
    plan_command = [bin_ / "nnUNetv2_plan_experiment", "-d", str(args.dataset_id)]
    if args.target_spacing:
        plan_command += ["-overwrite_target_spacing", *map(str, to_nnunet_order(args.target_spacing))]
    measured["nnunet_plan"] = run_measured("nnunet_plan", plan_command, env, logs)
    plans = json.loads((preprocessed / "nnUNetPlans.json").read_text())
    if "3d_fullres" not in plans["configurations"]:
        raise SystemExit(f"error: nnU-Net planned no 3d_fullres configuration ({', '.join(plans['configurations'])})")
    nnunet_spacing = nnunet_target_spacing(plans)
    target = list(args.target_spacing) if args.target_spacing else nnunet_spacing
    print(f"target spacing (files' axis order, mm): {' x '.join(f'{s:.4g}' for s in target)}"
          f"{'' if args.target_spacing else ' (nnU-Net 3d_fullres)'}", flush=True)

    # 3. segkit: the volume cache, in a fresh folder
    cache = work / "segkit_cache"
    fresh(cache)
    report = work / "segkit_report.json"
    fresh(report)
    segkit_env = dict(os.environ, XDG_CACHE_HOME=str(work / "xdg"), OMP_NUM_THREADS=str(args.segkit_threads),
                      MKL_NUM_THREADS=str(args.segkit_threads), OPENBLAS_NUM_THREADS=str(args.segkit_threads),
                      PYTHONPATH=os.pathsep.join([str(REPO / "toolkit"), str(REPO / "plugins"),
                                                  os.environ.get("PYTHONPATH", "")]))
    measured["segkit"] = run_measured(
        "segkit", [sys.executable, __file__, "--segkit-child", str(decathlon), "--cache", str(cache),
                   "--report", str(report), "--processes", str(args.processes), "--target-spacing", *map(str, target)],
        segkit_env, logs)
    segkit = json.loads(report.read_text())
    if not segkit["workers_supported"]:
        print(f"warning: segkit's VolumeCache has no 'workers' yet: segkit ran in 1 process, nnU-Net in "
              f"{args.processes}", flush=True)

    # 4. nnU-Net: preprocess 3d_fullres (fresh output folders)
    fresh(preprocessed / plans["configurations"]["3d_fullres"].get("data_identifier", "nnUNetPlans_3d_fullres"))
    fresh(preprocessed / "gt_segmentations")
    measured["nnunet_preprocess"] = run_measured(
        "nnunet_preprocess", [bin_ / "nnUNetv2_preprocess", "-d", str(args.dataset_id), "-c", "3d_fullres",
                              "-np", str(args.processes)], env, logs)
    nn_shapes = nnunet_shapes(bin_ / "python", preprocessed / plans["configurations"]["3d_fullres"].get(
        "data_identifier", "nnUNetPlans_3d_fullres"), plans)

    # the record
    stages = [measured[k] for k in ("nnunet_fingerprint", "nnunet_plan", "nnunet_preprocess")]
    measured["nnunet_total"] = {
        "seconds": sum(s["seconds"] for s in stages),
        **{k: max(s[k] for s in stages) for k in ("peak_tree_rss_bytes", "peak_tree_pss_bytes",
                                                  "peak_process_hwm_bytes")}}
    processes = {"segkit": segkit["processes"], "nnunet_fingerprint": args.processes, "nnunet_plan": 1,
                 "nnunet_preprocess": args.processes, "nnunet_total": args.processes}
    labels = {"segkit": "segkit VolumeCache.build", "nnunet_fingerprint": "nnU-Net fingerprint",
              "nnunet_plan": "nnU-Net plan", "nnunet_preprocess": "nnU-Net preprocess 3d_fullres",
              "nnunet_total": "nnU-Net total"}
    base = measured["segkit"]["seconds"]
    rows = [[labels[k], processes[k], m["seconds"], m["peak_tree_rss_bytes"] / MIB, m["peak_tree_pss_bytes"] / MIB,
             m["peak_process_hwm_bytes"] / MIB, None if k == "segkit" else m["seconds"] / base]
            for k, m in ((k, measured[k]) for k in labels)]  # segkit first, nnU-Net's stages in their order
    shapes = [r["shape"] for r in cases.values()]
    voxels = sum(int(n[0]) * int(n[1]) * int(n[2]) for n in shapes)
    source_bytes = sum((decathlon / sub / f"{name}.nii.gz").stat().st_size for name in cases
                       for sub in ("imagesTr", "labelsTr"))
    print()
    print(markdown_table(["tool", "processes", "seconds", "peak tree RSS MiB", "peak tree PSS MiB",
                          "largest process MiB", "time nnU-Net / segkit"], rows))
    slices = [s[2] for s in shapes]
    print(f"\n{len(cases)} cases, {voxels / 1e6:.1f} M voxels ({voxels * 2 / 2**30:.2f} GiB as int16), "
          f"{source_bytes / 2**30:.3f} GiB of .nii.gz; slices {min(slices)}..{max(slices)}; "
          f"target spacing {' x '.join(f'{s:.4g}' for s in target)} mm")
    how = f"workers={args.processes}" if segkit["workers_supported"] else "no workers option: 1 process"
    print(f"segkit: {segkit['dataset_seconds']:.1f} s indexing the dataset, {segkit['build_seconds']:.1f} s building "
          f"the cache ({how}, {args.segkit_threads} thread(s) each); nnU-Net: OMP_NUM_THREADS=1, -np {args.processes}")
    seen = ", ".join(f"{labels[k]} {measured[k]['max_processes']}" for k in ("segkit", "nnunet_fingerprint",
                                                                            "nnunet_preprocess"))
    print(f"most processes alive at once (the command included): {seen}")
    for line in (logs / "segkit.log").read_text(errors="replace").splitlines():
        if "worker" in line and ("not" in line or "this process" in line):
            print(f"segkit said: {line.strip()}")
    print(describe_machine(info := machine()))

    per_case = []
    for name, record in cases.items():
        per_case.append({"case": name, "shape": "x".join(map(str, record["shape"])),
                         "spacing": " x ".join(f"{s:g}" for s in record["spacing"]),
                         "segkit_resampled_shape": "x".join(map(str, segkit["cases"].get(name, {}).get("shape", []))),
                         "nnunet_resampled_shape": "x".join(map(str, nn_shapes.get(name, [])))})
    if args.csv:
        with open(args.csv, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(per_case[0]))
            writer.writeheader()
            writer.writerows(per_case)
    if args.json:
        args.json.write_text(json.dumps({
            "machine": info, "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                                          if k not in ("segkit_child", "cache", "report")} | {"work": str(work)},
            "target_spacing": target, "nnunet_target_spacing": nnunet_spacing,
            "cases": {"count": len(cases), "shapes": shapes, "spacings": [r["spacing"] for r in cases.values()],
                      "total_voxels": voxels, "total_source_bytes": source_bytes, "per_case": per_case},
            "segkit": {"workers_supported": segkit["workers_supported"], "processes": segkit["processes"],
                       "threads": args.segkit_threads, "dataset_seconds": segkit["dataset_seconds"],
                       "build_seconds": segkit["build_seconds"]},
            "measured": {k: {**v, "processes": processes[k]} for k, v in measured.items()},
            "ratio_time_nnunet_over_segkit": measured["nnunet_total"]["seconds"] / base,
        }, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
