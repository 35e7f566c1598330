"""Scoring a trained model (or an ensemble) on a split of its data or on another dataset.

Images are preprocessed as in validation (resized to the run's image size when
it has one); the probabilities are resized back, so the scores are computed at
the resolution of the dataset's masks. Per-image, per-case (one 3D score per
patient) and global (pooled) values come from one set of confusion counts.
See docs/evaluation.md.

Why it is long: ``segkit evaluate`` keeps its steps in one place (the data a source is scored on,
the trained-case guard, scoring, per-case tables and their names, the printed report) because each
reads the same sources and settings; the boundary metrics and the trained-case matching already
live in :mod:`segkit.evaluation.surface_report` and :mod:`segkit.evaluation.seen`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from segkit.components.registry import get_registry
from segkit.data import read_splits
from segkit.errors import (
    CheckpointError,
    ConfigError,
    DataError,
    os_error_message,
    unknown_name,
)
from segkit.evaluation.seen import trained_on, trained_on_message
from segkit.evaluation.surface_report import SurfaceScores, dataset_spacing
from segkit.evaluation.volume_evaluate import evaluate_volumes
from segkit.inference.postprocess import POSTPROCESS_MODES
from segkit.inference.sources import load_predictor
from segkit.inference.stream import predict_stream
from segkit.labels import Labels, valid_pixels
from segkit.progress import track
from segkit.runs.rundir import run_directory
from segkit.runs.runfiles import read_run_config
from segkit.scoring.metrics import MetricAccumulator, label_counts
from segkit.tomlio import atomic_write_text

__all__ = [
    "SPLIT_CHOICES",
    "REPORTED_METRICS",
    "EvaluationData",
    "evaluate_predictor",
    "evaluate_runs",
    "select_data",
]

SPLIT_CHOICES: tuple[str, ...] = ("test", "val", "train", "all")
#: Metrics reported whatever the run monitored.
REPORTED_METRICS: tuple[str, ...] = ("dice", "iou", "precision", "recall")


@dataclass
class EvaluationData:
    """The items to score: positions into ``dataset``, ordered by case then slice."""

    dataset: Any
    positions: list[int]
    split: str
    dataset_name: str
    foreign: bool = False
    root: str | None = None
    """The data folder given with ``--data-root`` (resolved), if any: part of the per-case CSV's name."""


def _check_sources(sources: Sequence[str | Path]) -> None:
    for source in sources:
        path = Path(source)
        if not path.exists():
            raise CheckpointError(f"run directory {str(path)!r} does not exist.")
        if path.is_dir() and not (path / "config.toml").is_file():
            raise CheckpointError(f"{str(path)!r} is not a segkit run directory (no config.toml). "
                                  "Pass the folder that 'segkit run --out' wrote.")


def _dataset_params(registry: Any, name: str, base: dict[str, Any], data_root: str | None) -> dict[str, Any]:
    params = dict(base)
    if data_root is None:
        return params
    key = registry.get("dataset", name).data_root_parameter()
    params[key] = data_root
    return params


def _ordered(index: Any, positions: Sequence[int]) -> list[int]:
    """Positions grouped by case (first appearance), slices in slice order when the index has a ``slice`` column."""
    rows = index.iloc[list(positions)]
    first = {case: i for i, case in reversed(list(enumerate(rows["case"].astype(str))))}
    keys = [first[str(c)] for c in rows["case"]]
    slices = rows["slice"].tolist() if "slice" in rows.columns else [0] * len(rows)
    order = sorted(range(len(rows)), key=lambda k: (keys[k], slices[k], k))
    return [int(positions[k]) for k in order]


