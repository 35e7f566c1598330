"""User-facing error types.

Every error a user can cause (a typo, a missing file, an impossible setting)
is a :class:`SegkitError`: the CLI prints its message on one line and exits
with status 2, without a traceback. Anything else is a bug and shows one.
"""

from __future__ import annotations

import difflib
import errno
import os
from collections.abc import Iterable

__all__ = [
    "SegkitError",
    "UnknownNameError",
    "DuplicateComponentError",
    "PluginLoadError",
    "ConfigError",
    "DataError",
    "CheckpointError",
    "RunFileError",
    "TrainingError",
    "OUTPUT_ERRNOS",
    "os_error_message",
    "unknown_name",
]


class SegkitError(Exception):
    """Base class of every error caused by the user's input or environment."""

    exit_code: int = 2


class UnknownNameError(SegkitError, KeyError):
    """A component, kind, parameter or option value that does not exist."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class DuplicateComponentError(SegkitError):
    """Two plugins register the same kind and name."""


class PluginLoadError(SegkitError):
    """A plugin could not be imported or its hook failed."""


class ConfigError(SegkitError):
    """A run configuration with an unknown key, a wrong type or an impossible value."""


class DataError(SegkitError):
    """A dataset that is missing, incomplete, corrupt or inconsistent."""


class RunFileError(SegkitError):
    """A file in a run directory is damaged, edited or not what segkit wrote (summary.json, a per-case CSV, ...)."""


class CheckpointError(SegkitError):
    """A checkpoint or run directory that cannot be used."""


class TrainingError(SegkitError):
    """Training stopped for a reason the user can act on (NaN loss, out of memory)."""


OUTPUT_ERRNOS: frozenset[int] = frozenset(
    code for code in (errno.ENOSPC, getattr(errno, "EDQUOT", None), errno.EROFS, errno.EACCES, errno.EPERM,
                      errno.EFBIG, errno.ENOTDIR, errno.EISDIR) if code is not None)
"""OS errors that come from where the user asked segkit to write (no space, read-only, permissions)."""

_ADVICE = {
    errno.ENOSPC: "free some space or write elsewhere",
    errno.EROFS: "the file system is read-only; write elsewhere (--out)",
    errno.EACCES: "check its permissions, or write elsewhere (--out)",
    errno.EPERM: "check its permissions, or write elsewhere (--out)",
}


def os_error_message(error: OSError, path: str | os.PathLike[str] | None = None) -> str:
    """One line naming the path, the reason and what to do, for an OS error while writing."""
    where = error.filename if error.filename is not None else path
    reason = error.strerror or type(error).__name__
    advice = _ADVICE.get(error.errno or 0, "check the path")
    if getattr(errno, "EDQUOT", None) == error.errno:
        advice = "your disk quota is full; free some space or write elsewhere"
    target = f"{str(where)!r}" if where is not None else "a file"
    if error.errno in (errno.EACCES, errno.EPERM, errno.ENOTDIR, errno.EISDIR):
        return f"cannot use {target}: {reason}; {advice}."
    return f"cannot write {target}: {reason}; {advice}. Nothing half-written was left behind."


def unknown_name(
    what: str, name: str, available: Iterable[str], hint: str | None = None, listing: str | None = None
) -> UnknownNameError:
    """Build the standard "unknown X 'y'. Did you mean ...? Available: ..." error.

    ``what`` is the noun ("model", "kind", "parameter of model 'unet'"),
    ``hint`` the closing sentence, for example "See 'segkit list model'.";
    ``listing`` replaces the "Available: ..." sentence (e.g. names with their types).
    """
    names = sorted(set(available))
    parts = [f"unknown {what} {name!r}."]
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.6)
    if close:
        parts.append("Did you mean " + " or ".join(repr(c) for c in close) + "?")
    if listing is not None:
        parts.append(listing)
    elif names:
        shown = ", ".join(names[:12]) + (f", ... ({len(names)} in all)" if len(names) > 12 else "")
        parts.append(f"Available: {shown}.")
    else:
        parts.append("None are available.")
    if hint:
        parts.append(hint)
    return UnknownNameError(" ".join(parts))
