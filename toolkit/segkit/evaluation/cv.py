"""Cross-validation end to end: K fold runs by case, out-of-fold scores, and the folds as one ensemble.

``segkit cv --folds K --out DIR [run options]`` trains fold ``k`` into ``DIR/fold-<k>/``
with the cases of fold ``k`` as its validation (``split.folds = K``, ``split.fold = k``,
no test hold-out), so every case is scored exactly once by the model that never saw
it. Fold runs resume where they stopped. The out-of-fold scores use each fold's *last*
checkpoint: its best one was picked on those same cases, which would flatter them.

Test-time augmentation and largest-component post-processing are scored out of fold
too, and switched on for the ensemble only where they raise the mean per-case Dice
(nnU-Net does the same for its post-processing). The scores reported do not reuse that
choice, which was made on the very cases they score: each fold's cases are scored with
the variant the other folds' cases choose (:func:`cross_fitted_choice`). ``DIR/cv.json``
records the folds and the ensemble's choice; :func:`segkit.inference.cv_sources.expand_sources` lets
evaluate, predict and export take ``DIR`` as the ensemble of its fold models.

Why it is long: it holds the whole of ``segkit cv`` (fold runs, the out-of-fold report and the
nested choice of inference variant that keeps the headline honest), which share the fold layout
and the report's fields; the fold models as sources of predictors live in :mod:`segkit.inference.cv_sources`.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from segkit.config import RunConfig, resolve_config, validate_config
from segkit.errors import CheckpointError, ConfigError
from segkit.evaluation.evaluate import build_metric_set, evaluate_predictor, select_data
from segkit.evaluation.volume_evaluate import evaluate_volumes
from segkit.fileio import atomic_write_text
from segkit.inference.cv_sources import (
    CHECKPOINT,
    CV_FILE,
    expand_sources,
    fold_directory,
    inference_settings,
    is_cv_directory,
    read_cv,
)
from segkit.inference.sources import load_predictor
from segkit.runs.runfiles import read_run_config
from segkit.train import train
from segkit.train.runner import holds_a_run

__all__ = [
    "CV_FILE",
    "REPORT_FILE",
    "PER_CASE_FILE",
    "VARIANTS",
    "CHECKPOINT",
    "fold_directory",
    "is_cv_directory",
    "read_cv",
    "expand_sources",
    "inference_settings",
    "run_cv",
    "fold_state",
    "fold_model",
    "fold_models",
    "out_of_fold_tables",
    "out_of_fold_report",
    "out_of_fold",
    "bootstrap_interval",
    "choose_variant",
    "cross_fitted_choice",
    "format_cv_report",
]

REPORT_FILE = "cv-report.json"
PER_CASE_FILE = "cv-per-case.csv"
#: Inference variants scored out of fold: (name, tta, postprocess).
VARIANTS: tuple[tuple[str, bool, str], ...] = (
    ("plain", False, "none"), ("lcc", False, "lcc"), ("tta", True, "none"), ("tta+lcc", True, "lcc"))


def _fold_document(document: dict[str, dict[str, Any]], folds: int, fold: int) -> dict[str, dict[str, Any]]:
    fold_doc = copy.deepcopy(document)
    fold_doc.setdefault("split", {}).update({"folds": folds, "fold": fold, "test_fraction": 0.0, "by": "case"})
    return fold_doc


def _comparable(document: dict[str, Any]) -> dict[str, Any]:
    """A configuration without the settings a continued cross-validation may change (device, workers).

    Settings a later segkit added (absent from an older ``cv.json``) count as their defaults, which is
    what the older segkit ran with, so a cross-validation stays continuable across versions.
    """
    import dataclasses

    document = copy.deepcopy(document)
    for section in ("task", "metrics", "split", "train"):
        defaults = dataclasses.asdict(RunConfig.__dataclass_fields__[section].default_factory())
        document[section] = {**defaults, **document.get(section, {})}
    for key in ("device", "workers"):
        document["train"].pop(key, None)
    return document


def fold_state(fold_dir: str | Path) -> str:
    """``new``, ``partial`` (resume it) or ``done``.

    A fold that failed before its first epoch ended is ``new``: it starts afresh.
    """

    fold_dir = Path(fold_dir)
    if (fold_dir / "summary.json").is_file():
        return "done"
    if holds_a_run(fold_dir):
        return "partial"
    return "new"


def _is_empty_fold(path: Path) -> bool:
    """A ``fold-<k>`` folder whose run failed before training an epoch (it blocks nothing)."""
    return path.is_dir() and path.name.startswith("fold-") and fold_state(path) == "new"


def _trained_any(root: Path) -> bool:
    """Whether a cross-validation directory holds a fold that trained at least one epoch.

    One that does not (its first fold failed on bad data or a bad setting) is started afresh by
    the corrected command, whatever settings its cv.json recorded.
    """
    try:
        folds = read_cv(root)["folds"]
    except CheckpointError:
        return True  # a damaged cv.json: refuse below, do not overwrite what cannot be read
    return any(fold_state(fold_directory(root, k)) != "new" for k in range(folds))


def _check_fold_count(config: Any, registry: Any, folds: int) -> None:
    """A :class:`ConfigError` when the data has fewer cases than ``folds`` (each fold validates at least one)."""
    dataset = registry.build("dataset", config.dataset.name, **config.dataset.params)
    cases = int(dataset.index["case"].nunique()) if len(dataset) else 0
    if cases < 2:
        raise ConfigError(f"cross-validation needs at least 2 cases, and dataset {config.dataset.name!r} has {cases}. "
                          "Nothing was written.")
    if folds > cases:
        raise ConfigError(f"--folds {folds} needs at least {folds} cases (each fold validates on its own), and "
                          f"dataset {config.dataset.name!r} has {cases}; use --folds {min(5, cases)}"
                          + (f" (up to {cases})" if cases > 5 else "") + ". Nothing was written.")


def run_cv(
    document: dict[str, dict[str, Any]],
    registry: Any,
    out: str | Path,
    folds: int,
    *,
    quiet: bool = False,
    echo: Callable[[str], None] = print,
    device: str = "auto",
    only: Sequence[int] = (),
) -> dict[str, Any] | None:
    """Train every fold not yet trained (resuming interrupted ones), then score them out of fold.

    ``only`` names folds (0-based, as their ``fold-<k>`` folders) to train and nothing else: one
    process per fold can then share a GPU or run on several machines that see the same folder,
    and the same command without ``only`` scores them once all are trained (returns None).
    """

    if folds < 2:
        raise ConfigError(f"--folds must be at least 2, got {folds}.")
    wrong = sorted(k for k in set(only) if not 0 <= k < folds)
    if wrong:
        raise ConfigError(f"--fold {wrong[0]} is not a fold of a {folds}-fold cross-validation: give 0 to {folds - 1} "
                          "(the fold-<k> folders).")
    root = Path(out)
    first = validate_config(_fold_document(document, folds, 0), registry)
    _check_fold_count(first, registry, folds)  # before anything is written: a refused command leaves no cv.json
    fold_configs = [first] + [validate_config(_fold_document(document, folds, k), registry) for k in range(1, folds)]
    if is_cv_directory(root) and _trained_any(root):
        info = read_cv(root)
        if info["folds"] != folds:
            raise ConfigError(f"{root} holds a {info['folds']}-fold cross-validation; this command asks for {folds} "
                              "folds. Use another --out, or the same --folds to continue it.")
        if _comparable(info.get("config", {})) != _comparable(fold_configs[0].to_dict()):
            raise ConfigError(f"{root} holds a cross-validation with other settings (see {root / CV_FILE}). "
                              "Use another --out, or repeat its command exactly to continue it.")
    elif root.exists() and any(not p.name.startswith(".") and p.name != CV_FILE and not _is_empty_fold(p)
                               for p in root.iterdir()):  # another --fold's temp file
        raise ConfigError(f"{root} exists and is not a cross-validation directory; choose another --out.")
    root.mkdir(parents=True, exist_ok=True)
    info = {"folds": folds, "status": "training", "checkpoint": CHECKPOINT, "config": fold_configs[0].to_dict()}
    if not (only and is_cv_directory(root)):  # --fold leaves a scored cross-validation's status and choice alone
        atomic_write_text(root / CV_FILE, json.dumps(info, indent=2) + "\n")

    for k, config in enumerate(fold_configs):
        if only and k not in only:
            continue
        fold_dir = fold_directory(root, k)
        state = fold_state(fold_dir)
        if state == "done":
            echo(f"fold {k + 1}/{folds}: already trained ({fold_dir})")
            continue
        echo(f"fold {k + 1}/{folds}: {'resuming' if state == 'partial' else 'training'} -> {fold_dir}")
        if state == "partial":
            read_run_config(fold_dir)  # an emptied config.toml would resume as the default run
            resumed = resolve_config(fold_dir / "config.toml", {"train": {"device": device}})
            train(validate_config(resumed, registry), fold_dir, registry, resume=True, quiet=quiet, echo=echo)
        else:
            train(config, fold_dir, registry, quiet=quiet, echo=echo)

    if only:
        trained = [k for k in range(folds) if fold_state(fold_directory(root, k)) == "done"]
        echo(f"{len(trained)} of {folds} folds are trained" + (
            ": run the same command without --fold to score every case out of fold." if len(trained) == folds
            else f"; still to train: {', '.join(str(k) for k in range(folds) if k not in trained)}."))
        return None
    echo(f"scoring every case with the fold model that never saw it ({', '.join(v[0] for v in VARIANTS)})")
    report = out_of_fold(root, folds, registry, device=device, progress=not quiet)
    atomic_write_text(root / REPORT_FILE, json.dumps(report, indent=2) + "\n")
    info.update(status="done", chosen=report["chosen"])
    atomic_write_text(root / CV_FILE, json.dumps(info, indent=2) + "\n")
    return report


def bootstrap_interval(values: Sequence[float], *, samples: int = 2000, seed: int = 0,
                       level: float = 0.95) -> tuple[float, float]:
    """A percentile bootstrap interval of the mean over cases (cases resampled with replacement)."""
    data = np.asarray([v for v in values if np.isfinite(v)], dtype=np.float64)
    if data.size == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = data[rng.integers(0, data.size, size=(samples, data.size))].mean(axis=1)
    tail = (1 - level) / 2 * 100
    return float(np.percentile(means, tail)), float(np.percentile(means, 100 - tail))


def choose_variant(means: dict[str, float]) -> str:
    """The variant with the highest mean per-case Dice; the plain one unless another beats it strictly.

    Ties go to the simpler variant (fewer steps), in the order of :data:`VARIANTS`.
    """
    best = "plain"
    for name, _tta, _post in VARIANTS:
        if means[name] > means[best] + 1e-9:
            best = name
    return best


def cross_fitted_choice(tables: dict[str, pd.DataFrame], folds: int) -> tuple[pd.DataFrame, list[str]]:
    """Every case scored with the variant chosen on the *other* folds' cases (nested selection).

    Picking the best of :data:`VARIANTS` on the cases it then reports flatters that score; here
    fold ``k``'s cases take the variant :func:`choose_variant` picks from the mean per-case
    Dice of the other folds' cases, so no case helps choose its own variant. Returns the
    per-case table (rows of ``tables[<variant>]``, in case order, with a ``variant`` column)
    and the variant of each fold.
    """
    plain = tables["plain"]
    chosen: list[str] = []
    rows = []
    for k in range(folds):
        others = plain["fold"] != k
        pick = choose_variant({name: float(table.loc[others.to_numpy(), "dice"].mean())
                               for name, table in tables.items()})
        chosen.append(pick)
        rows.append(tables[pick].loc[(plain["fold"] == k).to_numpy()].assign(variant=pick))
    table = pd.concat(rows).sort_index()
    table.insert(2, "variant", table.pop("variant"))
    return table.reset_index(drop=True), chosen


def _summary(table: pd.DataFrame, metrics: Sequence[str]) -> dict[str, Any]:
    summary = {}
    for name in metrics:
        values = table[name].to_numpy(dtype=np.float64)
        low, high = bootstrap_interval(values)
        summary[name] = {"mean": float(np.nanmean(values)), "median": float(np.nanmedian(values)),
                         "ci95": [low, high]}
    return summary


def _validation_items(fold_dir: Path) -> set[str]:
    """The items a fold run validated on, from its ``splits.csv``."""
    table = pd.read_csv(fold_dir / "splits.csv", dtype=str)
    return set(table.loc[table["split"] == "val", "item"])


def fold_model(roots: Sequence[str | Path], fold: int, registry: Any, *, device: str = "auto") -> tuple[Any, Any]:
    """Fold ``fold``'s validation data and the predictor of its last checkpoint.

    Several roots (cross-validations of one split, say trained with other seeds) make the
    predictor the ensemble of every root's fold; a root whose fold validated other cases is a
    :class:`CheckpointError`.
    """

    first, *others = [fold_directory(root, fold) for root in roots]
    expected = _validation_items(first) if others else set()
    for other in others:
        if _validation_items(other) != expected:
            raise CheckpointError(f"{other} validated other cases than {first}: cross-validations make one "
                                  "ensemble per fold only when they share the split (same data, --folds and "
                                  "split.seed).")
    data = select_data(first, registry, split="val")
    return data, load_predictor([first, *others], checkpoint=CHECKPOINT, device=device, registry=registry)


def fold_models(roots: Sequence[str | Path], folds: int, registry: Any, *,
                device: str = "auto") -> Iterator[tuple[int, Any, Any]]:
    """Fold by fold: ``(k, validation data, predictor)`` from :func:`fold_model`, loaded as they are needed."""
    for k in range(folds):
        yield (k, *fold_model(roots, k, registry, device=device))


def out_of_fold_tables(roots: Sequence[str | Path], folds: int, registry: Any, *, device: str = "auto",
                       progress: bool = False) -> dict[str, pd.DataFrame]:
    """Each inference variant's per-case table, every case scored by the fold model(s) that never saw it."""

    metrics = build_metric_set(registry)
    tables: dict[str, list[pd.DataFrame]] = {name: [] for name, _t, _p in VARIANTS}
    for k, data, predictor in fold_models(roots, folds, registry, device=device):
        for name, tta, postprocess in VARIANTS:
            predictor.tta = tta  # one loaded model serves every variant
            score = evaluate_volumes if predictor.volumetric else evaluate_predictor
            accumulator = score(predictor, data, metrics, threshold=predictor.threshold, postprocess=postprocess,
                                progress=progress, description=f"scoring fold {k + 1}/{folds} {name}")
            table = accumulator.per_case_table()
            table.insert(1, "fold", k)
            tables[name].append(table)
    merged = {name: pd.concat(parts, ignore_index=True) for name, parts in tables.items()}
    cases = merged["plain"]["case"]
    if cases.duplicated().any():
        raise CheckpointError(f"case {cases[cases.duplicated()].iloc[0]!r} was validated by two folds: the fold "
                              "runs do not come from one cross-validation split.")
    return merged