def select_data(
    run_dir: Path | None,
    registry: Any,
    split: str | None = None,
    dataset_name: str | None = None,
    data_root: str | None = None,
    context: int | None = None,
    normalize: str | None = None,
    labels: Any = None,
) -> EvaluationData:
    """The dataset and items to evaluate on.

    Without ``dataset_name`` and ``data_root``: the run's own dataset and its
    ``split`` from ``splits.csv`` (default ``test``). With either: that dataset
    (the run's name and parameters with the new root when only ``data_root`` is
    given), default split ``all``; another split is taken from the run's
    ``splits.csv`` only if it lists exactly that dataset's items.

    ``context`` is the models' 2.5D context: another dataset is built with it, and a
    dataset that stacks a different number of slices is a :class:`ConfigError`.
    ``normalize`` is the models' intensity rule, applied the same way. ``labels``
    (:class:`~segkit.labels.Labels`) are the models' labels: another dataset with a ``classes``
    parameter is read with as many label values (and their names), and a dataset whose masks
    hold a different number of labels is a :class:`ConfigError`.
    """

    foreign = dataset_name is not None or data_root is not None
    split = split or ("all" if foreign else "test")
    if split not in SPLIT_CHOICES:

        raise unknown_name("split", split, SPLIT_CHOICES)
    config = read_run_config(run_dir) if run_dir is not None else None
    if config is None and dataset_name is None:
        raise CheckpointError("no run directory among the sources to take the data from: "
                              "pass --dataset NAME (and --data-root PATH).")
    run_spec = dict(config["dataset"]) if config is not None else {}
    name = dataset_name or run_spec.get("name")
    base = {k: v for k, v in run_spec.items() if k != "name"} if name == run_spec.get("name") else {}
    params = _dataset_params(registry, name, base, data_root)
    needs = []  # (parameter, value, why the model needs it): the model's preprocessing, passed to the dataset
    if context:
        needs.append(("context", context, f"the model takes {context} neighbouring slice(s) on each side as channels "
                      "(2.5D context); evaluate on a dataset that knows the slice order: lgg, folder or csv"))
    if normalize is not None and normalize != "none":
        needs.append(("normalize", normalize, f"the model was trained on images normalised per case (normalize = "
                      f"{normalize!r}); evaluate on lgg, folder, csv or synthetic"))
    if needs:
        accepted = {p.name for p in registry.get("dataset", name).parameters()}
        for parameter, value, why in needs:
            if parameter not in accepted:
                raise ConfigError(f"dataset {name!r} has no {parameter} parameter, and {why}.")
            params.setdefault(parameter, value)
    if labels is not None and labels.classes > 2:
        accepted = {p.name for p in registry.get("dataset", name).parameters()}
        if "classes" in accepted:
            params.setdefault("classes", labels.classes)
        if "labels" in accepted and "classes" in accepted and params["classes"] == labels.classes:
            params.setdefault("labels", list(labels.names))
    dataset = registry.build("dataset", name, **params)
    found_labels = tuple(getattr(dataset, "labels", None) or ("background", "lesion"))
    if labels is not None and len(found_labels) != labels.classes:
        raise ConfigError(f"the model predicts {labels.classes} label values ({', '.join(labels.names)}) but dataset "
                          f"{name!r} has {len(found_labels)} ({', '.join(found_labels)}); evaluate on data with the "
                          "model's labels.")
    if len(dataset) == 0:
        raise DataError(f"dataset {name!r} has no items.")
    found = int(getattr(dataset, "context", 0) or 0)
    if context is not None and found != context:
        raise ConfigError(f"the model was trained with 2.5D context {context} but dataset {name!r} stacks context "
                          f"{found}; its images would not match the model's channels.")
    found_rule = str(getattr(dataset, "normalize", "none") or "none")
    if normalize is not None and found_rule != normalize:
        raise ConfigError(f"the model was trained with normalize = {normalize!r} but dataset {name!r} is read with "
                          f"normalize = {found_rule!r}; its intensities would not be the ones the model learnt.")
    if split == "all":
        positions = list(range(len(dataset)))
    else:
        if run_dir is None:
            raise ConfigError(f"--split {split} needs a run directory's splits.csv; use --split all.")
        try:
            assignment = read_splits(run_dir / "splits.csv", dataset.index)
        except DataError as error:
            if foreign:
                raise DataError(f"{error} The run's --split {split} does not apply to this dataset: "
                                "use --split all.") from None
            raise
        positions = [i for i, value in enumerate(assignment.tolist()) if value == split]
        if not positions:
            present = sorted(set(assignment.tolist()))
            hint = (" Score cases it never saw with --data-root (a folder of cases kept aside), or use --split val "
                    "(the validation cases) or --split all." if split == "test" else f" It has: {', '.join(present)}.")
            raise DataError(f"run {str(run_dir)!r} has no {split} split"
                            + (" (trained with split.test_fraction = 0)." if split == "test" else ".") + hint)
    root = str(Path(data_root).resolve()) if data_root is not None else None
    return EvaluationData(dataset, _ordered(dataset.index, positions), split, name, foreign, root)


def build_metric_set(registry: Any, run_metrics: Sequence[str] = ()) -> dict[str, Any]:
    """dice, iou, precision and recall, then any other metric the run reported."""
    names = list(REPORTED_METRICS) + [n for n in run_metrics if n not in REPORTED_METRICS]
    return {name: registry.build("metric", name) for name in names}


