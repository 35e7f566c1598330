"""Reading and writing the small TOML documents segkit uses (configs, resolved runs).

Python reads TOML (``tomllib``) but does not write it; run configurations only
need tables of scalars and lists, which this module writes. ``None`` values are
left out, since TOML has no null.
"""

from __future__ import annotations

import math
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from segkit.errors import ConfigError
from segkit.fileio import atomic_write_text  # re-exported: run directories write TOML with it

__all__ = ["read_toml", "dumps_toml", "parse_toml_value", "atomic_write_text", "toml_key", "toml_value"]


def read_toml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Parse a TOML file; a missing file or a syntax error is a :class:`ConfigError`."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist.")
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {str(path)!r} is not valid TOML: {exc}.") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {str(path)!r} is not UTF-8 text (byte {exc.start}: {exc.reason}); "
                          "save it as UTF-8.") from None


def parse_toml_value(text: str) -> Any:
    """Parse one value the way TOML does; bare words that are not TOML become strings."""
    try:
        return tomllib.loads(f"value = {text}")["value"]
    except tomllib.TOMLDecodeError:
        return text


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        return f'"{escaped}"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_scalar(v) for v in value if v is not None) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{_key(k)} = {_scalar(v)}" for k, v in value.items() if v is not None) + "}"
    raise TypeError(f"cannot write {type(value).__name__} to TOML: {value!r}")


def _key(key: str) -> str:
    return key if key.replace("_", "").replace("-", "").isalnum() else _scalar(key)


def toml_value(value: Any) -> str:
    """One value as TOML text (strings quoted, lists and inline tables written out)."""
    return _scalar(value)


def toml_key(key: str) -> str:
    """A key as TOML text: bare where it can be, else quoted."""
    return _key(key)


def dumps_toml(document: Mapping[str, Any]) -> str:
    """Write a mapping of tables (one level of sections, nested tables inline) as TOML text."""
    lines: list[str] = []
    for key, value in document.items():
        if value is not None and not isinstance(value, Mapping):
            lines.append(f"{_key(key)} = {_scalar(value)}")
    for section, table in document.items():
        if not isinstance(table, Mapping):
            continue
        if lines:
            lines.append("")
        lines.append(f"[{_key(section)}]")
        for key, value in table.items():
            if value is not None:
                lines.append(f"{_key(key)} = {_scalar(value)}")
    return "\n".join(lines) + "\n"
