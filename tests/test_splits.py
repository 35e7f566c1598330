"""Case-level splits: no patient in two splits, folds, slice mode, empty splits and the CSV file."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from segkit.data import make_splits, read_splits, write_splits
from segkit.errors import ConfigError, DataError, UnknownNameError


def make_index(cases: int = 30, slices: int = 20, seed: int = 0) -> pd.DataFrame:
    """Cases of varied sizes, about a third of the slices with lesion."""
    rng = np.random.default_rng(seed)
    rows = []
    for c in range(cases):
        for s in range(int(rng.integers(slices // 2, slices + 1))):
            rows.append({"item": f"c{c:02d}_s{s:02d}", "case": f"c{c:02d}", "has_lesion": bool(rng.random() < 0.35)})
    return pd.DataFrame(rows)


def cases_of(index: pd.DataFrame, split: pd.Series, name: str) -> set[str]:
    return set(index.loc[split == name, "case"])


def test_default_split_keeps_each_case_in_one_split():
    index = make_index()
    split = make_splits(index)
    assert split.index.equals(index.index) and set(split) == {"train", "val", "test"}
    train, val, test = (cases_of(index, split, n) for n in ("train", "val", "test"))
    assert not (train & val or train & test or val & test)
    assert train | val | test == set(index["case"])
    # 10% of 30 cases for validation, then 15% of the remaining 27 for test (rounded up).
    assert len(val) == 3 and len(test) == 5 and len(train) == 22


def test_split_is_deterministic_and_seeded():
    index = make_index()
    pd.testing.assert_series_equal(make_splits(index, seed=3), make_splits(index, seed=3))
    assert not make_splits(index, seed=3).equals(make_splits(index, seed=4))


def test_holdouts_keep_the_lesion_share_close():
    index = make_index(cases=60)
    split = make_splits(index, val_fraction=0.2, test_fraction=0.2)
    overall = index["has_lesion"].mean()
    for name in ("val", "test"):
        assert abs(index.loc[split == name, "has_lesion"].mean() - overall) < 0.05


@pytest.mark.parametrize("groups", [3, 7, 29, 110])
def test_the_case_holdout_draws_are_scikit_learns_bit_for_bit(groups):
    """A run's hold-out by case skips scikit-learn's import; its draws stay GroupShuffleSplit's, so every split
    made before (runs, kept benchmark tables) is made again the same."""
    from sklearn.model_selection import GroupShuffleSplit

    from segkit.data.splits import group_draws

    rng = np.random.default_rng(groups)
    names = np.array([f"patient-{n:03d}" for n in rng.permutation(groups)])
    rows = np.repeat(names, rng.integers(1, 6, size=groups))  # cases of several slices, in no order
    for fraction, seed in [(0.1, 0), (0.15, 1), (0.2, 7), (0.5, 123)]:
        ours = list(group_draws(rows, fraction, seed, 16))
        theirs = [held for _, held in GroupShuffleSplit(16, test_size=fraction, random_state=seed).split(rows, groups=rows)]
        assert len(ours) == 16 and all(np.array_equal(a, b) for a, b in zip(ours, theirs, strict=True))


def test_zero_test_fraction_means_no_test_split():
    index = make_index(cases=4)
    split = make_splits(index, test_fraction=0)
    assert set(split) == {"train", "val"}


@pytest.mark.parametrize("cases", [1, 2])
def test_too_few_cases_say_how_many_and_what_to_change(cases):
    with pytest.raises(DataError, match=rf"train split would be empty.*has {cases} case.*test_fraction=0"):
        make_splits(make_index(cases=cases))


def test_folds_cover_every_non_test_case_once():
    index = make_index(cases=25)
    k = 5
    splits = [make_splits(index, folds=k, fold=i, seed=1) for i in range(k)]
    test = cases_of(index, splits[0], "test")
    assert test and all(cases_of(index, s, "test") == test for s in splits)  # one test set for all folds
    seen: list[str] = []
    for split in splits:
        val, train = cases_of(index, split, "val"), cases_of(index, split, "train")
        assert val and not val & train and not val & test
        seen += sorted(val)
    assert sorted(seen) == sorted(set(index["case"]) - test)


def test_folds_without_a_test_split():
    index = make_index(cases=6)
    val = [cases_of(index, make_splits(index, test_fraction=0, folds=3, fold=i), "val") for i in range(3)]
    assert sorted(c for v in val for c in v) == sorted(set(index["case"]))


def test_folds_on_single_class_labels_still_work():
    index = make_index(cases=6).assign(has_lesion=False)
    split = make_splits(index, test_fraction=0, folds=3, fold=0)
    assert (split == "val").any()


@pytest.mark.parametrize("folds, fold, match", [(1, 0, "folds must be"), (3, 3, "fold must be"),
                                                (3, -1, "fold must be"), (3, None, "both folds and fold"),
                                                (None, 0, "both folds and fold")])
def test_bad_fold_settings(folds, fold, match):
    with pytest.raises(ConfigError, match=match):
        make_splits(make_index(), folds=folds, fold=fold)


def test_more_folds_than_cases():
    with pytest.raises(DataError, match=r"folds=6 needs at least 6 cases.*there are 4"):
        make_splits(make_index(cases=5), test_fraction=0.15, folds=6, fold=0)


def test_slice_mode_warns_about_leakage_and_splits_slices():
    index = make_index(cases=5)
    with pytest.warns(UserWarning, match="neighbouring slices of one patient"):
        split = make_splits(index, split_by="slice")
    assert set(split) == {"train", "val", "test"}
    shared = cases_of(index, split, "train") & cases_of(index, split, "test")
    assert shared  # patients do leak: that is what the warning is about
    assert abs((split == "val").mean() - 0.1) < 0.02


def test_case_mode_does_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        make_splits(make_index())


@pytest.mark.parametrize("kwargs, error", [
    ({"split_by": "patient"}, UnknownNameError), ({"val_fraction": 1.0}, ConfigError),
    ({"test_fraction": -0.1}, ConfigError), ({"val_fraction": 0}, ConfigError),
])
def test_bad_settings(kwargs, error):
    with pytest.raises(error):
        make_splits(make_index(), **kwargs)


def test_index_without_case_column():
    with pytest.raises(DataError, match="case"):
        make_splits(make_index().drop(columns="case"))


def test_write_then_read_round_trip(tmp_path):
    index = make_index()
    split = make_splits(index)
    path = write_splits(tmp_path / "run" / "splits.csv", index, split)
    table = pd.read_csv(path)
    assert list(table.columns) == ["item", "case", "split"]
    assert not list(path.parent.glob("*.tmp"))
    shuffled = index.sample(frac=1, random_state=0)
    again = read_splits(path, shuffled)
    pd.testing.assert_series_equal(again, split.loc[shuffled.index])


def test_read_splits_for_another_dataset(tmp_path):
    index = make_index()
    path = write_splits(tmp_path / "splits.csv", index, make_splits(index))
    other = make_index(cases=31)
    with pytest.raises(DataError, match=r"does not match the dataset.*missing from it.*another dataset"):
        read_splits(path, other)
    with pytest.raises(DataError, match="not in the dataset"):
        read_splits(path, index.iloc[:-3])


def test_read_splits_bad_files(tmp_path):
    index = make_index(cases=2)
    with pytest.raises(DataError, match="not found"):
        read_splits(tmp_path / "none.csv", index)
    (tmp_path / "cols.csv").write_text("name,fold\na,1\n")
    with pytest.raises(DataError, match="lacks the column"):
        read_splits(tmp_path / "cols.csv", index)
    bad = pd.DataFrame({"item": index["item"], "case": index["case"], "split": "training"})
    bad.to_csv(tmp_path / "names.csv", index=False)
    with pytest.raises(DataError, match="unknown split name.*training"):
        read_splits(tmp_path / "names.csv", index)


def test_real_lgg_patients_split_by_patient(lgg_small):
    from segkit_builtins.datasets.lgg import LGGDataset

    index = LGGDataset(str(lgg_small)).index
    split = make_splits(index, test_fraction=0)
    assert cases_of(index, split, "val").isdisjoint(cases_of(index, split, "train"))
    assert len(cases_of(index, split, "val")) == 1
