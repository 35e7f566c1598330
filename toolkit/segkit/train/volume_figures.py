"""The figures of a 3D run: predictions.png and cases.png show one slice of each chosen validation volume.

Each volume is predicted whole (sliding windows, as validation does it); the slice shown is the one
along the volume's last axis that holds the most foreground in the truth (the middle slice of an
empty volume), so the panel shows what the model segmented where there is something to segment.
The final validation predicts every validation volume once with the best weights; :class:`KeptSlices`
keeps each one's slice from it, so the figures predict nothing again (only, with several processes,
the volumes another process validated).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

__all__ = ["KeptSlices", "volume_samples", "volume_case_samples"]


def _slice_of(truth: torch.Tensor) -> int:
    """The last-axis slice with the most foreground of ``truth`` ``(K, X, Y, Z)`` bool; the middle when empty."""
    per_slice = truth.flatten(0, -2).sum(dim=0) if truth.ndim > 1 else truth
    return int(per_slice.argmax()) if int(per_slice.max()) > 0 else truth.shape[-1] // 2


def _figure_slice(labels: Any, threshold: float, image: torch.Tensor, mask: torch.Tensor,
                  logits: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(image slice (H, W, C), truth, prediction)`` of one volume ``(C, X, Y, Z)`` with its mask ``(1, X, Y, Z)``
    and logits ``(out_channels, X, Y, Z)``: the slice :func:`_slice_of` picks, on the host."""
    prediction = labels.class_masks(logits[None].float(), threshold)[0]
    truth = labels.truth_masks(mask[None])[0]
    if not labels.several:
        prediction, truth = prediction.any(dim=0), truth.any(dim=0)
    index = _slice_of(truth if truth.ndim == 4 else truth[None])
    return (image[..., index].permute(1, 2, 0).cpu().numpy(), truth[..., index].cpu().numpy(),
            prediction[..., index].cpu().numpy())


class KeptSlices:
    """Called with each batch of the final validation (``Trainer.evaluate(keep=...)``): keeps every volume's
    figure slice by case, so the figures show what the final validation scored without predicting again."""

    def __init__(self, trainer: Any) -> None:
        self.labels, self.threshold = trainer.labels, trainer.config.metrics.threshold
        self.slices: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    def __call__(self, images: torch.Tensor, masks: torch.Tensor, logits: torch.Tensor, cases: Sequence[str]) -> None:
        for image, mask, volume_logits, case in zip(images, masks, logits, cases, strict=True):
            self.slices[str(case)] = _figure_slice(self.labels, self.threshold, image, mask, volume_logits)


def _predict_volumes(trainer: Any, view: Any, chosen: Sequence[int], titles: Sequence[str],
                     kept: KeptSlices | None = None) -> list[tuple]:
    """``(image slice (H, W, C), truth, prediction, title)`` for volumes ``chosen`` of ``view``: from ``kept`` where
    it holds the volume, else predicted here."""
    module = trainer.inference_module
    module.eval()
    samples = []
    with torch.inference_mode():
        for position, title in zip(chosen, titles, strict=True):
            found = kept.slices.get(str(view.cases[position])) if kept is not None else None
            if found is None:
                image, mask = view[position]
                logits = trainer.infer(module, image[None].to(trainer.device))[0]
                found = _figure_slice(trainer.labels, trainer.config.metrics.threshold, image, mask, logits.cpu())
            samples.append((*found, title))
    return samples


def volume_samples(trainer: Any, view: Any, count: int = 6, kept: KeptSlices | None = None) -> list[tuple]:
    """Up to ``count`` validation volumes, spread over the validation cases in order (from ``kept`` where it has
    them)."""
    total = len(view)
    chosen = sorted({int(i) for i in np.linspace(0, total - 1, num=min(count, total))})
    return _predict_volumes(trainer, view, chosen, [f"case {view.cases[i]}" for i in chosen], kept)


def volume_case_samples(trainer: Any, view: Any, table: Any, metric: str, kept: KeptSlices | None = None) -> list[tuple]:
    """For cases.png: the best- and the worst-scoring validation volume (from ``kept`` where it has them)."""
    if table is None or metric not in table.columns or table.empty:
        return []
    picks = [("best", table.loc[table[metric].idxmax()]), ("worst", table.loc[table[metric].idxmin()])]
    if picks[0][1]["case"] == picks[1][1]["case"]:
        picks = picks[:1]
    chosen, titles = [], []
    for label, row in picks:
        chosen.append(view.cases.index(str(row["case"])))
        titles.append(f"{label} case {row['case']}\n(case {metric} {float(row[metric]):.2f})")
    return _predict_volumes(trainer, view, chosen, titles, kept)
