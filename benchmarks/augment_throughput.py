"""Augmentation images/s: albumentations one item at a time against segkit's batched torch augmentation.

Real LGG slices (3-channel, 256x256) are read into memory first; reading is not timed.
The per-item side is ``segkit.data.build_transform(preset, image_size, train=True)``
called on one uint8 HxWx3 array and its mask at a time, as the training DataLoader does
in the main process (0 workers); it always runs on the CPU. The batched side is
``BatchAugment(preset_ranges(preset))`` on float batches of ``--batch-size`` already on
``--device`` (as they are after the loader's transfer), one ``augment_generator`` per
batch. After an untimed warm-up the two alternate for ``--repeats`` rounds of
``--items`` images; the table shows median, min and max images/s and the ratio of medians.

    python benchmarks/augment_throughput.py [--data-root DIR] [--presets light heavy] [--items 256]
                                            [--batch-size 32] [--repeats 3] [--device cpu] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from common import default_lgg_root, describe_machine, machine, markdown_table, median


def load_slices(args: argparse.Namespace) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """``args.items`` LGG slices spread over all patients, resized to ``args.image_size`` (uint8, {0, 1})."""
    import cv2

    from segkit.components.registry import get_registry

    dataset = get_registry().build("dataset", "lgg", root=str(args.data_root))
    positions = np.linspace(0, len(dataset) - 1, args.items).round().astype(int)
    images, masks = [], []
    for i in positions:
        image, mask = dataset.read(int(i))
        if image.shape[:2] != (args.image_size, args.image_size):
            size = (args.image_size, args.image_size)
            image = cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)
            mask = cv2.resize(mask, size, interpolation=cv2.INTER_NEAREST)
        images.append(image)
        masks.append(mask)
    return images, masks


def per_item_rate(transform: Any, images: list[np.ndarray], masks: list[np.ndarray]) -> float:
    """images/s of the albumentations pipeline, one item at a time."""
    started = time.perf_counter()
    for image, mask in zip(images, masks):
        transform(image=image, mask=mask)
    return len(images) / (time.perf_counter() - started)


def batched_rate(augment: Any, batches: list[tuple[torch.Tensor, torch.Tensor]], round_: int,
                 sync: Any) -> float:
    """images/s of the batched augmentation over ``batches`` (tensors already on the device)."""
    from segkit.data.batch_augment import augment_generator

    sync()
    started = time.perf_counter()
    seen = 0
    for step, (images, masks) in enumerate(batches):
        augment(images, masks, augment_generator(0, round_, step))
        seen += images.shape[0]
    sync()
    return seen / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", type=Path, default=default_lgg_root(),
                        help="the kaggle_3m folder (default: <repo>/../shared/data/lgg/kaggle_3m)")
    parser.add_argument("--presets", nargs="+", default=["light", "heavy"])
    parser.add_argument("--image-size", type=int, default=256, help="the LGG slices' own 256 unless told")
    parser.add_argument("--items", type=int, default=256, help="images per timed round (default 256)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3, help="alternating timed rounds (default 3)")
    parser.add_argument("--device", default="cpu", help="device of the batched side (default cpu)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--quick", action="store_true", help="smoke run: 64 items, 1 round")
    args = parser.parse_args()
    if args.quick:
        args.items, args.repeats = 64, 1

    from segkit.data import build_transform
    from segkit.data.augment_presets import preset_ranges
    from segkit.data.batch_augment import BatchAugment
    from segkit.device import select_device

    device = select_device(args.device)
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    images, masks = load_slices(args)
    stacked = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float().div(255)
    stacked_masks = torch.from_numpy(np.stack(masks))[:, None].float()
    batches = [(stacked[i:i + args.batch_size].to(device), stacked_masks[i:i + args.batch_size].to(device))
               for i in range(0, len(images), args.batch_size)]

    results, rows = [], []
    for preset in args.presets:
        transform = build_transform(preset, args.image_size, train=True)
        augment = BatchAugment(preset_ranges(preset))
        per_item_rate(transform, images[:8], masks[:8])  # warm-up
        batched_rate(augment, batches[:1], -1, sync)
        item_rates, batch_rates = [], []
        for round_ in range(args.repeats):
            item_rates.append(per_item_rate(transform, images, masks))
            batch_rates.append(batched_rate(augment, batches, round_, sync))
        ratio = median(batch_rates) / median(item_rates)
        results.append({"preset": preset, "per_item_images_per_second": item_rates,
                        "batched_images_per_second": batch_rates, "ratio": ratio})
        rows.append([preset, "albumentations, per item (cpu)", median(item_rates), min(item_rates),
                     max(item_rates), ""])
        rows.append([preset, f"batched torch, batch {args.batch_size} ({device})", median(batch_rates),
                     min(batch_rates), max(batch_rates), f"{ratio:.2f}x"])
    print(markdown_table(["preset", "path", "median images/s", "min", "max", "batched / per item"], rows))
    print(f"\n{args.items} LGG slices at {args.image_size}x{args.image_size}, 3 channels, from {args.data_root}; "
          f"{args.repeats} alternating rounds after warm-up")
    info = machine()
    print(describe_machine(info))
    if args.json:
        args.json.write_text(json.dumps({"benchmark": "augment_throughput",
                                         "settings": {k: v for k, v in vars(args).items() if k != "json"},
                                         "results": results, "machine": info}, indent=2, default=str))


if __name__ == "__main__":
    main()
