"""Checking every item of a dataset once, before training: nnU-Net's ``--verify_dataset_integrity``, on by default.

A corrupt slice in a test patient used to surface only when evaluate reached it,
after training. :func:`verify_dataset` reads every item through the dataset's own
reader (decodable, image and mask sizes equal, mask values 0/1 or 0/255, channels)
and reports **all** problems in one :class:`~segkit.errors.DataError`. A volume dataset
(one with ``case_volume``) is read case by case instead: a damaged volume is one line naming
its case (:func:`cases_message`), not one per slice; its labels were checked against the
declared ones when the dataset was built.

For datasets on disk (an index with ``image_path``/``mask_path``) a passed check is
remembered: a marker named by a digest of every file's path, size and modification
time (and the reader's settings) in :func:`cache_dir`. The same files are then not
read again, in the next run or the next fold of a cross-validation; touching any
file invalidates the marker.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from segkit.errors import DataError
from segkit.fileio import atomic_write_text

__all__ = ["VerifyResult", "verify_dataset", "dataset_digest", "cache_dir", "problems_message", "cases_message",
           "SHOWN_PROBLEMS"]

SHOWN_PROBLEMS = 20
"""How many problems the error lists one by one (it always gives the total)."""
_VERSION = "1"  # bump when the checks change, so old markers no longer count


def cache_dir() -> Path:
    """Where passed checks are remembered: ``$SEGKIT_CACHE_DIR/verified``, else ``~/.cache/segkit/verified``."""
    base = os.environ.get("SEGKIT_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "segkit")
    return Path(base) / "verified"


@dataclass
class VerifyResult:
    """What :func:`verify_dataset` did: ``items`` checked, or ``cached`` when a marker said they passed before."""

    items: int
    cached: bool
    generated: bool = False

    def describe(self) -> str:
        if self.generated:
            return f"{self.items} generated items: nothing on disk to check"
        if self.cached:
            return f"all {self.items} items passed the data check before (files unchanged)"
        return f"checked all {self.items} items (decodable, sizes, mask values)"


def dataset_digest(dataset: Any) -> str | None:
    """A digest of the dataset's files (path, size, modification time) and reader settings; None without files.

    A file that cannot be stat'ed gives None, so the items are read (and the problem reported).
    """
    columns = [c for c in ("image_path", "mask_path") if c in dataset.index.columns]
    if not columns:
        return None
    digest = hashlib.sha256()
    digest.update(f"{_VERSION}|{type(dataset).__module__}.{type(dataset).__qualname__}|"
                  f"{getattr(dataset, 'slice_channels', '')}|{len(getattr(dataset, 'labels', None) or (0, 1))}\n".encode())
    for row in dataset.index[columns].itertuples(index=False):
        for path in row:
            if path is None:
                continue
            try:
                stat = os.stat(path)
            except OSError:
                return None
            digest.update(f"{os.path.abspath(path)}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def problems_message(problems: list[str], total: int) -> str:
    """``N of TOTAL items cannot be used:`` and the first :data:`SHOWN_PROBLEMS` problems, one per line."""
    shown = "\n".join(f"  - {p}" for p in problems[:SHOWN_PROBLEMS])
    more = f"\n  ... and {len(problems) - SHOWN_PROBLEMS} more" if len(problems) > SHOWN_PROBLEMS else ""
    return (f"{len(problems)} of {total} items cannot be used:\n{shown}{more}\n"
            "Fix or remove these files and run again (nothing was written).")


def cases_message(problems: list[str], total: int) -> str:
    """One problem of a volume dataset as one line (it names its case); several as a list under a count."""
    if len(problems) == 1:
        return problems[0]
    shown = "\n".join(f"  - {p}" for p in problems[:SHOWN_PROBLEMS])
    more = f"\n  ... and {len(problems) - SHOWN_PROBLEMS} more" if len(problems) > SHOWN_PROBLEMS else ""
    return f"{len(problems)} of {total} cases cannot be used:\n{shown}{more}"


def _verify_volumes(dataset: Any) -> None:
    """Read every case of a volume dataset once; one DataError naming each case that cannot be read."""
    cases = [str(c) for c in dataset.cases_table["case"]]
    problems = []
    read = getattr(dataset, "read_case_volume", dataset.case_volume)  # read once, not kept: one case in memory
    for case in cases:
        try:
            read(case)
        except DataError as error:
            problems.append(f"case {case!r}: {error}")
    if problems:
        raise DataError(cases_message(problems, len(cases)) + ("\n" if len(problems) > 1 else "; ")
                        + "nothing was written (train.verify_data = false skips this check)")


def verify_dataset(dataset: Any, remember: bool = True) -> VerifyResult:
    """Read every item once and raise one :class:`DataError` listing every item that cannot be used.

    Each item is read with the dataset's ``read_raw`` (one slice, before any
    normalisation, context or augmentation). With ``remember``, a dataset on disk that
    passes is marked in :func:`cache_dir` and not read again while its files are unchanged.
    """
    if not getattr(dataset, "verify_items", True):  # generated in memory (the synthetic set): nothing can be corrupt
        return VerifyResult(len(dataset), cached=True, generated=True)
    digest = dataset_digest(dataset) if remember else None
    marker = cache_dir() / f"{digest}.ok" if digest else None
    if marker is not None and marker.is_file():
        return VerifyResult(len(dataset), cached=True)
    if hasattr(dataset, "case_volume") and hasattr(dataset, "cases_table"):
        _verify_volumes(dataset)
        return VerifyResult(len(dataset), cached=False)
    names = dataset.index["item"].astype(str).tolist()
    problems: list[str] = []
    for i in range(len(dataset)):
        try:
            image, mask = dataset.read_raw(i)
        except DataError as error:
            problems.append(f"{names[i]}: {error}")
            continue
        if image.shape[:2] != mask.shape[:2]:
            problems.append(f"{names[i]}: the image is {image.shape[0]}x{image.shape[1]} and its mask "
                            f"{mask.shape[0]}x{mask.shape[1]}")
    if problems:
        raise DataError(problems_message(problems, len(dataset)) + " train.verify_data = false skips this "
                        "check; the first bad item then stops the run when it is reached.")
    if marker is not None:
        try:
            atomic_write_text(marker, f"{len(dataset)} items\n")
        except OSError:
            pass  # remembering is only a saving; a read-only home must not stop a run
    return VerifyResult(len(dataset), cached=False)
