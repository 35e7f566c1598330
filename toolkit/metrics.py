"""Confusion counts and the on-device metric accumulator.

Predictions are thresholded once into per-image counts ``[tp, fp, fn, tn]``; every
metric is a function of counts, so per-image, per-case (3D, one patient) and global
(pooled) values come from the same counts summed differently. See docs/metrics.md.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import torch

if TYPE_CHECKING:
    import pandas

__all__ = [
    "COUNT_NAMES",
    "Metric",
    "MetricAccumulator",
    "confusion_counts",
    "mask_counts",
    "group_counts",
    "scores_from_counts",
]

#: The columns of a counts tensor.
COUNT_NAMES: tuple[str, str, str, str] = ("tp", "fp", "fn", "tn")


class Metric(Protocol):
    """What a metric component provides (see docs/architecture.md)."""

    higher_is_better: bool

    def score(self, tp: torch.Tensor, fp: torch.Tensor, fn: torch.Tensor, tn: torch.Tensor) -> torch.Tensor: ...


@torch.no_grad()
def confusion_counts(logits: torch.Tensor, target: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """Per-image confusion counts of ``sigmoid(logits) >= threshold`` against ``target``.

    Counts are summed over channels and pixels and stay on the input's device (no
    host synchronisation).

    Shape:
        - logits: ``(N, C, H, W)``, any float dtype.
        - target: ``(N, C, H, W)``, values in {0, 1} (above 0.5 counts as lesion).
        - Output: ``(N, 4)`` int64, columns ``[tp, fp, fn, tn]``.
    """
    if logits.shape != target.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and target {tuple(target.shape)} differ in shape")
    return mask_counts(torch.sigmoid(logits.detach().float()) >= threshold, target.detach() > 0.5)


@torch.no_grad()
def mask_counts(predicted: torch.Tensor, actual: torch.Tensor) -> torch.Tensor:
    """Per-image confusion counts of boolean masks: ``(N, ...)`` each, output ``(N, 4)`` int64 ``[tp, fp, fn, tn]``."""
    predicted, actual = predicted.flatten(1), actual.flatten(1)
    tp = (predicted & actual).sum(dim=1)
    fp = (predicted & ~actual).sum(dim=1)
    fn = (~predicted & actual).sum(dim=1)
    tn = (~predicted & ~actual).sum(dim=1)
    return torch.stack([tp, fp, fn, tn], dim=1).to(torch.int64)


def scores_from_counts(metrics: Mapping[str, Metric], counts: torch.Tensor) -> dict[str, torch.Tensor]:
    """Each metric's scores for counts ``(..., 4)``: a tensor of shape ``(...)`` per name."""
    tp, fp, fn, tn = counts.unbind(-1)
    return {name: metric.score(tp, fp, fn, tn) for name, metric in metrics.items()}


def group_counts(counts: torch.Tensor, cases: Sequence[str]) -> tuple[list[str], torch.Tensor, torch.Tensor]:
    """Sum per-image counts ``(N, 4)`` by case, in order of first appearance.

    Returns the case names, their counts ``(K, 4)`` and their image numbers ``(K,)``.
    """
    if len(cases) != counts.shape[0]:
        raise ValueError(f"{len(cases)} case ids for {counts.shape[0]} images")
    position: dict[str, int] = {}
    for case in cases:
        position.setdefault(case, len(position))
    index = torch.tensor([position[case] for case in cases], dtype=torch.long, device=counts.device)
    summed = counts.new_zeros((len(position), counts.shape[1])).index_add_(0, index, counts)
    n_images = torch.bincount(index, minlength=len(position))
    return list(position), summed, n_images


