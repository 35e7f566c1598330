"""Reading lossy (JPEG) masks: segkit's per-value snapping against the per-pixel rule it stands for.

A JPEG mask's pixels are moved to the nearest label value (:func:`segkit.data.io.decode_mask`). segkit decides
once per stored value (a histogram of at most 256 values) and maps the pixels through a table; the per-pixel
rule computes every pixel's distance to every label value in 64-bit integers (and, for a mask saved in colour,
the channels' spread and mean in 32-bit and float), which is what segkit did before 2026-12-08. Both are run
on the same files, in alternating passes, and must agree pixel for pixel and in the count of pixels moved.

Every ``segkit plan`` and every first epoch reads each mask (the planner's dataset, its loading timings, the
first batch check), so this is paid once per image per dataset built.

    python benchmarks/mask_reading.py [--masks ../shared/data/kvasir-seg/masks] [--items 200] [--rounds 3]
                                      [--out benchmarks/results/any-dataset/mask-reading.json] [--quick]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

from common import describe_machine

REPO = Path(__file__).resolve().parents[1]


def per_pixel_rule(path: Path) -> tuple[np.ndarray, int]:
    """A binary JPEG mask read the per-pixel way: channels' spread and rounded mean, each pixel's distance to
    0 and 255, the nearest taken; returns the label values and how many pixels moved."""
    import cv2

    pixels = cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_UNCHANGED)
    if pixels.ndim == 3:
        spread = int(np.ptp(pixels.astype(np.int32), axis=2).max())
        pixels = np.round(pixels.mean(axis=2)).astype(np.uint8) if spread else pixels[:, :, 0]
    levels = np.array([0, 255]) if int(pixels.max()) > 1 else np.array([0, 1])
    distance = np.abs(pixels.astype(np.int64)[..., None] - levels[None, None, :])
    return distance.argmin(axis=-1).astype(np.uint8), int((distance.min(axis=-1) > 0).sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--masks", type=Path, default=REPO.parent / "shared" / "data" / "kvasir-seg" / "masks")
    parser.add_argument("--items", type=int, default=200, help="masks read per pass (the first, sorted)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating passes of each way")
    parser.add_argument("--out", type=Path, default=None, help="write the figures here as JSON")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 5 masks, one round (numbers mean nothing)")
    args = parser.parse_args()
    if args.quick:
        args.items, args.rounds = 5, 1
    from segkit.data.io import decode_mask

    paths = sorted(args.masks.glob("*.jpg"))[:args.items]
    if not paths:
        raise SystemExit(f"no .jpg masks in {args.masks}: pass --masks with Kvasir-SEG's masks folder")
    for path in paths:  # the two ways agree before either is timed
        reading, (mask, moved) = decode_mask(path), per_pixel_rule(path)
        if not np.array_equal(reading.mask, mask) or reading.snapped != moved:
            raise SystemExit(f"{path}: segkit and the per-pixel rule disagree")
    timings: dict[str, list[float]] = {"segkit": [], "per_pixel": []}
    for _ in range(args.rounds):
        for name, read in (("segkit", decode_mask), ("per_pixel", per_pixel_rule)):
            started = time.perf_counter()
            for path in paths:
                read(path)
            timings[name].append((time.perf_counter() - started) * 1000 / len(paths))
    result = {"machine": describe_machine(), "masks": str(args.masks), "items": len(paths), "rounds": args.rounds,
              "agree": True, "ms_per_mask": {name: round(statistics.median(values), 2)
                                             for name, values in timings.items()},
              "passes_ms_per_mask": {name: [round(v, 2) for v in values] for name, values in timings.items()}}
    result["speedup"] = round(result["ms_per_mask"]["per_pixel"] / result["ms_per_mask"]["segkit"], 1)
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
