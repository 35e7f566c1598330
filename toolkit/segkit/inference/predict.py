"""Predicting masks for image files: inputs, case ids, output files.

See docs/predict.md. Outputs for an input ``name.ext``, in the output folder:

- ``name.png``: the binary mask, 0 or 255, at the input's own size; for a model with
  several labels the label map instead, each pixel its label value ``0 .. C-1`` (where
  multilabel masks overlap, the higher label; with regions, the number ``1 .. K`` of the
  last region present, the innermost one for nested regions);
- ``name_overlay.png`` (``overlay``): the image with the predicted outline in red; with
  several labels each label tinted and outlined in its colour, above a legend;
- ``name_prob.png`` (``save_probs``): the probability map as a 16-bit PNG,
  ``round(probability * 65535)``, at the input's own size; with several labels one
  ``name_prob_<label>.png`` per foreground label.

A model trained with 2.5D context ``k`` gets each file stacked with the ``k``
files on each side of it in its case (:func:`case_of_file`), ordered by slice
number, the edge slice repeated past the first and last; a file that is not a
numbered slice fails with a message in the summary (see :func:`context_neighbours`).
A model trained with ``normalize = "case"`` gets each file rescaled by the
intensity factors of its case, computed from all of that case's files
(:func:`case_intensity_factors`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from segkit.data import read_image
from segkit.data.intensity import apply_factors, case_factors
from segkit.errors import ConfigError, DataError
from segkit.figures.overlays import labelled_overlay
from segkit.figures.plots import overlay as draw_overlay
from segkit.fileio import atomic_write_bytes
from segkit.inference.inputs import case_of_file
from segkit.inference.output_names import claim_outputs, file_safe, refuse_label_folder
from segkit.inference.stream import match_channels, predict_stream
from segkit.labels import Labels
from segkit.progress import track

__all__ = [
    "PredictSummary",
    "context_neighbours",
    "case_intensity_factors",
    "output_paths",
    "predict_files",
]



def context_neighbours(files: Sequence[Path], context: int) -> tuple[dict[int, list[int]], dict[int, str], list[str]]:
    """Which files a 2.5D context model stacks for each file, by position in ``files``.

    Files are grouped into cases by :func:`case_of_file` and ordered by slice number;
    file ``i`` gets the files of slices ``n - k .. n + k`` of its case in that order,
    the first or last slice repeated past the ends (gaps in the numbering are skipped).

    Returns ``(neighbours, failures, single)``: the positions stacked for each usable
    file, a reason for each file that cannot be used (no ``_<number>`` at the end of
    its name, or a case with two files for one slice number), and the cases of a
    single slice (whose neighbours all repeat it).
    """
    width = f"{context} neighbouring slice(s) on each side (2.5D context {context})"
    cases: dict[str, list[tuple[int, int]]] = {}
    failures: dict[int, str] = {}
    for i, path in enumerate(files):
        key = case_of_file(path)
        if key is None:
            failures[i] = (f"the model stacks {width}, so each input must be a numbered slice named "
                           f"<case>_<number>.<ext> (like LGG's TCGA_..._12.tif) among its case's other slices; "
                           f"{path.name!r} does not end in _<number>.")
        else:
            cases.setdefault(key[0], []).append((key[1], i))
    neighbours: dict[int, list[int]] = {}
    single: list[str] = []
    for case, members in cases.items():
        members.sort()
        numbers = [n for n, _ in members]
        twice = next((k for k in range(1, len(members)) if numbers[k] == numbers[k - 1]), None)
        if twice is not None:
            a, b = files[members[twice - 1][1]].name, files[members[twice][1]].name
            for _, i in members:
                failures[i] = (f"{a!r} and {b!r} are both slice {numbers[twice]} of case {Path(case).name!r}, so the "
                               f"order of its slices is ambiguous and the model stacks {width}; keep one file "
                               "per slice number.")
            continue
        if len(members) == 1:
            single.append(case)
        positions = [i for _, i in members]
        last = len(positions) - 1
        for rank, i in enumerate(positions):
            neighbours[i] = [positions[min(max(rank + step, 0), last)] for step in range(-context, context + 1)]
    return neighbours, failures, single


def case_intensity_factors(predictor: Any, files: Sequence[Path],
                           keys: dict[int, tuple[str, int] | None]) -> Callable[[int], np.ndarray] | None:
    """For a model trained with ``normalize = "case"``: a function giving file ``i``'s intensity factors.

    The factors of a case (its files grouped by :func:`case_of_file`; a file without
    ``_<number>`` is a case of its own) come from all of its readable files, read once
    when the case is first needed. None when the model takes the stored pixels.
    """

    if getattr(predictor, "normalize", "none") == "none":
        return None
    groups: dict[str, list[int]] = {}
    for i in range(len(files)):
        groups.setdefault(keys[i][0] if keys[i] else f"\0{i}", []).append(i)
    case = {i: name for name, members in groups.items() for i in members}
    known: dict[str, np.ndarray] = {}

    def factors(i: int) -> np.ndarray:
        name = case[i]
        if name not in known:
            images = []
            for j in groups[name]:
                try:
                    images.append(match_channels(read_image(files[j]), predictor.slice_channels)[0])
                except DataError:
                    if j == i:
                        raise
            known[name] = case_factors(images)
        return known[name]

    return factors


def output_paths(files: Sequence[Path], out: Path, overlay: bool, save_probs: bool,
                 labels: Sequence[str] | None = None) -> list[dict[str, Path]]:
    """The output files of each input; ConfigError when two inputs would write the same file or one an input.

    ``labels``: the foreground label names of a model with several labels (one probability file each).
    """
    inputs = {Path(p).resolve() for p in files}
    outputs, owner = [], {}
    for path in files:
        names = {"mask": out / f"{path.stem}.png"}
        if overlay:
            names["overlay"] = out / f"{path.stem}_overlay.png"
        if save_probs and labels and len(labels) > 1:
            for label in labels:
                names[f"prob_{label}"] = out / f"{path.stem}_prob_{file_safe(label)}.png"
        elif save_probs:
            names["prob"] = out / f"{path.stem}_prob.png"
        claim_outputs(names.values(), path, inputs, owner)
        outputs.append(names)
    return outputs


def _write_png(path: Path, pixels: np.ndarray) -> None:
    """Encode ``pixels`` as PNG and write it atomically (temporary file, then rename)."""
    import cv2

    ok, data = cv2.imencode(".png", pixels)
    if not ok:
        raise DataError(f"cannot encode {path} as PNG")
    atomic_write_bytes(path, data.tobytes())


@dataclass
class PredictSummary:
    """What a prediction run did."""

    written: int = 0
    lesion_pixels: int = 0
    lesion_images: int = 0
    converted: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)
    out: str = ""


def _probability_png(probability: np.ndarray) -> np.ndarray:
    """A probability map in [0, 1] as 16-bit pixels, ``round(p * 65535)``."""
    return np.round(probability.astype(np.float64) * 65535).astype(np.uint16)


def _write_label_outputs(names: dict[str, Path], prediction: Any, labels: Any, image: np.ndarray | None) -> None:
    """The label map, per-label probabilities and labelled overlay of a model with several labels."""
    import cv2
    import torch

    masks = np.asarray(prediction.mask, dtype=bool)  # (K, H, W)
    _write_png(names["mask"], labels.label_map(torch.from_numpy(masks)[None])[0].numpy().astype(np.uint8))
    # multiclass probabilities include background (channel 0); multilabel ones are the labels'
    offset = 1 if labels.mode == "multiclass" else 0
    if "prob" in names:  # one foreground label (softmax over background and it)
        _write_png(names["prob"], _probability_png(prediction.probability[offset]))
    for k, label in enumerate(labels.foreground):
        if f"prob_{label}" in names:
            _write_png(names[f"prob_{label}"], _probability_png(prediction.probability[k + offset]))
    if image is not None:
        picture = np.round(labelled_overlay(image, masks, labels.foreground) * 255).astype(np.uint8)
        _write_png(names["overlay"], cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))


def _claim_out(files: Sequence[Path], out: Path, overlay: bool, save_probs: bool, labels: Any,
               overwrite: bool) -> list[dict[str, Path]]:
    """Each file's output paths in ``out`` (created); a ConfigError when some exist and ``overwrite`` is off."""
    refuse_label_folder(out)
    outputs = output_paths(files, out, overlay, save_probs, labels.foreground if labels.several else None)
    if not overwrite:
        existing = [str(p) for names in outputs for p in names.values() if p.exists()]
        if existing:
            shown = ", ".join(existing[:3]) + (f" and {len(existing) - 3} more" if len(existing) > 3 else "")
            raise ConfigError(f"{len(existing)} output file(s) already exist: {shown}. "
                              "Pass --overwrite to replace them, or choose another --out.")
    out.mkdir(parents=True, exist_ok=True)
    return outputs


