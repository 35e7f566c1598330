"""Confusion counts and the on-device metric accumulator.

Predictions are thresholded once into per-image counts ``[tp, fp, fn, tn]``; every
metric is a function of counts, so per-image, per-case (3D, one patient) and global
(pooled) values come from the same counts summed differently. With several foreground
labels (:mod:`segkit.labels`) there is one row of counts per label, ``(N, K, 4)``, each
label is scored on its own, and the headline values are the mean over the foreground
labels; per case and pooled, that mean leaves out a label absent from both the truth and the
prediction (nnU-Net's convention), so declared labels that never occur do not lift it. See
docs/metrics.md.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import torch

from segkit.labels import Labels, valid_pixels

if TYPE_CHECKING:
    import pandas

__all__ = [
    "COUNT_NAMES",
    "Metric",
    "MetricAccumulator",
    "confusion_counts",
    "mask_counts",
    "label_counts",
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
    target = target.detach()
    return mask_counts(torch.sigmoid(logits.detach().float()) >= threshold, target > 0.5, valid_pixels(target))


@torch.no_grad()
def mask_counts(predicted: torch.Tensor, actual: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Per-image confusion counts of boolean masks: ``(N, ...)`` each, output ``(N, 4)`` int64 ``[tp, fp, fn, tn]``.

    ``valid`` (bool, the same shape): only those pixels count (the rest are ignored, :data:`segkit.labels.IGNORE`).
    """
    predicted, actual = predicted.flatten(1), actual.flatten(1)
    if valid is not None:
        valid = valid.flatten(1)
        predicted, actual = predicted & valid, actual & valid
    tp = (predicted & actual).sum(dim=1)
    fp = (predicted & ~actual).sum(dim=1)
    fn = (~predicted & actual).sum(dim=1)
    tn = (~predicted & ~actual).sum(dim=1) if valid is None else (~predicted & ~actual & valid).sum(dim=1)
    return torch.stack([tp, fp, fn, tn], dim=1).to(torch.int64)


