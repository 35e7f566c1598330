"""LGG data loading: images/s of segkit's real loader pipeline against the model's training images/s.

The loaders are the ones ``segkit run`` trains with: ``segkit.train.assemble.build_data``
on the ``lgg`` dataset from a :class:`segkit.config.RunConfig` (TIFF read, resize to
``--image-size``, the ``--augment`` preset, float conversion, collate). For each
number of workers (default 0, 1, 2) and cache off / on, a fresh dataset is built and
two epochs over ``--items`` training slices are read; epoch 1 includes starting the
workers and (cache on) filling the cache, epoch 2 is the steady state that counts.

Note: with workers > 0 each worker process holds its own cache, and the shuffled
order sends an item to another worker next epoch, so in epoch 2 only about
1/workers of the reads hit a cache (more with every later epoch).

The model's training images/s (a plain forward/backward/Adam loop, same image size
and batch size, on the CPU unless ``--device``) says whether the loader keeps up:
with 0 workers loading runs in series with training and costs train/loader of the
step time; with workers it runs alongside (on the same cores, on a CPU) and keeps
up when it is faster than training.

    python benchmarks/loader_throughput.py [--data-root DIR] [--image-size 128] [--batch-size 8]
                                           [--items 256] [--workers 0 1 2] [--width 64] [--quick]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch

from common import HandLoop, default_lgg_root, describe_machine, machine, markdown_table


def _config(args: argparse.Namespace, workers: int, cache: bool, registry: Any) -> Any:
    from segkit.config import resolve_config, validate_config

    flags = {
        "dataset": {"name": "lgg", "root": str(args.data_root), "cache": cache},
        "train": {"batch_size": args.batch_size, "image_size": args.image_size, "augment": args.augment,
                  "workers": workers, "device": "cpu"},
    }
    return validate_config(resolve_config(None, flags, []), registry)


def loader_epochs(args: argparse.Namespace, workers: int, cache: bool, registry: Any) -> list[float]:
    """images/s of each of ``args.epochs`` epochs of the real training loader, from a fresh dataset."""
    import pandas as pd

    from segkit.train import assemble

    config = _config(args, workers, cache, registry)
    dataset = assemble.build_dataset(config, registry)
    n_train = min(args.items, len(dataset) - args.batch_size) if args.items else len(dataset) - args.batch_size
    # Training items spread over all patients; a batch's worth of validation items so the split is valid.
    step = max(1, (len(dataset) - args.batch_size) // n_train)
    train_positions = set(range(0, step * n_train, step))
    split = pd.Series(["train" if i in train_positions else "val" if i >= step * n_train else "unused"
                       for i in range(len(dataset))])
    parts = assemble.build_data(config, dataset, split)
    loader, sampler = parts.loaders["train"], parts.samplers["train"]
    rates = []
    for epoch in range(1, args.epochs + 1):
        sampler.set_epoch(epoch)
        seen = 0
        started = time.perf_counter()
        for images, _masks, _indices in loader:
            seen += images.shape[0]
        rates.append(seen / (time.perf_counter() - started))
    del loader, parts  # stops persistent workers
    return rates


def training_images_per_second(args: argparse.Namespace, registry: Any) -> float:
    """The model's training images/s at this image and batch size (plain loop, random data)."""
    from segkit.device import select_device

    device = select_device(args.device)
    params = {"in_channels": 3, "classes": 1}
    if args.width:
        params["width"] = args.width
    torch.manual_seed(0)
    model = registry.build("model", args.model, **params).to(device)
    loss = registry.build("loss", "bce_dice").to(device)
    size = args.image_size or 256
    images = torch.rand(2 * args.batch_size, 3, size, size, device=device)
    masks = (torch.rand(2 * args.batch_size, 1, size, size, device=device) > 0.9).float()
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    loop = HandLoop(model, loss, images, masks, args.batch_size, sync=sync)
    loop.run(1)
    return args.train_steps * args.batch_size / loop.run(args.train_steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", type=Path, default=default_lgg_root(),
                        help="the kaggle_3m folder (default: <repo>/../shared/data/lgg/kaggle_3m)")
    parser.add_argument("--image-size", type=int, default=128, help="0: the data's own 256")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--augment", default="light", help="none, light, heavy (default light)")
    parser.add_argument("--items", type=int, default=256, help="training slices per epoch (0: all but one batch)")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per setting (default 2; the last counts)")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--model", default="unet")
    parser.add_argument("--width", type=int, default=64, help="unet width for the training rate; 0 for none")
    parser.add_argument("--train-steps", type=int, default=5, help="timed training steps (default 5)")
    parser.add_argument("--device", default="cpu", help="device of the training rate (default cpu)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--quick", action="store_true", help="smoke run: 32 items, workers 0 and 1, width 16, 2 steps")
    args = parser.parse_args()
    if args.quick:
        args.items, args.workers, args.width, args.train_steps = 32, [0, 1], 16, 2
    args.epochs = max(args.epochs, 1)

    from segkit.components.registry import get_registry

    registry = get_registry()
    results = []
    for workers in args.workers:
        for cache in (False, True):
            rates = loader_epochs(args, workers, cache, registry)
            results.append({"workers": workers, "cache": cache, "images_per_second": rates})
    train_rate = training_images_per_second(args, registry)

    rows = []
    for result in results:
        rate = result["images_per_second"][-1]
        if result["workers"] == 0:
            share = train_rate / rate  # loading time added per unit of training time
            verdict = f"in series: +{100 * share:.0f}% step time"
        else:
            verdict = "keeps up" if rate >= train_rate else f"too slow ({rate / train_rate:.2f}x training)"
        result["verdict"] = verdict
        rows.append([result["workers"], "on" if result["cache"] else "off", result["images_per_second"][0], rate,
                     rate / train_rate, verdict])
    print(markdown_table(["workers", "cache", "epoch 1 images/s", f"epoch {args.epochs} images/s",
                          "loader / training", "keeps up?"], rows))
    size = args.image_size or "native 256"
    model_text = args.model + (f" width {args.width}" if args.width else "")
    print(f"\nLGG loader: {args.items or 'all'} training slices, resize to {size}, augment {args.augment}, "
          f"batch {args.batch_size}, from {args.data_root}")
    print(f"training: {model_text} + bce_dice + Adam at {size}, batch {args.batch_size}, on {args.device}: "
          f"{train_rate:.2f} images/s")
    info = machine()
    print(describe_machine(info))
    if args.json:
        args.json.write_text(json.dumps({"benchmark": "loader_throughput",
                                         "settings": {k: v for k, v in vars(args).items() if k != "json"},
                                         "loader": results, "training_images_per_second": train_rate,
                                         "machine": info}, indent=2, default=str))


if __name__ == "__main__":
    main()