class MetricAccumulator:
    """Collects per-image confusion counts over batches and scores them at the end.

    ``update`` keeps the counts on the device of the logits (no ``.item()``, no copy
    to the host), so it costs no synchronisation per step; ``compute`` copies them
    once. To merge accumulators from several processes, gather their ``state()``
    and feed each into one accumulator with ``update_counts``.

    Args:
        metrics: metric objects by name, e.g. ``{"dice": Dice(), "iou": IoU()}``.
        threshold: probability at or above which a pixel is predicted as lesion.
    """

    def __init__(self, metrics: Mapping[str, Metric], threshold: float = 0.5) -> None:
        self.metrics = dict(metrics)
        self.threshold = threshold
        self.reset()

    def reset(self) -> None:
        """Forget every image seen so far."""
        self._chunks: list[torch.Tensor] = []
        self._cases: list[str] | None = None

    def update(self, logits: torch.Tensor, target: torch.Tensor, cases: Sequence[str] | None = None) -> None:
        """Add a batch: logits and target ``(N, C, H, W)``, optional case id per image."""
        self.update_counts(confusion_counts(logits, target, self.threshold), cases)

    def update_counts(self, counts: torch.Tensor, cases: Sequence[str] | None = None) -> None:
        """Add per-image counts ``(N, 4)``, optional case id per image."""
        if counts.ndim != 2 or counts.shape[1] != 4:
            raise ValueError(f"counts must have shape (N, 4), got {tuple(counts.shape)}")
        if cases is not None and len(cases) != counts.shape[0]:
            raise ValueError(f"{len(cases)} case ids for {counts.shape[0]} images")
        if self._chunks and (cases is None) != (self._cases is None):
            raise ValueError("give case ids with every update or with none")
        if cases is not None:
            if self._cases is None:
                self._cases = []
            self._cases.extend(str(case) for case in cases)
        self._chunks.append(counts.detach())

    def counts(self) -> torch.Tensor:
        """All per-image counts so far, ``(N, 4)`` int64, on the device they came from."""
        if not self._chunks:
            return torch.zeros((0, 4), dtype=torch.int64)
        if len(self._chunks) > 1:
            self._chunks = [torch.cat(self._chunks)]
        return self._chunks[0]

    def cases(self) -> list[str] | None:
        """The case id of each image, or None when none were given."""
        return None if self._cases is None else list(self._cases)

    def state(self) -> tuple[torch.Tensor, list[str] | None]:
        """``(counts, cases)``: everything needed to rebuild or merge this accumulator."""
        return self.counts(), self.cases()

    def load_state(self, state: tuple[torch.Tensor, Sequence[str] | None]) -> None:
        """Replace the contents with a ``state()`` (from this or another process)."""
        self.reset()
        counts, cases = state
        self.update_counts(counts, cases)

    def per_image_scores(self) -> dict[str, torch.Tensor]:
        """Each metric's score for every image, ``(N,)`` float on the host."""
        return scores_from_counts(self.metrics, self.counts().cpu())

    def compute(self) -> dict[str, Any]:
        """Per-image means, global (pooled) scores and, with case ids, per-case mean and median.

        Returns ``{"n_images", "n_cases", "per_image": {name: {"mean"}}, "global": {name},
        "per_case": {name: {"mean", "median"}}}``; ``per_case`` only when case ids were given.
        Values are NaN when no image was seen.
        """
        counts = self.counts().cpu()
        n_images = counts.shape[0]
        empty = n_images == 0
        per_image = scores_from_counts(self.metrics, counts)
        pooled = scores_from_counts(self.metrics, counts.sum(dim=0))
        result: dict[str, Any] = {
            "n_images": n_images,
            "n_cases": None,
            "per_image": {name: {"mean": _mean(s)} for name, s in per_image.items()},
            "global": {name: float("nan") if empty else float(s) for name, s in pooled.items()},
        }
        if self._cases is not None:
            names, case_counts, _ = group_counts(counts, self._cases)
            per_case = scores_from_counts(self.metrics, case_counts)
            result["n_cases"] = len(names)
            result["per_case"] = {
                name: {"mean": _mean(s), "median": _median(s)} for name, s in per_case.items()
            }
        return result

    def per_case_table(self) -> pandas.DataFrame:
        """One row per case: ``case, n_images, tp, fp, fn, tn`` and one column per metric."""
        import pandas

        if self._cases is None:
            raise ValueError("no case ids were given to update(), so there is no per-case table")
        names, case_counts, n_images = group_counts(self.counts().cpu(), self._cases)
        table = pandas.DataFrame({"case": names, "n_images": n_images.numpy()})
        for column, values in zip(COUNT_NAMES, case_counts.unbind(1), strict=True):
            table[column] = values.numpy()
        for name, scores in scores_from_counts(self.metrics, case_counts).items():
            table[name] = scores.double().numpy()
        return table


def _mean(scores: torch.Tensor) -> float:
    return float(scores.double().mean()) if scores.numel() else float("nan")


def _median(scores: torch.Tensor) -> float:
    """The median, averaging the two middle values for an even count (like pandas)."""
    return float(torch.quantile(scores.double(), 0.5)) if scores.numel() else float("nan")