def out_of_fold_report(tables: dict[str, pd.DataFrame], folds: int, registry: Any, out: str | Path) -> dict[str, Any]:
    """Choose the variants, write ``OUT/cv-per-case.csv``, return the report.

    The ensemble's variant is chosen on every case (``chosen``, for new data). The scores
    reported (``summary``, the per-case file's metric columns) are each case's under the
    variant chosen without it (:func:`cross_fitted_choice`), so the choice does not flatter
    them; the file also holds every variant's Dice (``dice_<variant>``).
    """

    means = {name: float(table["dice"].mean()) for name, table in tables.items()}
    chosen_name = choose_variant(means)
    chosen = next({"variant": n, "tta": t, "postprocess": p} for n, t, p in VARIANTS if n == chosen_name)
    per_case, per_fold = cross_fitted_choice(tables, folds)
    for name, table in tables.items():
        per_case[f"dice_{name}"] = table["dice"].to_numpy()
    path = Path(out) / PER_CASE_FILE
    atomic_write_text(path, per_case.to_csv(index=False, float_format="%.6g"))
    names = list(build_metric_set(registry))
    return {
        "folds": folds,
        "checkpoint": CHECKPOINT,
        "n_cases": int(len(per_case)),
        "n_images": int(per_case["n_images"].sum()),
        "chosen": chosen,
        "selection": {"method": "per fold, the variant with the highest mean per-case Dice on the other folds' cases",
                      "per_fold": per_fold},
        "summary": _summary(per_case, names),
        "variants": {name: _summary(table, ["dice"])["dice"] for name, table in tables.items()},
        "per_case": json.loads(per_case.to_json(orient="records")),
        "per_case_csv": str(path),
    }


