"""What a run reports when it ends: the final validation's missed lesion slices, the headline line, and
the validation items the figures (predictions.png, cases.png) show with their predicted masks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from segkit.config import monitored_metric
from segkit.figures.plots import sample_positions
from segkit.labels import valid_pixels
from segkit.train.loop import Trainer

__all__ = ["prediction_samples", "case_samples", "final_validation", "headline", "missed_note", "per_image_note"]


def prediction_samples(trainer: Trainer, view: Any, count: int = 6) -> list[tuple]:
    """The validation items :func:`~segkit.figures.plots.sample_positions` picks, with their predicted masks."""

    chosen = sample_positions(view.index, count)
    return _predict_items(trainer, view, chosen, [str(view.index["item"].iloc[i]) for i in chosen])


def _predict_items(trainer: Trainer, view: Any, chosen: list[int], titles: list[str]) -> list[tuple]:
    """``(centre slice image, truth, prediction, title)`` of items ``chosen`` of ``view``, predicted in one batch.

    Truth and prediction are ``(H, W)`` for one foreground label, ``(K, H, W)`` (one per label) for several.
    """
    items = [view[i] for i in chosen]
    images = [image for image, _ in items]
    trainer.module.eval()
    with torch.inference_mode():
        if trainer.inferer is None and len({tuple(image.shape) for image in images}) == 1:
            logits = list(trainer.module(torch.stack(images).to(trainer.device)).float())  # one batch
        else:  # images at their own sizes, each whole by sliding windows (a run on 2D patches)
            logits = [trainer.infer(trainer.module, image[None].to(trainer.device))[0].float() for image in images]
    labels = trainer.labels
    threshold = trainer.config.metrics.threshold
    predictions = [labels.class_masks(item[None], threshold)[0].cpu() for item in logits]
    truths = [labels.truth_masks(mask[None])[0] & valid_pixels(mask) for _, mask in items]
    if not labels.several:
        predictions, truths = [p.any(dim=0) for p in predictions], [t.any(dim=0) for t in truths]
    per_slice = int(getattr(view, "slice_channels", items[0][0].shape[0]))
    centre = int(getattr(view, "context", 0)) * per_slice  # with 2.5D context, show the slice being segmented
    return [
        (image[centre:centre + per_slice].permute(1, 2, 0).numpy(), truth.numpy(), prediction.numpy(), title)
        for (image, _mask), truth, prediction, title in zip(items, truths, predictions, titles, strict=True)
    ]


def per_image_note(row: dict[str, Any], monitor: str) -> str:
    """``(per-image 0.81)`` beside a per-case or pooled monitor, so both are seen."""
    metric = monitored_metric(monitor)
    if monitor == metric or f"val_{metric}" not in row:
        return ""
    return f" (per-image {row[f'val_{metric}']:.4f})"


def final_validation(trainer: Trainer, keep: Any = None) -> tuple[int, int, Any]:
    """``(lesion slices predicted empty, lesion slices, per-case table)`` on validation with the model as loaded.

    ``keep`` sees each batch's images, masks, logits and cases (a 3D run's figures keep their slices from it).
    """
    _loss, accumulator = trainer.evaluate("val", keep=keep)
    counts = accumulator.counts().cpu()
    if counts.ndim == 3:  # per label: a lesion slice holds any foreground label
        counts = counts.sum(dim=1)
    tp, fp, fn, _tn = counts.unbind(1)
    lesion = (tp + fn) > 0
    try:
        table = accumulator.per_case_table()
    except ValueError:  # no case ids: no table
        table = None
    return int((lesion & ((tp + fp) == 0)).sum()), int(lesion.sum()), table


def case_samples(trainer: Trainer, view: Any, table: Any, metric: str) -> list[tuple]:
    """For cases.png: the largest-lesion slice of the best- and of the worst-scoring validation patient."""
    if table is None or metric not in table.columns:
        return []
    scored = table[(table["tp"] + table["fn"]) > 0]
    if scored.empty:
        return []
    picks = [("best", scored.loc[scored[metric].idxmax()]), ("worst", scored.loc[scored[metric].idxmin()])]
    if picks[0][1]["case"] == picks[1][1]["case"]:
        picks = picks[:1]
    cases = view.index["case"].astype(str).to_numpy()
    chosen, titles = [], []
    for label, row in picks:
        positions = [int(i) for i in np.flatnonzero(cases == str(row["case"]))]
        chosen.append(max(positions, key=lambda i: int(view.read(i)[1].sum())))
        titles.append(f"{label} patient {row['case']}\n(patient {metric} {float(row[metric]):.2f})")
    return _predict_items(trainer, view, chosen, titles)


def headline(summary: dict[str, Any], best_row: dict[str, Any], monitor: str, root: Path) -> str:
    """The run's last line: the monitored (per-case or pooled) score first, per-image beside, lesions missed."""
    metric = monitored_metric(monitor)
    others = [f"{label} {best_row[key]:.4f}" for label, key in
              (("per-case", f"val_{metric}_case"), ("per-image", f"val_{metric}"), ("pooled", f"val_{metric}_global"))
              if key in best_row and key != f"val_{monitor}"]
    return (f"best val_{monitor} {summary['headline']['value']:.4f} at epoch {summary['best_epoch']}"
            + (f" ({metric}: {', '.join(others)})" if others else "")
            + f"; {missed_note(summary)}; outputs in {root}")


def missed_note(summary: dict[str, Any]) -> str:
    """"M of N validation lesion slices got an empty prediction" (volumes, in a 3D run: "lesion volumes")."""
    items = summary.get("validation_items", "slices")
    return (f"{summary['lesion_slices_empty_prediction']} of {summary['lesion_slices']} validation lesion {items} "
            "got an empty prediction")