def evaluate_predictor(
    predictor: Any,
    data: EvaluationData,
    metrics: dict[str, Any],
    *,
    threshold: float | None = None,
    postprocess: str = "none",
    batch_size: int = 8,
    progress: bool = False,
    warn: Callable[[str], None] = lambda _message: None,
    surface: Any = None,
    description: str = "evaluate",
):
    """Predict every item of ``data`` and accumulate confusion counts; returns a ``MetricAccumulator``.

    With ``surface``, each case's predicted and true masks are also stacked in slice order
    and scored with the boundary metrics (:mod:`segkit.evaluation.surface`) into it. With
    ``progress``, :func:`segkit.progress.track` reports it on stderr as ``description``.
    """

    threshold = predictor.threshold if threshold is None else threshold
    labels = getattr(predictor, "labels", None) or Labels()
    accumulator = MetricAccumulator(metrics, threshold, labels=labels)
    cases = data.dataset.index["case"].astype(str).tolist()
    counts: list[torch.Tensor] = []
    case_ids: list[str] = []
    converted = 0
    volume: list[tuple[np.ndarray, np.ndarray]] = []
    stream = predict_stream(predictor, data.positions, data.dataset.read, case_of=lambda i: cases[i],
                            batch_size=batch_size, threshold=threshold, postprocess=postprocess)
    for prediction in track(stream, total=len(data.positions), desc=description, enabled=progress):
        if prediction.error is not None:
            raise DataError(prediction.error)
        if prediction.converted and not converted:
            warn(f"{data.dataset.index['item'].iloc[prediction.entry]}: {prediction.converted} for the model "
                 "(and every such image after it).")
        converted += bool(prediction.converted)
        case = cases[prediction.entry]
        predicted = np.asarray(prediction.mask, dtype=bool)
        predicted = predicted if predicted.ndim == 3 else predicted[None]  # (K, H, W)
        values = torch.from_numpy(np.asarray(prediction.extra, dtype=np.float32))[None, None]
        truth = labels.truth_masks(values)[0]
        if truth.shape != predicted.shape:
            raise DataError(f"prediction {predicted.shape[1:]} and mask {tuple(truth.shape[1:])} differ in shape")
        valid = valid_pixels(values)[0]  # (1, H, W): outside it (ignored) nothing counts
        counts.append(label_counts(torch.from_numpy(predicted)[None], truth[None], valid[None])[0])
        if surface is not None:
            if case_ids and case != case_ids[-1]:
                surface.add(case_ids[-1], volume)
                volume = []
            volume.append((predicted & valid.numpy(), (truth & valid).numpy()))
        case_ids.append(case)
    if surface is not None and volume:
        surface.add(case_ids[-1], volume)
    stacked = torch.stack(counts) if counts else torch.zeros((0, len(labels.foreground), 4), dtype=torch.int64)
    accumulator.update_counts(stacked if accumulator.per_label else stacked[:, 0], case_ids)
    return accumulator


def _digest(*parts: Any) -> str:
    return hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:8]


def checkpoint_label(home: Path, checkpoint: str) -> str:
    """``best``/``last`` (or a file's stem) for the run's own checkpoints; a file elsewhere adds a digest of its path.

    ``--checkpoint OTHER/checkpoints/last.pt`` then never writes over the scores of ``--checkpoint last``.
    """
    if checkpoint in ("best", "last"):
        return checkpoint
    path = Path(checkpoint).expanduser().resolve()
    if path.parent == (home / "checkpoints").resolve():
        return path.stem
    return f"{path.stem}-{_digest(str(path))}"


def per_case_csv_path(home: Path, sources: Sequence[str | Path], data: EvaluationData, checkpoint: str,
                      tta: bool, postprocess: str, threshold: float, default_threshold: float) -> Path:
    """``<run>/evaluation/[ensemble<N>-<hash>-][<dataset>-<hash>-]<split>[-<ckpt>][-t<T>][-tta][-lcc]-per-case.csv``.

    ``<ckpt>`` is :func:`checkpoint_label`: a checkpoint outside the run carries a digest of its path.
    """
    parts = []
    if len(sources) > 1:
        parts.append(f"ensemble{len(sources)}-{_digest(sorted(str(Path(s).resolve()) for s in sources))}")
    if data.foreign:
        index = data.dataset.index
        # the folder is part of the digest: a changed copy of the data with the same file names
        # (another scanner, a corrected mask) must not overwrite the first one's scores
        parts.append(f"{data.dataset_name}-{_digest(data.dataset_name, data.root, len(index), index['item'].astype(str).tolist()[:50])}")
    parts.append(data.split)
    if checkpoint != "best":
        parts.append(checkpoint_label(home, checkpoint))
    if abs(threshold - default_threshold) > 1e-12:
        parts.append(f"t{threshold:g}")
    if tta:
        parts.append("tta")
    if postprocess != "none":
        parts.append(postprocess)
    return home / "evaluation" / ("-".join(parts) + "-per-case.csv")


