"""Train / validation / test splits by case (patient), and their CSV files.

Slices of one patient look alike, so a split by slice lets the model see the
test patients while training. :func:`make_splits` therefore splits by case
unless asked otherwise, with scikit-learn's group-aware splitters for folds and
slices. scikit-learn is imported only where those are made: reading ``splits.csv``
(evaluate, predict, export) and a run's usual hold-out by case (the same draws as
scikit-learn's GroupShuffleSplit, made here) do not pay its second of import time.
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from segkit.errors import ConfigError, DataError, unknown_name
from segkit.fileio import atomic_write_text

__all__ = ["SPLIT_MODES", "SPLIT_NAMES", "make_splits", "write_splits", "read_splits"]

SPLIT_MODES: tuple[str, ...] = ("case", "slice", "none")
SPLIT_NAMES: tuple[str, ...] = ("train", "val", "test")
_CANDIDATES = 16  # random case draws compared to stratify a hold-out on has_lesion

SLICE_WARNING = ("split_by='slice' puts neighbouring slices of one patient in both train and test, "
                 "so the scores overestimate how the model does on new patients; use split_by='case'")


def _check_fraction(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ConfigError(f"{name} must be a number in [0, 1), got {value!r}")
    return float(value)


def _holdout(rows: np.ndarray, groups: np.ndarray, labels: np.ndarray, fraction: float,
             seed: int) -> np.ndarray:
    """Rows (positions into ``rows``) of a hold-out of about ``fraction`` of the groups.

    Among a few random group draws, keep the one whose lesion fraction is closest
    to the whole set's: a stratified draw that keeps the number of groups exact.
    """
    target = labels.mean()
    best, best_gap = None, math.inf
    for held in group_draws(groups, fraction, seed, _CANDIDATES):
        gap = abs(labels[held].mean() - target)
        if gap < best_gap - 1e-12:
            best, best_gap = held, gap
    return best


def group_draws(groups: np.ndarray, fraction: float, seed: int, draws: int):
    """Rows of ``draws`` random hold-outs, each of ``ceil(fraction x groups)`` whole groups.

    The draws of scikit-learn's ``GroupShuffleSplit(draws, test_size=fraction, random_state=seed)``, bit for bit
    (tests/test_splits.py compares them), made without importing scikit-learn: that import (scipy.stats with it)
    would cost every run about a second before its first epoch, for one permutation per draw.
    """
    names, group_of_row = np.unique(groups, return_inverse=True)
    count = math.ceil(fraction * len(names))
    generator = np.random.RandomState(seed)
    for _ in range(draws):
        held = generator.permutation(len(names))[:count]
        yield np.flatnonzero(np.isin(group_of_row, held))


def _slice_holdout(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    from sklearn.model_selection import train_test_split

    positions = np.arange(len(labels))
    stratify = labels if min(np.bincount(labels, minlength=2)) >= 2 else None
    _, held = train_test_split(positions, test_size=fraction, random_state=seed, stratify=stratify)
    return np.sort(held)


def _fold_splitter(labels: np.ndarray, folds: int, by_case: bool, seed: int):
    from sklearn.model_selection import GroupKFold, KFold, StratifiedGroupKFold, StratifiedKFold

    stratified = min(np.bincount(labels, minlength=2)) >= folds
    if by_case:
        return StratifiedGroupKFold(folds, shuffle=True, random_state=seed) if stratified else \
            GroupKFold(folds, shuffle=True, random_state=seed)
    return StratifiedKFold(folds, shuffle=True, random_state=seed) if stratified else \
        KFold(folds, shuffle=True, random_state=seed)


def _units(n_rows: int, groups: np.ndarray, by_case: bool) -> int:
    return len(np.unique(groups)) if by_case else n_rows


def make_splits(index: pd.DataFrame, val_fraction: float = 0.1, test_fraction: float = 0.15,
                split_by: str = "case", folds: int | None = None, fold: int | None = None,
                seed: int = 0) -> pd.Series:
    """Assign every row of ``index`` to ``"train"``, ``"val"`` or ``"test"``.

    By default ``val_fraction`` of the cases go to validation, then ``test_fraction``
    of the remaining cases to test (the Kaggle LGG tutorial's proportions, but by
    patient). With ``folds=K, fold=I``, ``test_fraction`` of the cases are held out
    first, the rest are cut in K folds by case and fold I is validation
    (``val_fraction`` is then unused). ``test_fraction=0`` means no test split.
    Hold-outs and folds keep the share of lesion slices close to the whole set's.

    Returns:
        A Series of split names aligned with ``index`` rows, named ``"split"``.
    """
    if split_by not in SPLIT_MODES:
        raise unknown_name("split_by value", split_by, SPLIT_MODES)
    val_fraction = _check_fraction("val_fraction", val_fraction)
    test_fraction = _check_fraction("test_fraction", test_fraction)
    by_case = split_by == "case"
    needed = ["has_lesion"] + (["case"] if by_case else [])
    missing = [c for c in needed if c not in index.columns]
    if missing:
        raise DataError(f"the dataset index lacks the column(s) {', '.join(missing)} needed to split it")
    if len(index) == 0:
        raise DataError("cannot split an empty dataset")
    if (folds is None) != (fold is None):
        raise ConfigError("give both folds and fold (e.g. folds=5, fold=0), or neither")
    if split_by == "none":  # nothing held out: the trainer validates on the training items
        if folds is not None:
            raise ConfigError("split_by='none' holds no case out, so it has no folds; use split_by='case'")
        return pd.Series(["train"] * len(index), index=index.index, name="split", dtype=object)
    if folds is not None:
        if isinstance(folds, bool) or not isinstance(folds, int) or folds < 2:
            raise ConfigError(f"folds must be an integer >= 2, got {folds!r}")
        if isinstance(fold, bool) or not isinstance(fold, int) or not 0 <= fold < folds:
            raise ConfigError(f"fold must be an integer in [0, {folds}), got {fold!r}")
    elif val_fraction == 0:
        raise ConfigError("val_fraction must be > 0 (or use folds=K, fold=I)")
    if not by_case:
        warnings.warn(SLICE_WARNING, UserWarning, stacklevel=2)

    groups = index["case"].astype(str).to_numpy() if by_case else np.arange(len(index)).astype(str)
    labels = index["has_lesion"].astype(bool).to_numpy().astype(np.int64)
    split = np.full(len(index), "train", dtype=object)
    n_units = _units(len(index), groups, by_case)
    unit = "case" if by_case else "slice"

    def empty(name: str) -> DataError:
        change = ("lower val_fraction/test_fraction (test_fraction=0 means no test split), use fewer folds, "
                  "or add cases")
        return DataError(f"the {name} split would be empty: the dataset has {n_units} {unit}(s) "
                         f"(val_fraction={val_fraction}, test_fraction={test_fraction}, folds={folds}); {change}")

    def hold(rows: np.ndarray, fraction: float, name: str, salt: int) -> None:
        count = _units(len(rows), groups[rows], by_case)
        if math.ceil(fraction * count) >= count:  # nothing would remain for training
            raise empty("train")
        held = (_holdout(rows, groups[rows], labels[rows], fraction, seed + salt) if by_case
                else _slice_holdout(labels[rows], fraction, seed + salt))
        split[rows[held]] = name

    rows = np.arange(len(index))
    if folds is None:
        hold(rows, val_fraction, "val", 0)
        if test_fraction > 0:
            hold(np.flatnonzero(split == "train"), test_fraction, "test", 1)
    else:
        if test_fraction > 0:
            hold(rows, test_fraction, "test", 1)
        rest = np.flatnonzero(split == "train")
        available = _units(len(rest), groups[rest], by_case)
        if available < folds:
            raise DataError(f"folds={folds} needs at least {folds} {unit}s outside the test split, but there are "
                            f"{available} (of {n_units}); use fewer folds or a lower test_fraction")
        splitter = _fold_splitter(labels[rest], folds, by_case, seed)
        for i, (_, held) in enumerate(splitter.split(rest, labels[rest], groups[rest])):
            if i == fold:
                split[rest[held]] = "val"
    for name in ("train", "val"):
        if not (split == name).any():
            raise empty(name)
    return pd.Series(split, index=index.index, name="split", dtype=object)


def write_splits(path: str | os.PathLike, index: pd.DataFrame, split: pd.Series) -> Path:
    """Write ``item, case, split`` rows to a CSV file, atomically (temp file then rename)."""
    path = Path(path)
    if len(split) != len(index):
        raise DataError(f"{len(split)} split labels for {len(index)} items")
    table = pd.DataFrame({"item": index["item"].to_numpy(), "case": index["case"].to_numpy(),
                          "split": np.asarray(split)})
    atomic_write_text(path, table.to_csv(index=False, lineterminator="\n"))
    return path


def read_splits(path: str | os.PathLike, index: pd.DataFrame) -> pd.Series:
    """Read a CSV from :func:`write_splits` and align it with ``index``.

    DataError when the file is missing or malformed, or its items differ from the index's.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"split file not found: {path}")
    try:
        table = pd.read_csv(path, dtype={"item": str, "case": str, "split": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read split file {path}: {exc}") from None
    lacking = [c for c in ("item", "split") if c not in table.columns]
    if lacking:
        raise DataError(f"split file {path} lacks the column(s) {', '.join(lacking)}; "
                        f"expected item, case, split")
    bad = sorted(set(table["split"].dropna()) - set(SPLIT_NAMES)) + (["(empty)"] if table["split"].isna().any() else [])
    if bad:
        raise DataError(f"split file {path} has unknown split name(s) {', '.join(map(str, bad[:5]))}; "
                        f"expected {', '.join(SPLIT_NAMES)}")
    if table["item"].duplicated().any():
        raise DataError(f"split file {path} lists item {table['item'][table['item'].duplicated()].iloc[0]!r} twice")
    items = index["item"].astype(str)
    extra = sorted(set(table["item"]) - set(items))
    absent = sorted(set(items) - set(table["item"]))
    if extra or absent:
        parts = [f"split file {path} does not match the dataset ({len(index)} items):"]
        if absent:
            parts.append(f"{len(absent)} dataset item(s) missing from it, e.g. {', '.join(absent[:3])};")
        if extra:
            parts.append(f"{len(extra)} item(s) not in the dataset, e.g. {', '.join(extra[:3])};")
        parts.append("was it written for another dataset or data root?")
        raise DataError(" ".join(parts))
    mapping = dict(zip(table["item"], table["split"]))
    return pd.Series([mapping[i] for i in items], index=index.index, name="split", dtype=object)
