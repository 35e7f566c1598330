"""Thin structures in large images: training on patches at native size against resizing, at equal minutes.

Issue 40's question for native-resolution 2D (``train.patch_size``): on 1024x1024 images whose label is a
web of 2-3 pixel wide curves (vessel-like), does training on 256x256 patches at the images' own size beat
resizing each whole image to 256x256, in the same CPU minutes? Both runs use the 2D model ``segkit plan``
plans (smp U-Net, ResNet-18 encoder, narrow decoder), the same loss, augmentation, batch and budget; they
differ only in ``train.image_size = 256`` against ``train.patch_size = [256, 256]``. Both are scored by
``segkit evaluate`` on held-out images at their own size (the resized run's probabilities are resized
back, the patch run slides windows), as Dice per image and pooled.

The images are generated here, deterministically (seeded): a textured, vignetted background with blobs,
and curves of random thickness 2-3 pixels a little brighter than their surroundings, with noise on top.

    .venv/bin/python benchmarks/patch_vs_resize.py --minutes 5 --work runs/patch-vs-resize
    .venv/bin/python benchmarks/patch_vs_resize.py --quick      # checks the script; numbers mean nothing

Writes ``per-image.csv`` into ``--work`` (and with ``--keep`` into benchmarks/results/patches/) and prints
a markdown table with the machine. Run it on a quiet machine: both runs are limited by wall-clock minutes.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from common import REPO, describe_machine, markdown_table

MODEL = ["--model", "smp_unet", "--set", "model.encoder_name=resnet18",
         "--set", "model.decoder_channels=[128,64,32,16,16]"]


def thin_image(seed: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """One generated image (H x W x 3 uint8) and its mask of 2-3 pixel wide curves (0/255)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    background = 90 + 50 * np.exp(-((xx - 0.5) ** 2 + (yy - 0.5) ** 2) * 3)  # vignetting
    low = cv2.resize(rng.normal(0, 1, (size // 32, size // 32)).astype(np.float32), (size, size),
                     interpolation=cv2.INTER_CUBIC)
    background += 12 * low
    for _ in range(12):  # bright and dark blobs that are not the label
        centre = tuple(int(v) for v in rng.integers(0, size, 2))
        cv2.circle(background, centre, int(rng.integers(10, 60)), float(rng.uniform(60, 180)), -1)
    mask = np.zeros((size, size), np.uint8)
    for _ in range(int(rng.integers(10, 16))):  # curves: random walks with momentum
        point = rng.uniform(0, size, 2)
        angle = rng.uniform(0, 2 * np.pi)
        points = []
        for _ in range(int(rng.integers(40, 90))):
            angle += rng.normal(0, 0.25)
            point = point + 12 * np.array([np.cos(angle), np.sin(angle)])
            points.append(point.copy())
        curve = np.round(np.array(points)).astype(np.int32).reshape(-1, 1, 2)
        cv2.polylines(mask, [curve], False, 255, thickness=int(rng.integers(2, 4)))
    image = background + np.where(mask > 0, 35.0, 0.0)
    image = cv2.GaussianBlur(image, (3, 3), 0.6) + rng.normal(0, 10, (size, size))
    grey = np.clip(image, 0, 255).astype(np.uint8)
    return np.dstack([grey, np.clip(grey * 0.8 + 20, 0, 255).astype(np.uint8), grey]), mask


def write_set(root: Path, seeds: range, size: int) -> Path:
    """``root/images`` and ``root/masks`` of generated images (skipped when present)."""
    if (root / "masks").is_dir() and len(list((root / "masks").glob("*.png"))) == len(seeds):
        return root
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    for seed in seeds:
        image, mask = thin_image(seed, size)
        cv2.imwrite(str(root / "images" / f"thin{seed:03d}.png"), image[:, :, ::-1])
        cv2.imwrite(str(root / "masks" / f"thin{seed:03d}.png"), mask)
    return root


def segkit(*arguments: str) -> str:
    result = subprocess.run([sys.executable, "-m", "segkit", *arguments], capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"segkit {' '.join(arguments[:2])} failed:\n{result.stderr[-3000:]}")
    return result.stderr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=5.0, help="training minutes of each run")
    parser.add_argument("--size", type=int, default=1024, help="side of the generated images")
    parser.add_argument("--train", type=int, default=24, help="training (and validation) images")
    parser.add_argument("--test", type=int, default=8, help="held-out images")
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "patch-vs-resize")
    parser.add_argument("--keep", action="store_true", help="also write the per-image table to benchmarks/results")
    parser.add_argument("--quick", action="store_true", help="tiny: 256-pixel images, 12 seconds each")
    args = parser.parse_args()
    if args.quick:
        args.minutes, args.size, args.train, args.test = 0.2, 256, 6, 2
    side = min(256, args.size // 4)
    train = write_set(args.work / "train", range(args.train), args.size)
    test = write_set(args.work / "test", range(1000, 1000 + args.test), args.size)
    common = ["--dataset", "folder", "--data-root", str(train), *MODEL, "--loss", "bce_dice", "--batch-size", "4",
              "--augment", "light", "--epochs", "1000", "--set", f"train.max_minutes={args.minutes}",
              "--set", "train.foreground_fraction=0.33", "--set", "split.test_fraction=0",
              "--set", "split.val_fraction=0.15", "--set", "dataset.cache=true", "--quiet"]
    variants = {"resize": ["--set", f"train.image_size={side}"], "patches": ["--set", f"train.patch_size=[{side},{side}]"]}
    rows, tables = [], []
    for name, extra in variants.items():
        run = args.work / name
        if not (run / "summary.json").is_file():
            segkit("run", *common, *extra, "--out", str(run))
        summary = json.loads((run / "summary.json").read_text())
        segkit("evaluate", str(run), "--dataset", "folder", "--data-root", str(test), "--split", "all")
        table = pd.read_csv(next((run / "evaluation").glob("folder-*-all-per-case.csv")))
        table.insert(0, "method", name)
        tables.append(table)
        tp, fp, fn = (int(table[c].sum()) for c in ("tp", "fp", "fn"))
        rows.append([name, " ".join(extra[1:]), summary["epochs_run"], f"{summary.get('loop_seconds', 0) / 60:.1f}",
                     f"{summary['images_per_second']:.1f}", f"{table['dice'].mean():.4f}",
                     f"{2 * tp / max(2 * tp + fp + fn, 1):.4f}"])
    per_image = pd.concat(tables, ignore_index=True)
    per_image.to_csv(args.work / "per-image.csv", index=False, float_format="%.6g")
    if args.keep:
        kept = REPO / "benchmarks" / "results" / "patches"
        kept.mkdir(parents=True, exist_ok=True)
        per_image.to_csv(kept / "thin-1024-per-image.csv", index=False, float_format="%.6g")
    print(markdown_table(["method", "setting", "epochs", "minutes", "train img/s", "Dice per image (test)",
                          "pooled Dice (test)"], rows))
    print(f"\n{args.train} training/validation and {args.test} held-out images of {args.size}x{args.size}, "
          f"{args.minutes:g} min each")
    print(describe_machine())


if __name__ == "__main__":
    main()