def out_of_fold(root: str | Path, folds: int, registry: Any, *, device: str = "auto",
                progress: bool = False) -> dict[str, Any]:
    """Score each fold's validation cases with that fold's model, for every inference variant.

    Writes ``DIR/cv-per-case.csv`` (one row per case, the chosen variant's scores plus the
    Dice of every variant) and returns the report (keys ``per_case``, ``summary``, ``variants``, ``chosen``).
    """
    tables = out_of_fold_tables([root], folds, registry, device=device, progress=progress)
    return out_of_fold_report(tables, folds, registry, root)


def _score_line(label: str, values: dict[str, Any]) -> str:
    return (f"  {label:<8} per-case Dice mean {values['mean']:.4f}  median {values['median']:.4f}  "
            f"95% CI [{values['ci95'][0]:.4f}, {values['ci95'][1]:.4f}]")


def format_cv_report(report: dict[str, Any]) -> str:
    """The report as a few readable lines: the headline (variant chosen without the case), plain beside it."""
    lines = [f"out-of-fold scores of {report['n_cases']} cases ({report['n_images']} images), {report['folds']} folds, "
             f"{report['checkpoint']} checkpoints:"]
    per_fold = report.get("selection", {}).get("per_fold")
    if per_fold:  # reports written before the nested selection have none
        lines.append(_score_line("headline", report["summary"]["dice"]) + "  each fold with the variant chosen on the "
                     "other folds (" + ", ".join(f"fold-{k} {name}" for k, name in enumerate(per_fold)) + ")")
    lines.append("every variant on every case (the best of these, picked on these same cases, would flatter itself):")
    for name, values in report["variants"].items():
        mark = (f"  <- chosen for the ensemble (on all {report['n_cases']} cases, for new data)"
                if name == report["chosen"]["variant"] else "")
        lines.append(_score_line(name, values) + mark)
    lines.append(f"per-case scores: {report['per_case_csv']}")
    return "\n".join(lines)
