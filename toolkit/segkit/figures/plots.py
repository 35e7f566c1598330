"""Figures of a run: learning curves and validation predictions with outlines."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from segkit.figures.overlays import label_colour, outline

__all__ = ["plot_curves", "plot_predictions", "overlay", "grey_picture", "error_overlay", "label_overlay",
           "slice_dice", "sample_positions"]


def _save(figure: Any, path: str | os.PathLike[str]) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")
    figure.savefig(tmp, dpi=100, bbox_inches="tight")
    os.replace(tmp, path)


def _label_columns(rows: Sequence[Mapping[str, Any]], metric: str, suffix: str,
                   label_names: Sequence[str]) -> tuple[str, list[tuple[str, str]]]:
    """The kind (``_case`` or ``_global``: the monitored one if logged) and ``(label, metrics.csv column)`` of
    ``metric`` for each label; no columns when metrics.csv has none per label."""
    kinds = [suffix] if suffix in ("_case", "_global") else []
    kinds += [kind for kind in ("_case", "_global") if kind not in kinds]
    for kind in kinds:
        columns = [(name, f"val_{metric}{kind}_{name}") for name in label_names]
        if all(column in rows[0] for _name, column in columns):
            return kind, columns
    return "", []


def plot_curves(rows: Sequence[Mapping[str, Any]], metric_names: Sequence[str], path: str | os.PathLike[str],
                monitor: str | None = None, best_epoch: int | None = None,
                label_names: Sequence[str] = ()) -> None:
    """curves.png: train and validation loss, and each validation metric, per epoch.

    ``monitor`` (a metrics.csv column such as ``val_dice_case``) is drawn thick and named in
    the title; ``best_epoch`` is marked on every panel. Epoch ticks are whole numbers. With
    several ``label_names`` (the foreground labels) a third panel draws the monitored metric of
    each label in its colour beside their mean.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    epochs = [row["epoch"] for row in rows]
    main = next((n for n in metric_names if monitor is not None and monitor.startswith(f"val_{n}")),
                metric_names[0] if metric_names else None)
    suffix = monitor[len(f"val_{main}"):] if monitor is not None and main is not None else ""
    kind, per_label = _label_columns(rows, main, suffix, label_names) if main and len(label_names) > 1 else ("", [])
    figure, axes = plt.subplots(1, 3 if per_label else 2, figsize=(16 if per_label else 11, 4))
    loss_ax, metric_ax = axes[0], axes[1]
    loss_ax.plot(epochs, [r["train_loss"] for r in rows], marker="o", label="train")
    loss_ax.plot(epochs, [r["val_loss"] for r in rows], marker="o", label="validation")
    loss_ax.set(title="loss", xlabel="epoch", ylabel="loss")
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
    if per_label:
        mean = f"val_{main}{kind}"
        _plot_per_label(axes[2], rows, epochs, per_label, mean if mean in rows[0] else None)
        axes[2].set(title=f"validation {main} {'per case' if kind == '_case' else 'pooled'}, per label",
                    xlabel="epoch", ylabel="score", ylim=(0, 1))
    if best_epoch is not None and best_epoch in epochs:
        for ax in axes:
            ax.axvline(best_epoch, color="tab:green", linestyle="--", linewidth=1, label=f"best epoch ({best_epoch})")
    for ax in axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    loss_ax.legend(fontsize=8)
    for ax in axes[1:]:
        ax.legend(fontsize=7)
    figure.tight_layout()
    _save(figure, path)
    plt.close(figure)


def _plot_per_label(ax: Any, rows: Sequence[Mapping[str, Any]], epochs: list[Any], columns: list[tuple[str, str]],
                    mean_column: str | None) -> None:
    """One validation curve per label in the label's colour, and their mean (``mean_column``) in black."""

    for k, (name, column) in enumerate(columns):
        ax.plot(epochs, [r[column] for r in rows], marker="o", color=label_colour(k), label=name)
    if mean_column is not None:
        ax.plot(epochs, [r[mean_column] for r in rows], color="black", linewidth=2.5, marker="o", zorder=5,
                label=f"mean over labels ({mean_column})")


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


def grey_picture(image: np.ndarray, channel: int = 0) -> np.ndarray:
    """One channel of ``image`` (``(H, W)`` or ``(H, W, C)``) as an RGB grey float picture in [0, 1].

    Figures draw coloured masks on it: an image shown in (false) colour would mix with them.
    A ``channel`` past the image's last one shows the last.
    """
    pixels = np.asarray(image, dtype=np.float32)
    if pixels.ndim == 3:
        pixels = pixels[..., min(max(int(channel), 0), pixels.shape[2] - 1)]
    low, high = float(pixels.min()), float(pixels.max())
    pixels = (pixels - low) / (high - low) if high > low else np.zeros_like(pixels)
    return np.repeat(pixels[..., None], 3, axis=2)