def evaluate_runs(
    sources: Sequence[str | Path],
    *,
    checkpoint: str = "best",
    split: str | None = None,
    dataset_name: str | None = None,
    data_root: str | None = None,
    threshold: float | None = None,
    tta: bool = False,
    postprocess: str = "none",
    batch_size: int = 8,
    device: str = "auto",
    registry: Any | None = None,
    progress: bool = False,
    warn: Callable[[str], None] = lambda _message: None,
    write_csv: bool = True,
    tolerance: float = 1.0,
    refuse_trained: str = "",
) -> dict[str, Any]:
    """Evaluate one run or an ensemble; returns the report (see :meth:`MetricAccumulator.compute`) plus settings.

    The report's ``surface`` holds the per-case boundary metrics (HD95, ASSD, surface Dice at
    ``tolerance``; :mod:`segkit.evaluation.surface_report`).

    Evaluated cases that a source trained on (:func:`~segkit.evaluation.seen.trained_on`) make a
    warning and the report's ``trained_on``; with ``refuse_trained`` (what is evaluated, e.g. "cross-validation runs/cv") they
    are a :class:`ConfigError` before anything is predicted.
    """

    _check_options(sources, postprocess, threshold, tolerance)
    registry = registry or get_registry()
    first = next((run for run in (run_directory(s) for s in sources) if run is not None), None)
    predictor = load_predictor(list(sources), checkpoint=checkpoint, device=device, tta=tta, registry=registry)
    data = select_data(first, registry, split, dataset_name, data_root, context=predictor.context,
                       normalize=predictor.normalize, labels=predictor.labels)
    run_metrics = read_run_config(first)["metrics"].get("names", []) if first is not None else []
    metrics = build_metric_set(registry, run_metrics)

    seen = trained_on(data, sources)
    if seen and refuse_trained:
        folds = "; ".join(f"{Path(f['run']).name} on {f['cases']} of {f['of']}" for f in seen)
        raise ConfigError(f"{refuse_trained}: its models trained on cases of this data ({folds}; e.g. "
                          f"{seen[0]['example']}), so its scores here would be optimistic. Score it on cases none of "
                          "its models trained on (remove those patients from the folder), or read its out-of-fold "
                          "scores in cv-report.json; nothing was written.")
    if seen:
        warn(trained_on_message(seen))
    argmax = predictor.labels.mode == "multiclass"
    if argmax and threshold is not None:
        raise ConfigError("--threshold does nothing here: a multiclass run takes the most probable label per pixel "
                          "(argmax), not a threshold. Drop --threshold.")
    thresholds = {m.threshold for m in predictor.members}
    if threshold is None and len(thresholds) > 1 and not argmax:
        warn(f"the models were trained with different thresholds {sorted(thresholds)}; using the first, "
             f"{predictor.threshold:g} (set --threshold to choose).")
    used = predictor.threshold if threshold is None else threshold

    surface = SurfaceScores(predictor.labels.foreground, tolerance, dataset_spacing(data.dataset))

    if predictor.volumetric:  # 3D models: each case predicted whole, by sliding windows
        accumulator = evaluate_volumes(predictor, data, metrics, threshold=used, surface=surface,
                                       postprocess=postprocess, batch_size=batch_size, progress=progress)
    else:
        accumulator = evaluate_predictor(predictor, data, metrics, threshold=used, postprocess=postprocess,
                                         batch_size=batch_size, progress=progress, warn=warn, surface=surface)
    report = accumulator.compute()
    report["surface"] = surface.summary()
    report.update({
        "runs": [str(s) for s in sources],
        "checkpoint": checkpoint,
        "checkpoints": predictor.sources,
        "dataset": data.dataset_name,
        "split": data.split,
        "threshold": used,
        "decision": "argmax" if argmax else "threshold",
        "tta": tta,
        "postprocess": postprocess,
        "trained_on": seen,
    })
    if write_csv:
        home = first if first is not None else Path(sources[0]).parent
        path = per_case_csv_path(home, sources, data, checkpoint, tta, postprocess, used, predictor.threshold)
        report.update(_write_case_table(path, accumulator, surface))
    return report


