"""Prediction throughput on the CPU: PyTorch vs onnxruntime, same model, same images, one run.

The tutorial U-Net (default width 64, untrained weights: speed does not depend on
them) at 256x256, batches of 8, N images held in memory. Each backend goes
through segkit's own path: a checkpoint loaded with ``load_predictor`` and its
ONNX export loaded with ``load_onnx_predictor``; both return probabilities.
One warm-up batch, then the timed passes over all images (best of ``--repeats``).

    python benchmarks/predict_throughput.py [--images 32] [--batch-size 8] [--size 256] [--width 64]

Prints a markdown table and the machine. Other work on the machine slows both
backends; compare the ratio, not the absolute numbers, between machines.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

from common import cpu_model


def _checkpoint(folder: Path, width: int) -> Path:
    from segkit.runs.checkpoint import save_checkpoint
    from segkit_builtins.models.unet import UNet

    torch.manual_seed(0)
    model = UNet(in_channels=3, classes=1, width=width)
    path = folder / "unet.pt"
    save_checkpoint(path, {
        "config": {"model": {"name": "unet", "in_channels": 3, "classes": 1, "width": width},
                   "metrics": {"threshold": 0.5}},
        "preprocessing": {"image_size": 0, "in_channels": 3, "scale": 255.0, "threshold": 0.5},
        "model_state": model.state_dict(),
        "epoch": 0,
    })
    return path


def _images_per_second(predictor, images: torch.Tensor, batch_size: int, repeats: int) -> float:
    predictor.probabilities(images[:batch_size])  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for first in range(0, len(images), batch_size):
            predictor.probabilities(images[first:first + batch_size])
        best = min(best, time.perf_counter() - start)
    return len(images) / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=32, help="images held in memory (default 32)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--width", type=int, default=64, help="U-Net width (the tutorial's is 64)")
    parser.add_argument("--repeats", type=int, default=1, help="timed passes per backend; the best counts")
    args = parser.parse_args()

    import onnxruntime

    from segkit.inference.export import export_onnx, load_onnx_predictor
    from segkit.inference.sources import load_predictor

    images = torch.rand(args.images, 3, args.size, args.size, generator=torch.Generator().manual_seed(0))
    with tempfile.TemporaryDirectory() as folder:
        checkpoint = _checkpoint(Path(folder), args.width)
        onnx_path = Path(folder) / "unet.onnx"
        export_onnx(checkpoint, onnx_path, verify=False)
        pytorch = _images_per_second(load_predictor(checkpoint, device="cpu"), images, args.batch_size, args.repeats)
        ort = _images_per_second(load_onnx_predictor(onnx_path), images, args.batch_size, args.repeats)

    print(f"| backend | images/s | relative |\n|---|---|---|\n"
          f"| PyTorch {torch.__version__} (eager, {torch.get_num_threads()} threads) | {pytorch:.2f} | 1.00 |\n"
          f"| onnxruntime {onnxruntime.__version__} (CPUExecutionProvider) | {ort:.2f} | {ort / pytorch:.2f} |")
    print(f"\nunet width {args.width}, {args.size}x{args.size}, batch {args.batch_size}, {args.images} images, "
          f"best of {args.repeats} pass(es) after 1 warm-up batch")
    print(f"machine: {cpu_model()}, {os.cpu_count()} CPUs, "
          f"{platform.system()} {platform.release()}, Python {platform.python_version()}")


if __name__ == "__main__":
    main()
