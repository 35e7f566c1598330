"""Atomic file writes: a temporary file in the same folder, then a rename.

A crash or an interrupt never leaves half a file: the destination holds either
its old content or the complete new one. Nothing is written through a symbolic link: the
temporary file is created anew, and the rename replaces a link at the destination with the file
instead of writing into what it points to.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["atomic_write_bytes", "atomic_write_text", "open_new_private"]

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


def open_new_private(tmp: str | os.PathLike[str]) -> int:
    """A new file at ``tmp`` for writing, as a file descriptor; never through a link someone left there.

    Whatever is at ``tmp`` (a stale temporary file, or a symbolic link planted in a shared run
    directory) is removed first, and the file is created exclusively without following links, so
    a write can never land outside the folder it names.
    """
    os.unlink(tmp) if os.path.lexists(tmp) else None
    return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, 0o644)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` (creating its folder) through a temporary file and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with os.fdopen(open_new_private(tmp), "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as error:  # name the destination, not nothing (write) or the temporary file
        if error.filename is None or str(error.filename) == str(tmp):
            raise OSError(error.errno, error.strerror, str(path)) from None
        raise
    finally:
        tmp.unlink(missing_ok=True)
    return path


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))
