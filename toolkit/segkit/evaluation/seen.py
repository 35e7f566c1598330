"""Which of the evaluated cases a model trained on, from its run's ``splits.csv``.

Scores on such cases look like a test and are not one: evaluate marks them (a warning, the
report's ``trained_on``) and refuses them for a cross-validation.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from segkit.runs.rundir import run_directory

__all__ = ["trained_on", "trained_on_message"]


def trained_on(data: Any, sources: Sequence[str | Path]) -> list[dict[str, Any]]:
    """Each source run that trained on evaluated cases: ``{"run", "cases", "of"}`` (from its ``splits.csv``).

    A case counts when its id (or, for an older splits.csv without a case column, one of its
    items) is in the run's training split: the same patient is the same patient, whichever folder
    or dataset name it is read from.
    """
    import pandas as pd

    index = data.dataset.index.iloc[data.positions]
    cases = index["case"].astype(str)
    found = []
    for source in sources:
        run = run_directory(source)
        if run is None or not (run / "splits.csv").is_file():
            continue
        try:
            table = pd.read_csv(run / "splits.csv", dtype=str)
        except (OSError, ValueError):
            continue  # a damaged splits.csv is reported by whatever needs it
        if "split" not in table.columns:
            continue
        train = table.loc[table["split"] == "train"]
        if "case" in table.columns:
            seen = set(cases) & set(train["case"].dropna())
        else:
            seen = set(cases[index["item"].astype(str).isin(set(train["item"]))])
        if seen:
            found.append({"run": str(run), "cases": len(seen), "of": int(cases.nunique()),
                          "example": sorted(seen)[0]})
    return found


def trained_on_message(found: list[dict[str, Any]]) -> str:
    """One sentence naming the first run of :func:`trained_on`'s list and how many cases it trained on."""
    first = found[0]
    others = f" (and {len(found) - 1} other model(s) likewise)" if len(found) > 1 else ""
    return (f"run {first['run']!r} trained on {first['cases']} of the {first['of']} evaluated cases (e.g. "
            f"{first['example']}){others}, so these scores are optimistic, not a test of unseen cases.")
