"""GPU training throughput of segkit's Trainer: images/s, TFLOP/s, fraction of the GPU's bf16 peak, and the loader.

For each model (default: the tutorial ``unet`` at width 64 and ``smp_unet`` with a
ResNet-34 encoder) at ``--image-size`` (256), the real
:class:`segkit.train.loop.Trainer` trains with bf16 autocast and channels_last on
batches already in GPU memory (synthetic slices, so the loader is out of the way):

1. eager, for each batch size in ``--batch-sizes`` (16 32 64 128) until one runs out
   of memory; the fastest that fits is kept;
2. ``torch.compile`` (``train.compile = true``) at that batch size.

Each measurement is ``--warmup`` untimed steps (compilation happens there), then
``--steps`` timed steps of ``Trainer.train_epoch`` (wall time, validation excluded).

FLOPs per image are counted with ``torch.utils.flop_counter.FlopCounterMode`` on one
forward+backward of one image (convolutions and matmuls; element-wise work and the
optimizer are not counted), so achieved TFLOP/s = FLOPs/image x images/s. The
fraction of peak divides by the GPU's dense bf16 peak from a small table matched on
the device name (``--peak-tflops`` overrides it).

Finally the real segkit data paths run over LGG slices when ``--data-root`` exists,
otherwise synthetic ones, for each ``--loader-presets`` preset: the worker path
(``build_data``: read, resize, albumentations per item, collate, pinned memory) with
each ``--loader-workers`` count, and the device path (``train.loader = device``: the
decoded slices on the GPU, batched augmentation there). Each is compared with the best
training images/s: does it keep up?

    python benchmarks/gpu_throughput.py --json gpu.json                    # on a GPU machine, a few minutes
    python benchmarks/gpu_throughput.py --device cpu --dry-run --json x.json   # tiny sizes: every code path

Prints a markdown table and the machine; writes everything to ``--json``.
"""

from __future__ import annotations

import argparse
import gc
import json
import re
import time
import traceback
from pathlib import Path
from typing import Any

import torch

from common import default_lgg_root, describe_machine, machine, markdown_table

# Dense (no sparsity) bf16 tensor-core peaks in TFLOP/s, matched in order on torch.cuda.get_device_name().
PEAKS: list[tuple[str, str, float]] = [
    (r"H200", "H200", 989.0),
    (r"H100.*PCIe", "H100 PCIe", 756.0),
    (r"H100", "H100 SXM", 989.0),
    (r"A100", "A100", 312.0),
    (r"\bL4\b", "L4", 121.0),
    (r"4090", "RTX 4090", 165.0),
]

MODELS: dict[str, tuple[str, dict[str, Any]]] = {
    "unet": ("unet", {"width": 64}),
    "smp_unet": ("smp_unet", {"encoder_name": "resnet34"}),
}


class SimulatedOOM(Exception):
    """Dry runs raise this for batch sizes above ``--simulate-oom-above`` to exercise the out-of-memory path."""


def peak_tflops(device_name: str, override: float | None) -> tuple[float | None, str]:
    """The dense bf16 peak and what it came from."""
    if override:
        return override, "--peak-tflops"
    for pattern, label, value in PEAKS:
        if re.search(pattern, device_name, re.IGNORECASE):
            return value, f"{label} (matched {pattern!r} in {device_name!r})"
    return None, f"unknown GPU {device_name!r}: pass --peak-tflops"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _config(model_name: str, params: dict[str, Any], batch_size: int, compile_model: bool, device: str,
            registry: Any) -> Any:
    from segkit.config import resolve_config, validate_config

    flags = {
        "model": {"name": model_name, **params},
        "loss": {"name": "bce_dice"},
        "dataset": {"name": "synthetic"},
        "train": {"batch_size": batch_size, "device": device, "amp": True, "amp_dtype": "bf16",
                  "channels_last": True, "compile": compile_model, "optimizer": "adam", "epochs": 100},
    }
    return validate_config(resolve_config(None, flags, []), registry)


