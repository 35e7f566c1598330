"""Reading what a run directory holds as untrusted input: every field checked, every problem one line.

Run directories are shared, downloaded and attached to tickets, so their files may be damaged,
edited or planted. These readers are what the report (and anything else that shows a run) goes
through:

- ``summary.json`` must be a JSON object; its headline value, where there is one, a number;
- a per-case CSV must be UTF-8 text whose every row has every column;
- text files (``config.toml``) must be UTF-8; a run's ``config.toml`` must name its model, loss and
  dataset (an emptied one is named as such, not a ``KeyError``);
- a figure is embedded only when it is a regular file (not a symbolic link) that lies inside the
  run directory and starts with the PNG signature.

A problem is a :class:`~segkit.errors.RunFileError` naming the file and the field.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

from segkit.errors import RunFileError
from segkit.tomlio import read_toml

__all__ = ["read_summary", "read_case_table", "read_run_config", "read_text", "regular_file_inside", "trusted_image",
           "PNG_SIGNATURE"]

#: The tables a run's config.toml holds, as segkit run writes it (segkit.config.SECTIONS); the first three name
#: their component.
RUN_SECTIONS = ("model", "loss", "dataset", "task", "metrics", "split", "train")

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAX_FILE_BYTES = 64 * 1024 * 1024


def _bytes(path: Path) -> bytes:
    if path.is_symlink():
        raise RunFileError(f"{path} is a symbolic link; segkit reads only the run directory's own files. Replace it "
                           "with the file itself")
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise RunFileError(f"{path} is {size / 2**20:.0f} MiB, more than any file segkit writes there; it is not a "
                           "run file")
    return path.read_bytes()


def read_text(path: str | Path) -> str:
    """The UTF-8 text of ``path``."""
    path = Path(path)
    data = _bytes(path)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RunFileError(f"{path} is not UTF-8 text (byte {exc.start}: {exc.reason}); it was not written by "
                           "segkit or was damaged") from None


def read_summary(path: str | Path) -> dict[str, Any]:
    """``summary.json`` as a dict, with a numeric ``headline.value`` where a headline is given."""
    path = Path(path)
    try:
        summary = json.loads(read_text(path))
    except json.JSONDecodeError as exc:
        raise RunFileError(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno}); it was cut short or "
                           "edited. Rerun 'segkit evaluate' or the run to write it again") from None
    if not isinstance(summary, dict):
        raise RunFileError(f"{path} holds a JSON {type(summary).__name__}, not the object segkit writes")
    headline = summary.get("headline")
    if headline is not None:
        if not isinstance(headline, dict):
            raise RunFileError(f"{path}: field 'headline' is a {type(headline).__name__}, not an object")
        value = headline.get("value")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(float(value)):
            raise RunFileError(f"{path}: field 'headline.value' is {value!r}, not a finite number")
    return summary


def read_run_config(run_dir: str | Path) -> dict[str, Any]:
    """A run directory's ``config.toml`` as a dict, checked to be the configuration ``segkit run`` wrote: a table
    per section, the model, loss and dataset each named. An empty or gutted file is a :class:`RunFileError`
    naming it and what is missing (a configuration file of your own may leave sections out; a run's never does)."""

    path = Path(run_dir) / "config.toml"
    document = read_toml(path)
    if not document:
        raise RunFileError(f"{path} is empty; a run's config.toml names its model, loss and dataset (segkit run "
                           "writes it whole). Restore it from a copy: each checkpoint of the run holds the same "
                           "configuration under 'config'")
    missing = [f"[{name}]" for name in RUN_SECTIONS if not isinstance(document.get(name), dict)]
    missing += [f"{name}.name" for name in RUN_SECTIONS[:3]
                if isinstance(document.get(name), dict) and not isinstance(document[name].get("name"), str)]
    if missing:
        raise RunFileError(f"{path} lacks {', '.join(missing)}; a run's config.toml names its model, loss and "
                           "dataset (segkit run writes it whole). Restore it from a copy: each checkpoint of the run "
                           "holds the same configuration under 'config'")
    return document


def read_case_table(path: str | Path) -> tuple[list[str], list[dict[str, str]]]:
    """A per-case CSV as (columns, rows); a short or long row, or non-text content, names the file and line."""
    path = Path(path)
    text = read_text(path)
    if "\x00" in text:
        raise RunFileError(f"{path} holds binary content, not a per-case table")
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        records = list(reader)
    except csv.Error as exc:
        raise RunFileError(f"{path} is not a valid CSV table: {exc}") from None
    if not records:
        return [], []
    columns, rows = records[0], []
    for number, record in enumerate(records[1:], start=2):
        if not record:
            continue
        if len(record) != len(columns):
            raise RunFileError(f"{path}, line {number}: {len(record)} fields for the {len(columns)} columns "
                               f"({', '.join(columns[:6])}{', ...' if len(columns) > 6 else ''}); the table was "
                               "cut short or edited")
        rows.append(dict(zip(columns, record, strict=True)))
    return columns, rows


def regular_file_inside(root: str | Path, path: str | Path) -> bool:
    """Whether ``path`` is a regular file (not a symbolic link) that really lies inside ``root``."""
    path = Path(path)
    if path.is_symlink() or not path.is_file():
        return False
    try:
        path.resolve().relative_to(Path(root).resolve())
    except ValueError:
        return False
    return True


def trusted_image(root: str | Path, name: str) -> bytes | None:
    """The PNG ``root/name`` when it is a regular file inside ``root``; None when there is none to embed.

    A symbolic link (to anywhere), a path that leaves the run directory, or a file that is not a
    PNG is never read into a page: a shared run directory must not leak other files.
    """
    root = Path(root)
    path = root / name
    if not regular_file_inside(root, path):
        return None
    with path.open("rb") as handle:
        data = handle.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES or not data.startswith(PNG_SIGNATURE):
        return None
    return data