@torch.no_grad()
def label_counts(predicted: torch.Tensor, actual: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Per-image, per-label confusion counts of boolean masks ``(N, K, H, W)``: ``(N, K, 4)`` int64.

    ``valid`` ``(N, 1, H, W)`` bool: only those pixels count."""
    if predicted.shape != actual.shape:
        raise ValueError(f"predicted {tuple(predicted.shape)} and actual {tuple(actual.shape)} masks differ in shape")
    n, k = predicted.shape[:2]
    if valid is not None:
        valid = valid.expand_as(predicted).reshape(n * k, -1)
    return mask_counts(predicted.reshape(n * k, -1), actual.reshape(n * k, -1), valid).view(n, k, 4)


def scores_from_counts(metrics: Mapping[str, Metric], counts: torch.Tensor) -> dict[str, torch.Tensor]:
    """Each metric's scores for counts ``(..., 4)``: a tensor of shape ``(...)`` per name."""
    tp, fp, fn, tn = counts.unbind(-1)
    return {name: metric.score(tp, fp, fn, tn) for name, metric in metrics.items()}


def group_counts(counts: torch.Tensor, cases: Sequence[str]) -> tuple[list[str], torch.Tensor, torch.Tensor]:
    """Sum per-image counts ``(N, ...)`` by case, in order of first appearance.

    Returns the case names, their counts ``(cases, ...)`` and their image numbers ``(cases,)``.
    """
    if len(cases) != counts.shape[0]:
        raise ValueError(f"{len(cases)} case ids for {counts.shape[0]} images")
    position: dict[str, int] = {}
    for case in cases:
        position.setdefault(case, len(position))
    index = torch.tensor([position[case] for case in cases], dtype=torch.long, device=counts.device)
    summed = counts.new_zeros((len(position), *counts.shape[1:])).index_add_(0, index, counts)
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

    def __init__(self, metrics: Mapping[str, Metric], threshold: float = 0.5, labels: Labels | None = None) -> None:
        self.metrics = dict(metrics)
        self.threshold = threshold
        self.labels = labels
        self.reset()

    @property
    def per_label(self) -> bool:
        """Whether counts are kept per foreground label, ``(N, K, 4)`` (data with several labels)."""
        return self.labels is not None and self.labels.several

    def empty_like(self) -> MetricAccumulator:
        """A new, empty accumulator with the same metrics, threshold and labels."""
        return type(self)(self.metrics, threshold=self.threshold, labels=self.labels)

    def reset(self) -> None:
        """Forget every image seen so far."""
        self._chunks: list[torch.Tensor] = []
        self._cases: list[str] | None = None

    def update(self, logits: torch.Tensor, target: torch.Tensor, cases: Sequence[str] | None = None) -> None:
        """Add a batch: logits ``(N, out_channels, H, W)`` and target ``(N, 1, H, W)`` (label values), optional
        case id per image."""
        if self.labels is None or (self.labels.is_binary and logits.shape == target.shape):
            counts = confusion_counts(logits, target, self.threshold)
        else:
            predicted = self.labels.class_masks(logits, self.threshold)
            target = target.detach()
            counts = label_counts(predicted, self.labels.truth_masks(target), valid_pixels(target))
            counts = counts if self.per_label else counts[:, 0]
        self.update_counts(counts, cases)

    def update_counts(self, counts: torch.Tensor, cases: Sequence[str] | None = None) -> None:
        """Add per-image counts ``(N, 4)``, or ``(N, K, 4)`` per foreground label; optional case id per image."""
        shape = "(N, K, 4)" if self.per_label else "(N, 4)"
        if counts.shape[-1:] != (4,) or counts.ndim != (3 if self.per_label else 2) or (
                self.per_label and counts.shape[1] != len(self.labels.foreground)):
            raise ValueError(f"counts must have shape {shape}, got {tuple(counts.shape)}")
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
        """All per-image counts so far, ``(N, 4)`` or ``(N, K, 4)`` int64, on the device they came from."""
        if not self._chunks:
            return torch.zeros((0, len(self.labels.foreground), 4) if self.per_label else (0, 4), dtype=torch.int64)
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
        """Each metric's score for every image, ``(N,)`` float on the host (the foreground mean with several labels)."""
        return _foreground_mean(scores_from_counts(self.metrics, self.counts().cpu()), self.per_label)

    def compute(self) -> dict[str, Any]:
        """Per-image means, global (pooled) scores and, with case ids, per-case mean and median.

        Returns ``{"n_images", "n_cases", "per_image": {name: {"mean"}}, "global": {name},
        "per_case": {name: {"mean", "median"}}}``; ``per_case`` only when case ids were given.
        With several foreground labels each value is the mean over the labels (per image,
        per case or pooled, then summarised), and ``per_class`` holds the same structure for
        each label by name. Values are NaN when no image was seen.
        """
        counts = self.counts().cpu()
        result = self._summaries(counts, self.per_label)
        if self.per_label:
            result["per_class"] = {name: self._summaries(counts[:, k], False)
                                   for k, name in enumerate(self.labels.foreground)}
        return result

    def _summaries(self, counts: torch.Tensor, per_label: bool) -> dict[str, Any]:
        n_images = counts.shape[0]
        empty = n_images == 0
        per_image = _foreground_mean(scores_from_counts(self.metrics, counts), per_label)
        pooled = _present_mean(scores_from_counts(self.metrics, counts.sum(dim=0)), counts.sum(dim=0), per_label)
        result: dict[str, Any] = {
            "n_images": n_images,
            "n_cases": None,
            "per_image": {name: {"mean": _mean(s)} for name, s in per_image.items()},
            "global": {name: float("nan") if empty else float(s) for name, s in pooled.items()},
        }
        if self._cases is not None:
            names, case_counts, _ = group_counts(counts, self._cases)
            per_case = _present_mean(scores_from_counts(self.metrics, case_counts), case_counts, per_label)
            result["n_cases"] = len(names)
            result["per_case"] = {
                name: {"mean": _mean(s), "median": _median(s)} for name, s in per_case.items()
            }
        return result

    def per_case_table(self) -> pandas.DataFrame:
        """One row per case: ``case, n_images, tp, fp, fn, tn`` and one column per metric.

        With several foreground labels the counts and scores also come per label (``tp_<label>``,
        ``dice_<label>``, ...); each metric's column is their mean over the labels and ``tp`` ...
        ``tn`` are summed over the labels (each pixel counted once per label).
        """
        import pandas

        if self._cases is None:
            raise ValueError("no case ids were given to update(), so there is no per-case table")
        names, case_counts, n_images = group_counts(self.counts().cpu(), self._cases)
        table = pandas.DataFrame({"case": names, "n_images": n_images.numpy()})
        if not self.per_label:
            for column, values in zip(COUNT_NAMES, case_counts.unbind(1), strict=True):
                table[column] = values.numpy()
            for name, scores in scores_from_counts(self.metrics, case_counts).items():
                table[name] = scores.double().numpy()
            return table
        for column, values in zip(COUNT_NAMES, case_counts.sum(dim=1).unbind(1), strict=True):
            table[column] = values.numpy()  # summed over the labels (each pixel once per label)
        scores = scores_from_counts(self.metrics, case_counts)
        for name, values in _present_mean(scores, case_counts, True).items():
            table[name] = values.numpy()
        for k, label in enumerate(self.labels.foreground):
            for name, values in scores.items():
                table[f"{name}_{label}"] = values[:, k].double().numpy()
            for column, values in zip(COUNT_NAMES, case_counts[:, k].unbind(1), strict=True):
                table[f"{column}_{label}"] = values.numpy()
        return table


def _foreground_mean(scores: dict[str, torch.Tensor], per_label: bool) -> dict[str, torch.Tensor]:
    """With ``per_label``, scores ``(..., K)`` averaged over the K foreground labels; else as they are."""
    return {name: s.double().mean(dim=-1) for name, s in scores.items()} if per_label else scores


def _present_mean(scores: dict[str, torch.Tensor], counts: torch.Tensor, per_label: bool) -> dict[str, torch.Tensor]:
    """With ``per_label``, scores ``(..., K)`` averaged over the labels present in the truth or the prediction.

    A label with ``TP + FP + FN = 0`` (absent from both) is left out of the mean, as nnU-Net
    leaves its NaN out: 300 declared labels of which 2 occur are scored on those 2. Where no label
    occurs at all, the mean over every label (each its empty score) stands, as for binary data.
    """
    if not per_label:
        return scores
    present = counts[..., :3].sum(dim=-1) > 0  # (..., K)
    number = present.sum(dim=-1)
    out = {}
    for name, values in scores.items():
        values = values.double()
        kept = torch.where(present, values, torch.zeros_like(values)).sum(dim=-1) / number.clamp(min=1)
        out[name] = torch.where(number > 0, kept, values.mean(dim=-1))
    return out


def _mean(scores: torch.Tensor) -> float:
    return float(scores.double().mean()) if scores.numel() else float("nan")


def _median(scores: torch.Tensor) -> float:
    """The median, averaging the two middle values for an even count (like pandas)."""
    return float(torch.quantile(scores.double(), 0.5)) if scores.numel() else float("nan")