def _check_options(sources: Sequence[str | Path], postprocess: str, threshold: float | None, tolerance: float) -> None:
    """The sources exist and are runs, checkpoints or exports; the options are in range (ConfigError otherwise)."""

    if not sources:
        raise CheckpointError("name at least one run directory to evaluate.")
    if postprocess not in POSTPROCESS_MODES:

        raise unknown_name("postprocess mode", postprocess, POSTPROCESS_MODES)
    if threshold is not None and not 0 < threshold < 1:
        raise ConfigError(f"--threshold must be between 0 and 1, got {threshold}.")
    if not 0 <= tolerance < float("inf"):
        raise ConfigError(f"--tolerance must be a finite distance of 0 or more (in pixels, or in the dataset's "
                          f"spacing), e.g. 1 or 2 mm, got {tolerance}.")
    _check_sources(sources)


def _write_case_table(path: Path, accumulator: Any, surface: Any) -> dict[str, str]:
    """The per-case table (confusion counts, scores, boundary metrics) written atomically to ``path``; the report's
    ``per_case_csv``, or its ``write_error`` when the disk refuses (the scores are still returned)."""

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        table = accumulator.per_case_table().merge(surface.table(), on="case", how="left")
        atomic_write_text(path, table.to_csv(index=False, float_format="%.6g"))
        return {"per_case_csv": str(path)}
    except OSError as error:  # read-only run, full disk

        return {"write_error": os_error_message(error, path)}


def _decision(report: dict[str, Any]) -> str:
    """How pixels became labels: ``threshold 0.5``, or the argmax of a multiclass run (which has no threshold)."""
    if report.get("decision") == "argmax":
        return "most probable label per pixel (argmax, multiclass)"
    return f"threshold {report['threshold']:g}"


def format_report(report: dict[str, Any]) -> str:
    """The report as a readable table."""
    runs = ", ".join(report["runs"])
    lines = [
        f"{runs} ({report['checkpoint']}) on {report['dataset']}, split {report['split']}: "
        f"{report['n_images']} images, {report['n_cases']} cases",
        f"{_decision(report)}, tta {'on' if report['tta'] else 'off'}, "
        f"postprocess {report['postprocess']}",
        "",
        f"{'metric':<12}{'per-image':>12}{'per-case mean':>16}{'per-case median':>18}{'global':>10}",
    ]
    for name, value in report["per_image"].items():
        case = report.get("per_case", {}).get(name, {})
        lines.append(f"{name:<12}{value['mean']:>12.4f}{case.get('mean', float('nan')):>16.4f}"
                     f"{case.get('median', float('nan')):>18.4f}{report['global'][name]:>10.4f}")
    for label, scores in report.get("per_class", {}).items():
        lines += ["", f"label {label}:"]
        for name, value in scores["per_image"].items():
            case = scores.get("per_case", {}).get(name, {})
            lines.append(f"{name:<12}{value['mean']:>12.4f}{case.get('mean', float('nan')):>16.4f}"
                         f"{case.get('median', float('nan')):>18.4f}{scores['global'][name]:>10.4f}")
    if report.get("per_class"):
        lines += ["", "(with several labels, the first table's per-image, per-case and global values are each the mean "
                  "over the labels, the per-case median the median of each case's label mean)"]
    surface = report.get("surface")
    if surface:
        lines += ["", f"boundary per case, in {surface['units']} (surface Dice within {surface['tolerance']:g}):",
                  f"{'metric':<40}{'mean':>10}{'median':>10}"]
        rows = [("", surface)] + [(f"{label} ", scores) for label, scores in surface.get("per_class", {}).items()]
        for prefix, scores in rows:
            for name in ("hd95", "assd", "surface_dice"):
                lines.append(f"{prefix + name:<40}{scores[name]['mean']:>10.4f}{scores[name]['median']:>10.4f}")
    if report.get("trained_on"):

        lines += ["", "NOT UNSEEN DATA: " + trained_on_message(report["trained_on"])]
    if report.get("per_case_csv"):
        lines += ["", f"per-case scores written to {report['per_case_csv']}"]
    return "\n".join(lines)
