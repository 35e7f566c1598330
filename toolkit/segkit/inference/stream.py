"""Images through a :class:`~segkit.inference.predictor.Predictor` in batches, in order, case by case.

:func:`predict_stream` is the loop that ``segkit predict`` and ``segkit evaluate`` share: it reads
items lazily, batches those of one size, and yields each item's :class:`Prediction` in input order,
holding back an item until every slice of its case is predicted when a case-level step (3D
post-processing) needs the whole case. :func:`match_channels` converts an image to the channels a
model takes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from segkit.errors import DataError
from segkit.inference.postprocess import postprocess as apply_postprocess
from segkit.inference.predictor import Predictor
from segkit.labels import Labels

__all__ = ["Prediction", "match_channels", "predict_stream"]


def match_channels(image: np.ndarray, channels: int | None) -> tuple[np.ndarray, str | None]:
    """An ``H x W x C`` uint8 image with ``channels`` channels, and a note when it had to be converted.

    Grey to colour repeats the channel; colour to grey uses OpenCV's luminance weights.
    """
    import cv2

    if image.ndim == 2:
        image = image[:, :, None]
    found = image.shape[2]
    if channels is None or found == channels:
        return image, None
    if found == 1:
        return np.repeat(image, channels, axis=2), f"grayscale image repeated to {channels} channels"
    if channels == 1 and found == 3:
        return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)[:, :, None], "3-channel image converted to grayscale"
    raise DataError(f"the image has {found} channels and the model takes {channels}; convert it first.")


@dataclass
class Prediction:
    """One item's result from :func:`predict_stream`; ``error`` is set (and the arrays are None) when it failed."""

    entry: Any
    image: np.ndarray | None = None
    extra: Any = None
    probability: np.ndarray | None = None
    mask: np.ndarray | None = None
    """Binary models: ``(H, W)`` bool. Several labels: ``(K, H, W)`` bool, one mask per foreground label."""
    converted: str | None = None
    error: str | None = None


def predict_stream(
    predictor: Predictor,
    entries: Iterable[Any],
    read: Callable[[Any], tuple[np.ndarray, Any]],
    *,
    case_of: Callable[[Any], str | None] = lambda _entry: None,
    batch_size: int = 8,
    threshold: float | None = None,
    postprocess: str = "none",
    keep_images: bool = False,
) -> Iterator[Prediction]:
    """Read, predict, threshold and post-process items in batches, yielding one :class:`Prediction` each.

    ``read(entry)`` returns ``(image H x W x C uint8, extra)``; ``extra`` (a ground
    truth, say) is passed through. A :class:`DataError` from ``read`` becomes a
    Prediction with ``error``. Consecutive images of the same size share a batch.
    Entries of one case (``case_of``) must be consecutive, in slice order: each case
    is post-processed as a volume once all its slices are predicted.
    """

    threshold = predictor.threshold if threshold is None else threshold
    labels = getattr(predictor, "labels", None) or Labels()
    pending: list[Prediction] = []
    batch: list[Prediction] = []

    def run_batch() -> None:
        if not batch:
            return
        images = torch.from_numpy(np.stack([p.image for p in batch])).permute(0, 3, 1, 2).float() / 255.0
        probabilities = predictor.probabilities(images)
        if not labels.masks_per_label:
            for p, probability in zip(batch, probabilities[:, 0].numpy(), strict=True):
                p.probability = probability
                p.mask = probability >= threshold
        else:
            masks = labels.masks_from_probabilities(probabilities, threshold)
            for p, probability, mask in zip(batch, probabilities.numpy(), masks.numpy(), strict=True):
                p.probability, p.mask = probability, mask
        pending.extend(batch)
        batch.clear()

    def finished(upto: int) -> Iterator[Prediction]:
        done = pending[:upto]
        del pending[:upto]
        ready = [p for p in done if p.error is None]
        cases = [case_of(p.entry) for p in ready]
        if ready and ready[0].mask.ndim == 3:  # one mask per label: each label post-processed on its own
            per_label = [apply_postprocess([p.mask[k] for p in ready], cases, postprocess)
                         for k in range(ready[0].mask.shape[0])]
            masks = [np.stack([label[i] for label in per_label]) for i in range(len(ready))]
        else:
            masks = apply_postprocess([p.mask for p in ready], cases, postprocess)
        for p, mask in zip(ready, masks, strict=True):
            p.mask = mask.astype(bool)
        for p in done:
            if not keep_images:
                p.image = None
            yield p

    def complete_cases() -> Iterator[Prediction]:
        if not pending:
            return
        last = case_of(pending[-1].entry)
        upto = len(pending)
        if last is not None:
            while upto and case_of(pending[upto - 1].entry) == last:
                upto -= 1
        yield from finished(upto)

    for entry in entries:
        prediction = Prediction(entry)
        try:
            image, prediction.extra = read(entry)
            context = getattr(predictor, "context", 0)
            if context and predictor.in_channels is not None and image.ndim == 3 \
                    and image.shape[2] == predictor.slice_channels:
                raise DataError(f"the model takes {2 * context + 1} stacked slices (2.5D context {context}) but got "
                                "a single slice; stack the neighbouring slices as channels (predict_files does).")
            prediction.image, prediction.converted = match_channels(image, predictor.in_channels)
        except DataError as error:
            prediction.error = str(error)
        if prediction.error is None:
            if batch and (batch[0].image.shape != prediction.image.shape or len(batch) >= batch_size):
                run_batch()
                yield from complete_cases()
            batch.append(prediction)
        else:
            run_batch()
            pending.append(prediction)
            yield from complete_cases()
    run_batch()
    yield from finished(len(pending))