def _case_order(files: Sequence[Path]) -> tuple[dict[int, tuple[str, int] | None], list[int]]:
    """Each file's ``(case, slice)`` key, and the files' order with a case's slices together, in slice order,
    so a case is post-processed as a volume."""
    keys = {i: case_of_file(f) for i, f in enumerate(files)}
    first: dict[str, int] = {}
    for i, key in keys.items():
        if key is not None:
            first.setdefault(key[0], i)
    return keys, sorted(range(len(files)), key=lambda i: (first[keys[i][0]], keys[i][1]) if keys[i] else (i, 0))


def _file_reader(predictor: Any, files: Sequence[Path], keys: dict[int, tuple[str, int] | None],
                 warn: Callable[[str], None]) -> Callable[[int], tuple[np.ndarray, str | None]]:
    """``read(i)``: file ``i`` as the model takes it, ``(image, conversion note)``: normalised per case where the
    model was, stacked with its case's neighbouring slices for a 2.5D context model."""

    context = int(getattr(predictor, "context", 0) or 0)
    factors = case_intensity_factors(predictor, files, keys)
    if not context:
        def read_alone(i: int) -> tuple[np.ndarray, str | None]:
            if factors is None:
                return read_image(files[i]), None
            image, note = match_channels(read_image(files[i]), predictor.slice_channels)
            return apply_factors(image, factors(i)), note

        return read_alone
    neighbours, unusable, single = context_neighbours(files, context)
    if single:
        warn(f"{len(single)} case(s) have a single slice, e.g. {Path(single[0]).name!r}: the model stacks "
             f"{context} neighbouring slice(s) on each side, which then all repeat that slice.")
    window: dict[int, tuple[np.ndarray, str | None]] = {}  # decoded slices of the current case's window

    def read_stacked(i: int) -> tuple[np.ndarray, str | None]:
        if i in unusable:
            raise DataError(unusable[i])
        wanted = neighbours[i]
        for j in wanted:
            if j not in window:
                try:
                    image, note = match_channels(read_image(files[j]), predictor.slice_channels)
                    window[j] = (image if factors is None else apply_factors(image, factors(j)), note)
                except DataError as error:
                    if j == i:
                        raise
                    raise DataError(f"its neighbouring slice {files[j].name} cannot be used: {error}") from None
        for j in [j for j in window if j not in wanted]:
            del window[j]
        centre = window[i][0]
        for j in wanted:
            if window[j][0].shape != centre.shape:
                raise DataError(f"its neighbouring slice {files[j].name} is {window[j][0].shape[0]}x"
                                f"{window[j][0].shape[1]} and it is {centre.shape[0]}x{centre.shape[1]}; the "
                                "slices of a case must share one size to be stacked.")
        note = next((window[j][1] for j in wanted if window[j][1]), None)
        return np.concatenate([window[j][0] for j in wanted], axis=2), note

    return read_stacked


