"""Training throughput: segkit's Trainer against a minimal hand-written PyTorch loop, one run, one machine.

Both sides train the same model (same architecture and initial weights, separate
copies), with the same loss, batch size and image size, on the same images held in
memory:

* **segkit**: the real :class:`segkit.train.loop.Trainer`, assembled as
  ``segkit run`` assembles it (``segkit.train.assemble.build_data`` loaders over
  the cached synthetic dataset, the run's optimizer and LR schedule, metric
  accumulation, the finite-loss check). One timed repeat is one call of
  ``Trainer.train_epoch`` over ``--steps`` batches: validation is not timed.
  The loader has 0 workers and no augmentation, so reading the cached
  slices, converting them to float and collating them is part of segkit's time.
* **hand**: forward, loss, backward, ``Adam.step``, ``zero_grad`` over
  pre-stacked tensors. Nothing else.

Warm-up steps (untimed) come first; then the two alternate (A B A B ...) for
``--repeats`` rounds and the medians are compared, which cancels slow drift from
other work on the machine. Goal: segkit/hand >= 0.97 on the CPU.

    python benchmarks/train_throughput.py [--image-size 128] [--width 64] [--batch-size 8] [--steps 10]
                                          [--repeats 5] [--device cpu] [--json out.json] [--quick]

Prints a markdown table (images/s of each, the ratio) and the machine.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import torch

from common import HandLoop, describe_machine, machine, markdown_table, median


def _config(args: argparse.Namespace, count: int, registry: Any) -> Any:
    from segkit.config import resolve_config, validate_config

    model: dict[str, Any] = {"name": args.model}
    if args.width is not None:
        model["width"] = args.width
    flags = {
        "model": model,
        "loss": {"name": args.loss},
        "dataset": {"name": "synthetic", "count": count, "size": args.image_size, "cache": True},
        "train": {"batch_size": args.batch_size, "image_size": 0, "augment": "none", "workers": 0,
                  "device": args.device, "optimizer": "adam", "lr": 1e-3, "epochs": args.repeats + 1},
    }
    return validate_config(resolve_config(None, flags, args.set), registry)


def build_segkit_trainer(args: argparse.Namespace) -> tuple[Any, Any, Any, tuple[Any, Any]]:
    """The Trainer, its data parts, the registry and a short warm-up (loader, sampler), assembled as the runner
    assembles them (no run directory)."""
    import pandas as pd
    from torch.utils.data import DataLoader

    from segkit.components.registry import get_registry
    from segkit.train import assemble
    from segkit.device import select_device
    from segkit.train.runner import seed_everything
    from segkit.train.sampling import EpochSampler

    registry = get_registry()
    n_train = args.steps * args.batch_size
    config = _config(args, n_train + args.batch_size, registry)
    device = select_device(config.train.device)
    seed_everything(config.train.seed)
    dataset = assemble.build_dataset(config, registry)
    assemble.fill_model_defaults(config, dataset, registry)
    for i in range(len(dataset)):  # fill the in-memory cache before anything is timed
        dataset.read(i)
    split = pd.Series(["train"] * n_train + ["val"] * (len(dataset) - n_train))
    parts = assemble.build_data(config, dataset, split, pin_memory=device.type == "cuda")
    cases = {name: view.cases for name, view in parts.views.items()}

    steps_per_epoch = math.ceil(len(parts.loaders["train"]) / config.train.accumulate)
    trainer = assemble.build_trainer(config, registry, parts.loaders, parts.samplers, cases, device,
                                     steps_per_epoch=steps_per_epoch, progress=args.progress)
    # A short loader over the same items for the untimed warm-up epoch.
    train_loader = parts.loaders["train"]
    warmup_sampler = EpochSampler(args.warmup * args.batch_size, config.train.seed, shuffle=True)
    warmup_loader = DataLoader(train_loader.dataset, batch_size=args.batch_size, sampler=warmup_sampler,
                               collate_fn=train_loader.collate_fn, num_workers=0)
    return trainer, parts, registry, (warmup_loader, warmup_sampler)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="unet", help="a registered model (default: the tutorial unet)")
    parser.add_argument("--width", type=int, default=64, help="unet width (64: the tutorial's); 0 to not pass one")
    parser.add_argument("--loss", default="bce_dice")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per repeat (default 10)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps of each side first (default 2)")
    parser.add_argument("--repeats", type=int, default=5, help="alternating rounds (default 5)")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda, auto")
    parser.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (default: torch's choice)")
    parser.add_argument("--progress", action="store_true", help="with segkit's tqdm bar, as a run without --quiet")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="extra config assignments, e.g. model.encoder_name=resnet18")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--quick", action="store_true", help="tiny smoke run: 32x32, width 8, 3 steps, 2 repeats")
    args = parser.parse_args()
    if args.quick:
        args.image_size, args.width, args.steps, args.repeats, args.warmup = 32, 8, 3, 2, 1
    if args.width == 0:
        args.width = None
    if args.threads:
        torch.set_num_threads(args.threads)

    trainer, parts, registry, warmup = build_segkit_trainer(args)
    device, config = trainer.device, trainer.config

    # The hand-written side: the same model with the same initial weights, the same loss, the same images.
    from segkit.train import assemble

    torch.manual_seed(config.train.seed)
    hand_model = assemble.build_model(config, registry).to(device)
    view = parts.views["train"]
    images = torch.stack([view[i][0] for i in range(len(view))]).to(device)
    masks = torch.stack([view[i][1] for i in range(len(view))]).to(device)
    if trainer.channels_last:
        hand_model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    hand = HandLoop(hand_model, assemble.build_loss(config, registry).to(device), images, masks, args.batch_size,
                    lr=config.train.lr, autocast_dtype=trainer.amp_dtype, sync=lambda: _sync(device))

    # Warm-up: one short segkit epoch and the same number of hand steps.
    timed_loader, timed_sampler = trainer.loaders["train"], trainer.samplers["train"]
    trainer.loaders["train"], trainer.samplers["train"] = warmup
    trainer.train_epoch(0)
    trainer.loaders["train"], trainer.samplers["train"] = timed_loader, timed_sampler
    hand.run(args.warmup)

    segkit_rates, trainer_rates, hand_rates = [], [], []
    images_per_repeat = len(parts.views["train"])
    for repeat in range(1, args.repeats + 1):
        _sync(device)
        started = time.perf_counter()
        _, _, own_seconds, seen = trainer.train_epoch(repeat)
        _sync(device)
        segkit_rates.append(seen / (time.perf_counter() - started))
        trainer_rates.append(seen / own_seconds)
        hand_rates.append(args.steps * args.batch_size / hand.run(args.steps))

    segkit_median, hand_median = median(segkit_rates), median(hand_rates)
    pair_ratios = [s / h for s, h in zip(segkit_rates, hand_rates, strict=True)]
    rows = [
        ["segkit Trainer.train_epoch (wall)", segkit_median, min(segkit_rates), max(segkit_rates),
         segkit_median / hand_median],
        ["segkit, the trainer's own timing", median(trainer_rates), min(trainer_rates), max(trainer_rates),
         median(trainer_rates) / hand_median],
        ["hand-written loop", hand_median, min(hand_rates), max(hand_rates), 1.0],
    ]
    print(markdown_table(["loop", "median images/s", "min", "max", "ratio to hand"], rows))
    model_text = args.model + (f" width {args.width}" if args.width else "") + "".join(f", {s}" for s in args.set)
    print(f"\n{model_text}, {args.loss}, {args.image_size}x{args.image_size}, batch {args.batch_size}, "
          f"{args.steps} timed steps ({images_per_repeat} images) per repeat, {args.repeats} alternating repeats "
          f"after {args.warmup} warm-up step(s) each; device {trainer.device}"
          + (f", autocast {trainer.amp_dtype}" if trainer.amp_dtype else "")
          + (", channels_last" if trainer.channels_last else ""))
    print(f"ratio segkit/hand: {segkit_median / hand_median:.3f} (median of the medians); "
          f"per-round ratios {', '.join(f'{r:.3f}' for r in pair_ratios)}")
    info = machine()
    print(describe_machine(info))
    if args.json:
        args.json.write_text(json.dumps({
            "benchmark": "train_throughput", "settings": {k: v for k, v in vars(args).items() if k != "json"},
            "segkit_images_per_second": segkit_rates, "trainer_reported_images_per_second": trainer_rates,
            "hand_images_per_second": hand_rates, "ratio": segkit_median / hand_median, "machine": info,
        }, indent=2, default=str))


if __name__ == "__main__":
    main()