def gpu_pool(size: int, count: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """``count`` synthetic slices (the segkit dataset, so images look like MRI) stacked on the device."""
    from segkit_builtins.datasets.synthetic import SyntheticDataset

    dataset = SyntheticDataset(count=count, size=size, cache=False)
    items = [dataset[i] for i in range(count)]
    images = torch.stack([image for image, _ in items]).to(device)
    masks = torch.stack([mask for _, mask in items]).to(device)
    return images, masks, dataset.cases


def _batches(pool: tuple[torch.Tensor, torch.Tensor, list[str]], batch_size: int, steps: int,
             channels_last: bool) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """``steps`` batches for the Trainer, built once from the pool (a few distinct ones, reused)."""
    images, masks, _ = pool
    count = images.shape[0]
    distinct = []
    for k in range(min(steps, 4)):
        index = (torch.arange(batch_size) + k * batch_size) % count
        x = images[index.to(images.device)]
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        distinct.append((x, masks[index.to(masks.device)], index))
    return [distinct[k % len(distinct)] for k in range(steps)]


def measure(model_key: str, batch_size: int, compile_model: bool, args: argparse.Namespace, pool: Any,
            registry: Any) -> dict[str, Any]:
    """Train ``--warmup`` then ``--steps`` steps with segkit's Trainer; images/s and peak memory."""
    from segkit.train import assemble
    from segkit.device import select_device, use_channels_last
    from segkit.train.sampling import EpochSampler

    if args.simulate_oom_above and batch_size > args.simulate_oom_above:
        raise SimulatedOOM(f"simulated: batch {batch_size} > {args.simulate_oom_above}")
    name, params = MODELS[model_key]
    config = _config(name, {"in_channels": 3, "classes": 1, **params, **args.model_params.get(model_key, {})},
                     batch_size, compile_model, args.device, registry)
    device = select_device(config.train.device)
    channels_last = use_channels_last(config.train.channels_last, device)
    warmup_batches = _batches(pool, batch_size, args.warmup, channels_last)
    timed_batches = _batches(pool, batch_size, args.steps, channels_last)
    cases = {"train": pool[2]}
    sampler = EpochSampler(len(pool[2]), 0, shuffle=True)
    trainer = assemble.build_trainer(config, registry, {"train": warmup_batches}, {"train": sampler}, cases, device,
                                     steps_per_epoch=args.steps, progress=False)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    started = time.perf_counter()
    trainer.train_epoch(0)
    warmup_seconds = time.perf_counter() - started
    trainer.loaders["train"] = timed_batches
    _sync(device)
    started = time.perf_counter()
    _, _, _, seen = trainer.train_epoch(1)
    _sync(device)
    seconds = time.perf_counter() - started
    memory = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    return {"model": model_key, "batch_size": batch_size, "compile": compile_model,
            "images_per_second": seen / seconds, "warmup_seconds": warmup_seconds, "peak_memory_gib": memory,
            "autocast": str(trainer.amp_dtype) if trainer.amp_dtype else None, "channels_last": channels_last}


def try_measure(*a: Any) -> dict[str, Any]:
    """:func:`measure`, with out-of-memory (and, for compile, any failure) recorded instead of raised."""
    model_key, batch_size, compile_model, args = a[:4]
    device = torch.device(args.device)
    outcome: dict[str, Any]
    try:
        outcome = measure(*a)
    except (torch.cuda.OutOfMemoryError, SimulatedOOM) as exc:
        outcome = {"model": model_key, "batch_size": batch_size, "compile": compile_model, "error": "out of memory",
                   "detail": str(exc).splitlines()[0] if str(exc) else ""}
    except Exception as exc:  # noqa: BLE001 - a compile failure must not lose the eager results
        if not compile_model:
            raise
        outcome = {"model": model_key, "batch_size": batch_size, "compile": compile_model,
                   "error": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
                   "detail": traceback.format_exc(limit=3)}
    _free(device)
    return outcome


def flops_per_image(model_key: str, args: argparse.Namespace, registry: Any) -> dict[str, float]:
    """Forward and forward+backward FLOPs of one image (FlopCounterMode: convolutions and matmuls).

    Counted on a batch of two (batch norm needs more than one value per channel in
    training mode) and halved.
    """
    from torch.utils.flop_counter import FlopCounterMode

    name, params = MODELS[model_key]
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = registry.build("model", name, in_channels=3, classes=1,
                           **{**params, **args.model_params.get(model_key, {})}).to(device)
    x = torch.rand(2, 3, args.image_size, args.image_size, device=device)
    with FlopCounterMode(display=False) as forward_counter:
        with torch.no_grad():
            model(x)
    with FlopCounterMode(display=False) as train_counter:
        model(x).float().mean().backward()
    result = {"forward": forward_counter.get_total_flops() / 2, "train": train_counter.get_total_flops() / 2}
    del model, x
    _free(device)
    return result


def loader_rates(args: argparse.Namespace, batch_size: int, registry: Any,
                 device: torch.device) -> tuple[str, list[dict[str, Any]]]:
    """images/s of the real segkit training data paths, 2 epochs each: the worker path for each
    ``--loader-workers`` count and the device path (``train.loader = device``), for each preset."""
    import pandas as pd

    from segkit.config import resolve_config, validate_config
    from segkit.train import assemble

    if args.data_root and Path(args.data_root).is_dir():
        dataset_spec: dict[str, Any] = {"name": "lgg", "root": str(args.data_root), "cache": True}
        source = f"LGG slices from {args.data_root}"
    else:
        dataset_spec = {"name": "synthetic", "count": args.loader_items + batch_size, "size": 256, "cache": True}
        source = f"synthetic 256x256 slices (no LGG data at {args.data_root})"
    paths = [("workers", workers) for workers in args.loader_workers] + [("device", 0)]
    results = []
    for preset in args.loader_presets:
        for path, workers in paths:
            flags = {"dataset": dataset_spec,
                     "train": {"batch_size": batch_size, "image_size": args.image_size, "augment": preset,
                               "workers": workers, "device": str(device), "loader": path}}
            config = validate_config(resolve_config(None, flags, []), registry)
            dataset = assemble.build_dataset(config, registry)
            n_train = min(args.loader_items, len(dataset) - batch_size)
            split = pd.Series(["train"] * n_train + ["val"] * (len(dataset) - n_train))
            built = time.perf_counter()
            parts = assemble.build_data(config, dataset, split, pin_memory=device.type == "cuda", loader=path,
                                        device=device)
            setup = time.perf_counter() - built
            loader, sampler = parts.loaders["train"], parts.samplers["train"]
            rates = []
            for epoch in (1, 2):
                sampler.set_epoch(epoch)
                seen, started = 0, time.perf_counter()
                for images, _masks, _indices in loader:
                    images = images.to(device, non_blocking=True)
                    seen += images.shape[0]
                _sync(device)
                rates.append(seen / (time.perf_counter() - started))
            results.append({"path": path, "workers": workers, "augment": preset, "images_per_second": rates,
                            "items": n_train, "setup_seconds": setup})
            del loader, parts, dataset
            _free(device)
    return source, results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:N; cpu only with --dry-run")
    parser.add_argument("--dry-run", action="store_true",
                        help="tiny sizes that exercise every code path (with --device cpu on a machine without GPU)")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[16, 32, 64, 128])
    parser.add_argument("--steps", type=int, default=20, help="timed steps per measurement (default 20)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first, compilation included (default 5)")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile measurements")
    parser.add_argument("--cudnn-benchmark", action="store_true",
                        help="set torch.backends.cudnn.benchmark (segkit does not by default)")
    parser.add_argument("--peak-tflops", type=float, help="the GPU's dense bf16 peak, when the table lacks it")
    parser.add_argument("--data-root", type=Path, default=default_lgg_root(), help="LGG kaggle_3m for the loader check")
    parser.add_argument("--loader-workers", type=int, nargs="+", default=[8])
    parser.add_argument("--loader-presets", nargs="+", default=["light", "heavy"],
                        help="augmentation presets the data paths are measured with")
    parser.add_argument("--loader-items", type=int, default=512, help="slices per loader epoch (default 512)")
    parser.add_argument("--simulate-oom-above", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    args.model_params = {}

    if args.dry_run:
        args.image_size, args.batch_sizes, args.steps, args.warmup = 32, [2, 4, 8], 2, 1
        args.simulate_oom_above = args.simulate_oom_above or 4
        args.model_params = {"unet": {"width": 8}}
        args.loader_workers, args.loader_items = [0, 1], 16
        args.peak_tflops = args.peak_tflops or 1.0
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        message = (f"skipped: no CUDA GPU is available to torch {torch.__version__} on this machine. "
                   "Run it on a GPU machine, or try the code paths with --device cpu --dry-run.")
        print(message)
        if args.json:
            args.json.write_text(json.dumps({"benchmark": "gpu_throughput", "skipped": message,
                                             "machine": machine()}, indent=2))
        return
    if device.type != "cuda" and not args.dry_run:
        raise SystemExit("gpu_throughput measures a GPU; on the CPU only --dry-run makes sense "
                         "(see train_throughput.py for CPU training).")
    if args.cudnn_benchmark:
        torch.backends.cudnn.benchmark = True
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu (dry run)"
    peak, peak_source = peak_tflops(device_name, args.peak_tflops)

    from segkit.components.registry import get_registry

    registry = get_registry()
    started = time.perf_counter()
    pool = gpu_pool(args.image_size, max(args.batch_sizes) if args.dry_run else 64, device)
    runs: list[dict[str, Any]] = []
    flops: dict[str, dict[str, float]] = {}
    best: dict[str, dict[str, Any]] = {}
    for model_key in args.models:
        flops[model_key] = flops_per_image(model_key, args, registry)
        for batch_size in args.batch_sizes:
            outcome = try_measure(model_key, batch_size, False, args, pool, registry)
            runs.append(outcome)
            if "error" in outcome:
                break  # larger batches will not fit either
            if model_key not in best or outcome["images_per_second"] > best[model_key]["images_per_second"]:
                best[model_key] = outcome
        if model_key in best and not args.no_compile:
            outcome = try_measure(model_key, best[model_key]["batch_size"], True, args, pool, registry)
            runs.append(outcome)
    del pool
    _free(device)

    for run in runs:
        if "images_per_second" in run:
            run["tflops"] = flops[run["model"]]["train"] * run["images_per_second"] / 1e12
            run["fraction_of_peak"] = run["tflops"] / peak if peak else None
    trained = [run for run in runs if "images_per_second" in run]
    fastest = max((run["images_per_second"] for run in trained), default=0.0)
    loader_batch = max((run["batch_size"] for run in trained), default=args.batch_sizes[0])
    source, loader = loader_rates(args, loader_batch, registry, device)

    rows = []
    for run in runs:
        if "error" in run:
            rows.append([run["model"], run["batch_size"], "yes" if run["compile"] else "no", run["error"], "", "", "",
                         ""])
            continue
        rows.append([run["model"], run["batch_size"], "yes" if run["compile"] else "no", run["images_per_second"],
                     flops[run["model"]]["train"] / 1e9, run["tflops"],
                     f"{100 * run['fraction_of_peak']:.1f}%" if run["fraction_of_peak"] is not None else "n/a",
                     f"{run['peak_memory_gib']:.1f}" if run["peak_memory_gib"] is not None else "n/a"])
    print(markdown_table(["model", "batch", "compile", "images/s", "GFLOP/image (fwd+bwd)", "TFLOP/s",
                          "of bf16 peak", "peak GiB"], rows))
    print(f"\n{args.image_size}x{args.image_size}, bce_dice, Adam, segkit Trainer with bf16 autocast and channels_last "
          f"(CUDA only), data in device memory; {args.warmup} warm-up + {args.steps} timed steps each. "
          f"Peak: {peak if peak else 'n/a'} TFLOP/s from {peak_source}.")
    for key, counted in flops.items():
        print(f"FLOPs per image, {key}: forward {counted['forward'] / 1e9:.3g} G, forward+backward "
              f"{counted['train'] / 1e9:.3g} G (convolutions and matmuls)")
    loader_rows = []
    for result in loader:
        rate = result["images_per_second"][-1]
        result["keeps_up"] = rate >= fastest
        where = f"workers ({result['workers']})" if result["path"] == "workers" else "device (batched)"
        loader_rows.append([where, result["augment"], result["images_per_second"][0], rate,
                            rate / fastest if fastest else 0.0, "yes" if result["keeps_up"] else "no"])
    print("\n" + markdown_table(["data path", "augment", "epoch 1 images/s", "epoch 2 images/s",
                                 "data / fastest training", "keeps up?"], loader_rows))
    print(f"\ndata paths: segkit build_data over {source}, resize to {args.image_size}, cache on, "
          f"batch {loader_batch}; fastest training above: {fastest:.1f} images/s")
    info = machine()
    print(describe_machine(info))
    total = time.perf_counter() - started
    print(f"benchmark wall time {total:.0f} s")
    if args.json:
        settings = {k: v for k, v in vars(args).items() if k != "json"}
        args.json.write_text(json.dumps({
            "benchmark": "gpu_throughput", "dry_run": args.dry_run, "device_name": device_name,
            "peak_tflops": peak, "peak_source": peak_source, "settings": settings, "flops_per_image": flops,
            "runs": runs, "best_eager": {k: v["batch_size"] for k, v in best.items()},
            "loader": {"source": source, "batch_size": loader_batch, "results": loader,
                       "fastest_training_images_per_second": fastest},
            "machine": info, "wall_seconds": total,
        }, indent=2, default=str))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
