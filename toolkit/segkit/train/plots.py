"""Figures of a run: learning curves and validation predictions with outlines."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["plot_curves", "plot_predictions", "outline", "overlay", "error_overlay", "slice_dice", "sample_positions"]


def _save(figure: Any, path: str | os.PathLike[str]) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")
    figure.savefig(tmp, dpi=100, bbox_inches="tight")
    os.replace(tmp, path)


def plot_curves(rows: Sequence[Mapping[str, Any]], metric_names: Sequence[str], path: str | os.PathLike[str],
                monitor: str | None = None, best_epoch: int | None = None) -> None:
    """curves.png: train and validation loss, and each validation metric, per epoch.

    ``monitor`` (a metrics.csv column such as ``val_dice_case``) is drawn thick and named in
    the title; ``best_epoch`` is marked on both panels. Epoch ticks are whole numbers.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    epochs = [row["epoch"] for row in rows]
    figure, (loss_ax, metric_ax) = plt.subplots(1, 2, figsize=(11, 4))
    loss_ax.plot(epochs, [r["train_loss"] for r in rows], marker="o", label="train")
    loss_ax.plot(epochs, [r["val_loss"] for r in rows], marker="o", label="validation")
    loss_ax.set(title="loss", xlabel="epoch", ylabel="loss")
    main = next((n for n in metric_names if monitor is not None and monitor.startswith(f"val_{n}")),
                metric_names[0] if metric_names else None)
    suffix = monitor[len(f"val_{main}"):] if monitor is not None and main is not None else ""
    for name in metric_names:
        for column, style, label in ((f"val_{name}", dict(marker="o"), f"val {name} (per image)"),
                                     (f"val_{name}_case", dict(marker=".", linestyle=":"), f"val {name} per case"),
                                     (f"val_{name}_global", dict(marker=".", linestyle="-."), f"val {name} pooled"),
                                     (f"train_{name}", dict(linestyle="--", alpha=0.6), f"train {name}")):
            # every variant of the monitored metric; of the others only the monitored kind (e.g. per case)
            if column not in rows[0] or (name != main and column != f"val_{name}{suffix}"):
                continue
            values = [r[column] for r in rows]
            if column == monitor:
                metric_ax.plot(epochs, values, color="black", linewidth=2.5, marker="o", zorder=5,
                               label=f"{label} (monitored)")
            else:
                metric_ax.plot(epochs, values, label=label, **style)
    title = "validation metrics"
    if monitor is not None:
        title += f", monitored: {monitor}"
    metric_ax.set(title=title, xlabel="epoch", ylabel="score", ylim=(0, 1))
    if best_epoch is not None and best_epoch in epochs:
        for ax in (loss_ax, metric_ax):
            ax.axvline(best_epoch, color="tab:green", linestyle="--", linewidth=1, label=f"best epoch ({best_epoch})")
    for ax in (loss_ax, metric_ax):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    loss_ax.legend(fontsize=8)
    metric_ax.legend(fontsize=7)
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


def sample_positions(index: Any, count: int = 6) -> list[int]:
    """Which items of ``index`` (a dataset index) predictions.png shows: several patients' lesions and empty slices.

    Lesion slices are taken round-robin over the cases, each case's middle lesion slice
    first (where its lesion is usually largest), then outwards; one or two empty slices
    close the row.
    """
    index = index.reset_index(drop=True)
    has_lesion = index["has_lesion"].astype(bool).to_numpy()
    empty = [int(i) for i in np.flatnonzero(~has_lesion)]
    wanted_empty = min(2 if count >= 4 else 1, len(empty))
    by_case: dict[str, list[int]] = {}
    for i in np.flatnonzero(has_lesion):
        by_case.setdefault(str(index["case"].iloc[i]), []).append(int(i))
    queues = []
    for members in by_case.values():
        middle = len(members) // 2
        queues.append([members[k] for k in sorted(range(len(members)), key=lambda k: abs(k - middle))])
    lesion: list[int] = []
    while len(lesion) < count - wanted_empty and any(queues):
        for queue in queues:
            if queue and len(lesion) < count - wanted_empty:
                lesion.append(queue.pop(0))
    return (lesion + empty[: count - len(lesion)])[:count]


TP_COLOUR = (1.0, 0.85, 0.0)   # yellow: lesion found
FP_COLOUR = (1.0, 0.1, 0.1)    # red: predicted where there is none
FN_COLOUR = (0.1, 0.45, 1.0)   # blue: lesion missed


def error_overlay(image: np.ndarray, truth: np.ndarray, prediction: np.ndarray, alpha: float = 0.55) -> np.ndarray:
    """An RGB float image with true positives, false positives and false negatives filled in three colours."""
    picture = overlay(image, None, None)
    for region, colour in ((truth & prediction, TP_COLOUR), (~truth & prediction, FP_COLOUR),
                           (truth & ~prediction, FN_COLOUR)):
        picture[region] = (1 - alpha) * picture[region] + alpha * np.asarray(colour, dtype=np.float32)
    return picture


def slice_dice(truth: np.ndarray, prediction: np.ndarray) -> float:
    """Dice of one slice; 1.0 when both are empty (the per-image convention of docs/metrics.md)."""
    total = int(truth.sum()) + int(prediction.sum())
    return 1.0 if total == 0 else 2.0 * int((truth & prediction).sum()) / total


def plot_predictions(
    samples: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray, str]], path: str | os.PathLike[str],
    title: str = "validation predictions",
) -> None:
    """predictions.png: one panel per validation sample, its Dice in the title.

    True positives are yellow, false positives red, false negatives blue.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    count = max(1, len(samples))
    figure, axes = plt.subplots(1, count, figsize=(3 * count, 3.6), squeeze=False)
    for ax, (image, truth, prediction, label) in zip(axes[0], samples, strict=False):
        truth, prediction = truth.astype(bool), prediction.astype(bool)
        ax.imshow(error_overlay(image, truth, prediction))
        kind = "lesion" if truth.any() else "empty"
        ax.set_title(f"{label}\n{kind} slice, Dice {slice_dice(truth, prediction):.2f}", fontsize=7)
        ax.axis("off")
    for ax in axes[0][len(samples):]:
        ax.axis("off")
    legend = [Patch(color=TP_COLOUR, label="true positive"), Patch(color=FP_COLOUR, label="false positive"),
              Patch(color=FN_COLOUR, label="false negative (missed)")]
    figure.legend(handles=legend, loc="lower center", ncol=3, fontsize=8, frameon=False)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout(rect=(0, 0.06, 1, 0.92))
    _save(figure, path)
    plt.close(figure)