def _write_outputs(prediction: Any, names: dict[str, Path], labels: Any, overlay: bool, save_probs: bool,
                   context: int) -> np.ndarray:
    """Write one file's mask (or label map), probabilities and overlay; returns its foreground mask (H, W) uint8."""
    image = prediction.image
    if overlay and context:  # the file's own slice, the middle of the stack
        channels = image.shape[2] // (2 * context + 1)
        image = image[:, :, context * channels:(context + 1) * channels]
    if labels.masks_per_label:  # masks come per label, (K, H, W)
        _write_label_outputs(names, prediction, labels, image if overlay else None)
        return prediction.mask.any(axis=0).astype(np.uint8)
    mask = prediction.mask.astype(np.uint8)
    _write_png(names["mask"], mask * 255)
    if save_probs:
        _write_png(names["prob"], _probability_png(prediction.probability))
    if overlay:
        import cv2

        picture = np.round(draw_overlay(image, None, mask) * 255).astype(np.uint8)
        _write_png(names["overlay"], cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))
    return mask


def predict_files(
    predictor: Any,
    files: Sequence[Path],
    out: str | os.PathLike[str],
    *,
    threshold: float | None = None,
    overlay: bool = False,
    save_probs: bool = False,
    postprocess: str = "none",
    batch_size: int = 8,
    overwrite: bool = False,
    progress: bool = False,
    warn: Callable[[str], None] = lambda _message: None,
) -> PredictSummary:
    """Predict every file and write its outputs; unreadable files are reported in the summary and skipped.

    With a 2.5D context model each file is stacked with its case's neighbouring
    slices (:func:`context_neighbours`); files that cannot be are failures.
    """

    out = Path(out)
    labels = getattr(predictor, "labels", None) or Labels()
    outputs = _claim_out(files, out, overlay, save_probs, labels, overwrite)
    keys, order = _case_order(files)
    summary = PredictSummary(out=str(out))
    read = _file_reader(predictor, files, keys, warn)
    context = int(getattr(predictor, "context", 0) or 0)
    stream = predict_stream(predictor, order, read, case_of=lambda i: keys[i][0] if keys[i] else None,
                            batch_size=batch_size, threshold=threshold, postprocess=postprocess,
                            keep_images=overlay)
    for prediction in track(stream, total=len(files), desc="predict", enabled=progress):
        path = files[prediction.entry]
        if prediction.error is not None:
            summary.failures.append((str(path), prediction.error))
            continue
        converted = prediction.converted or prediction.extra
        if converted:
            if not summary.converted:
                warn(f"{path}: {converted} for the model (and every such image after it).")
            summary.converted += 1
        mask = _write_outputs(prediction, outputs[prediction.entry], labels, overlay, save_probs, context)
        summary.written += 1
        pixels = int(mask.sum())
        summary.lesion_pixels += pixels
        summary.lesion_images += pixels > 0
    return summary
