"""Figures of a run: learning curves and validation predictions with outlines."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["plot_curves", "plot_predictions", "outline"]


def _save(figure: Any, path: str | os.PathLike[str]) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")
    figure.savefig(tmp, dpi=100, bbox_inches="tight")
    os.replace(tmp, path)


def plot_curves(rows: Sequence[Mapping[str, Any]], metric_names: Sequence[str], path: str | os.PathLike[str]) -> None:
    """curves.png: train and validation loss, and each validation metric, per epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [row["epoch"] for row in rows]
    figure, (loss_ax, metric_ax) = plt.subplots(1, 2, figsize=(11, 4))
    loss_ax.plot(epochs, [r["train_loss"] for r in rows], marker="o", label="train")
    loss_ax.plot(epochs, [r["val_loss"] for r in rows], marker="o", label="validation")
    loss_ax.set(title="loss", xlabel="epoch")
    loss_ax.legend()
    for name in metric_names:
        metric_ax.plot(epochs, [r[f"val_{name}"] for r in rows], marker="o", label=f"val {name}")
        if f"val_{name}_case" in rows[0]:
            metric_ax.plot(epochs, [r[f"val_{name}_case"] for r in rows], marker=".", linestyle=":",
                           label=f"val {name} per case")
        if f"train_{name}" in rows[0]:
            metric_ax.plot(epochs, [r[f"train_{name}"] for r in rows], linestyle="--", alpha=0.6, label=f"train {name}")
    metric_ax.set(title="metrics (per-image mean; per case where marked)", xlabel="epoch", ylim=(0, 1))
    metric_ax.legend(fontsize=8)
    figure.tight_layout()
    _save(figure, path)
    plt.close(figure)


def outline(mask: np.ndarray) -> np.ndarray:
    """The boundary pixels of a binary mask."""
    import cv2

    edges = cv2.morphologyEx(mask.astype(np.uint8), cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8))
    return edges > 0


def overlay(image: np.ndarray, truth: np.ndarray | None, prediction: np.ndarray | None) -> np.ndarray:
    """An RGB float image with the truth outlined in green and the prediction in red."""
    picture = image.astype(np.float32)
    if picture.ndim == 2:
        picture = np.repeat(picture[..., None], 3, axis=2)
    elif picture.shape[2] == 1:
        picture = np.repeat(picture, 3, axis=2)
    elif picture.shape[2] > 3:
        picture = picture[..., :3]
    low, high = float(picture.min()), float(picture.max())
    picture = (picture - low) / (high - low) if high > low else np.zeros_like(picture)
    if truth is not None:
        picture[outline(truth)] = (0.1, 0.9, 0.1)
    if prediction is not None:
        picture[outline(prediction)] = (0.95, 0.1, 0.1)
    return picture


def plot_predictions(
    samples: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray, str]], path: str | os.PathLike[str]
) -> None:
    """predictions.png: image, truth and prediction outlined, one column per sample, like the tutorial's figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    count = max(1, len(samples))
    figure, axes = plt.subplots(1, count, figsize=(3 * count, 3.3), squeeze=False)
    for ax, (image, truth, prediction, title) in zip(axes[0], samples, strict=False):
        ax.imshow(overlay(image, truth, prediction))
        ax.set_title(title, fontsize=8)
        ax.axis("off")
    for ax in axes[0][len(samples):]:
        ax.axis("off")
    figure.suptitle("validation: truth (green), prediction (red)", fontsize=10)
    figure.tight_layout()
    _save(figure, path)
    plt.close(figure)
