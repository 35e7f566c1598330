"""The figures of a 3D run: predictions.png and cases.png show one slice of each chosen validation volume.

Each volume is predicted whole (sliding windows, as validation does it); the slice shown is the one
along the volume's last axis that holds the most foreground in the truth (the middle slice of an
empty volume), so the panel shows what the model segmented where there is something to segment.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

__all__ = ["volume_samples", "volume_case_samples"]


def _slice_of(truth: torch.Tensor) -> int:
    """The last-axis slice with the most foreground of ``truth`` ``(K, X, Y, Z)`` bool; the middle when empty."""
    per_slice = truth.flatten(0, -2).sum(dim=0) if truth.ndim > 1 else truth
    return int(per_slice.argmax()) if int(per_slice.max()) > 0 else truth.shape[-1] // 2


def _predict_volumes(trainer: Any, view: Any, chosen: Sequence[int], titles: Sequence[str]) -> list[tuple]:
    """``(image slice (H, W, C), truth, prediction, title)`` for volumes ``chosen`` of ``view``."""
    labels = trainer.labels
    module = trainer.inference_module
    module.eval()
    samples = []
    with torch.inference_mode():
        for position, title in zip(chosen, titles, strict=True):
            image, mask = view[position]
            logits = trainer.infer(module, image[None].to(trainer.device)).float()
            prediction = labels.class_masks(logits, trainer.config.metrics.threshold)[0].cpu()
            truth = labels.truth_masks(mask[None])[0]
            if not labels.several:
                prediction, truth = prediction.any(dim=0), truth.any(dim=0)
            index = _slice_of(truth if truth.ndim == 4 else truth[None])
            picture = image[..., index].permute(1, 2, 0).numpy()
            samples.append((picture, truth[..., index].numpy(), prediction[..., index].numpy(), title))
    return samples


def volume_samples(trainer: Any, view: Any, count: int = 6) -> list[tuple]:
    """Up to ``count`` validation volumes, spread over the validation cases in order."""
    total = len(view)
    chosen = sorted({int(i) for i in np.linspace(0, total - 1, num=min(count, total))})
    return _predict_volumes(trainer, view, chosen, [f"case {view.cases[i]}" for i in chosen])


def volume_case_samples(trainer: Any, view: Any, table: Any, metric: str) -> list[tuple]:
    """For cases.png: the best- and the worst-scoring validation volume."""
    if table is None or metric not in table.columns or table.empty:
        return []
    picks = [("best", table.loc[table[metric].idxmax()]), ("worst", table.loc[table[metric].idxmin()])]
    if picks[0][1]["case"] == picks[1][1]["case"]:
        picks = picks[:1]
    chosen, titles = [], []
    for label, row in picks:
        chosen.append(view.cases.index(str(row["case"])))
        titles.append(f"{label} case {row['case']}\n(case {metric} {float(row[metric]):.2f})")
    return _predict_volumes(trainer, view, chosen, titles)
