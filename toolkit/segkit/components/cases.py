"""``dataset.cases``: train, evaluate or inspect some cases of any dataset instead of all of them.

Every dataset takes the parameter (the registry adds it): a list of case ids, or ``"@FILE"``
naming a text file with one case id a line. :func:`parse_cases` reads it before any work (no
torch); once the dataset is built, the registry keeps those cases' items through the dataset's own
``select_cases`` (:meth:`segkit.data.base.SegmentationDataset.select_cases`), after
:func:`check_cases` found every id in it.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

from segkit.errors import ConfigError

__all__ = ["CASES_PARAMETER", "CASES_HELP", "parse_cases", "check_cases", "select_cases"]

CASES_PARAMETER = "cases"
CASES_HELP = ("dataset.cases takes a list of case ids, e.g. ['TCGA_CS_4941_19960909', 'TCGA_CS_4942_19970222'], "
              "or '@FILE', a text file with one case id a line (blank lines and lines starting with # are skipped)")


def _read_file(text: str, where: str) -> list[str]:
    path = Path(text[1:]).expanduser()
    try:
        lines = path.read_text().splitlines()
    except OSError as error:
        raise ConfigError(f"{where}: cannot read the case list {str(path)!r}: {error.strerror or error}. "
                          f"{CASES_HELP}.") from None
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]


def parse_cases(value: Any, where: str = "dataset.cases") -> list[str] | None:
    """The case ids ``value`` names, in order, each once; None for None (every case).

    A :class:`ConfigError` for anything but a list of ids (strings or integers) or ``"@FILE"``,
    for a file that cannot be read, and for a list that names no case.
    """
    if value is None:
        return None
    if isinstance(value, str) and value.startswith("@"):
        ids = _read_file(value, where)
    elif isinstance(value, (list, tuple)) and all(
            isinstance(v, str) or (isinstance(v, int) and not isinstance(v, bool)) for v in value):
        ids = [str(v).strip() for v in value]
    else:
        raise ConfigError(f"{where} must be a list of case ids or '@FILE', got {value!r}. {CASES_HELP}.")
    ids = list(dict.fromkeys(i for i in ids if i))
    if not ids:
        raise ConfigError(f"{where} names no case. {CASES_HELP}.")
    return ids


def _unknown_message(unknown: list[str], known: list[str], name: str) -> str:
    shown = []
    for case in unknown[:10]:
        close = difflib.get_close_matches(case, known, n=1, cutoff=0.6)
        shown.append(repr(case) + (f" (did you mean {close[0]!r}?)" if close else ""))
    more = f", and {len(unknown) - 10} more" if len(unknown) > 10 else ""
    examples = ", ".join(repr(c) for c in known[:3]) + (", ..." if len(known) > 3 else "")
    return (f"dataset.cases names {len(unknown)} case(s) that dataset {name!r} does not have: {', '.join(shown)}"
            f"{more}. It has {len(known)} cases ({examples}), the ids in the 'case' column of a run's splits.csv.")


def check_cases(index: Any, cases: list[str], name: str = "dataset") -> None:
    """A :class:`ConfigError` naming every id of ``cases`` that the dataset ``index`` (its ``case`` column) lacks."""
    known = list(dict.fromkeys(index["case"].astype(str)))
    present = set(known)
    unknown = [case for case in cases if case not in present]
    if unknown:
        raise ConfigError(_unknown_message(unknown, known, name))


def select_cases(dataset: Any, cases: list[str] | None, name: str = "dataset") -> Any:
    """``dataset`` itself for None, else its view of the items of ``cases`` (the dataset's ``select_cases``).

    A case id the dataset does not have is a :class:`ConfigError` naming every such id.
    """
    if cases is None:
        return dataset
    select = getattr(dataset, "select_cases", None)
    if select is None:
        raise ConfigError(f"dataset {name!r} ({type(dataset).__name__}) cannot keep some of its cases: dataset.cases "
                          "needs a segkit.data.SegmentationDataset; leave dataset.cases out.")
    check_cases(dataset.index, cases, name)
    return select(cases)