def error_overlay(image: np.ndarray, truth: np.ndarray, prediction: np.ndarray, alpha: float = 0.55,
                  channel: int = 0) -> np.ndarray:
    """An RGB float image: ``channel`` in grey, true positives, false positives and false negatives in three colours."""
    picture = grey_picture(image, channel)
    for region, colour in ((truth & prediction, TP_COLOUR), (~truth & prediction, FP_COLOUR),
                           (truth & ~prediction, FN_COLOUR)):
        picture[region] = (1 - alpha) * picture[region] + alpha * np.asarray(colour, dtype=np.float32)
    return picture


def label_overlay(image: np.ndarray, truth: np.ndarray, prediction: np.ndarray, alpha: float = 0.5,
                  channel: int = 0) -> np.ndarray:
    """An RGB float image for several labels: ``channel`` in grey, each label's prediction filled and its truth
    outlined in the label's colour (:func:`segkit.figures.overlays.label_colour`).

    ``truth`` and ``prediction`` are ``(K, H, W)`` bool, one mask per foreground label; a region
    outlined in one colour and filled in another was given the wrong label.
    """

    picture = grey_picture(image, channel)
    for k, predicted in enumerate(np.asarray(prediction, dtype=bool)):
        colour = np.asarray(label_colour(k), dtype=np.float32)
        picture[predicted] = (1 - alpha) * picture[predicted] + alpha * colour
    for k, true in enumerate(np.asarray(truth, dtype=bool)):
        picture[outline(true)] = label_colour(k)
    return picture


def slice_dice(truth: np.ndarray, prediction: np.ndarray) -> float:
    """Dice of one slice; 1.0 when both are empty (the per-image convention of docs/metrics.md)."""
    total = int(truth.sum()) + int(prediction.sum())
    return 1.0 if total == 0 else 2.0 * int((truth & prediction).sum()) / total


def _legend(label_names: Sequence[str] | None) -> list[Any]:
    """Legend entries: the three outcomes of binary predictions, or a colour per label and what fill and outline are."""
    from matplotlib.patches import Patch

    if not label_names or len(label_names) < 2:
        return [Patch(color=TP_COLOUR, label="true positive"), Patch(color=FP_COLOUR, label="false positive"),
                Patch(color=FN_COLOUR, label="false negative (missed)")]

    return [*(Patch(color=label_colour(k), label=name) for k, name in enumerate(label_names)),
            Patch(facecolor=(0.55, 0.55, 0.55), label="filled: predicted"),
            Patch(facecolor="white", edgecolor="black", label="outlined: true")]


def plot_predictions(
    samples: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray, str]], path: str | os.PathLike[str],
    title: str = "validation predictions", display_channel: int = 0, label_names: Sequence[str] | None = None,
) -> None:
    """predictions.png: one panel per validation sample, its Dice in the title, the image's ``display_channel`` in grey.

    Binary: truth and prediction ``(H, W)``; true positives yellow, false positives red, false
    negatives blue. Several labels (``label_names``, one per foreground label): truth and
    prediction ``(K, H, W)``; each label's prediction filled and its truth outlined in its colour,
    each label's Dice in the title.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    several = label_names is not None and len(label_names) > 1
    count = max(1, len(samples))
    figure, axes = plt.subplots(1, count, figsize=(3 * count, 3.6 + 0.15 * several), squeeze=False)
    for ax, (image, truth, prediction, label) in zip(axes[0], samples, strict=False):
        truth, prediction = truth.astype(bool), prediction.astype(bool)
        kind = "lesion" if truth.any() else "empty"
        if several:
            ax.imshow(label_overlay(image, truth, prediction, channel=display_channel))
            scores = ", ".join(f"{name} {slice_dice(t, p):.2f}" for name, t, p in zip(label_names, truth, prediction,
                                                                                       strict=True))
            ax.set_title(f"{label}\n{kind} slice, Dice {scores}", fontsize=7)
        else:
            ax.imshow(error_overlay(image, truth, prediction, channel=display_channel))
            ax.set_title(f"{label}\n{kind} slice, Dice {slice_dice(truth, prediction):.2f}", fontsize=7)
        ax.axis("off")
    for ax in axes[0][len(samples):]:
        ax.axis("off")
    legend = _legend(label_names)
    figure.legend(handles=legend, loc="lower center", ncol=min(len(legend), 6), fontsize=8, frameon=False)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout(rect=(0, 0.06, 1, 0.92))
    _save(figure, path)
    plt.close(figure)
